"""``ObjectsSettings``: every option of the runtime, in one place.

Options come from the ``Objects(...)``/``Runtime(...)`` arguments first, then the environment
(``OBJECTS_<NAME>``), then the project's ``.env`` (what ``objects init`` writes), then the
defaults below. The README's reference lists the same fields.

Example::

    settings = ObjectsSettings()                    # environment and ./.env
    settings = ObjectsSettings(database_url="postgresql+asyncpg://db/app", node_ttl=5)
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .storage import DEFAULT_DATABASE_URL, normalize_url


class ObjectsSettings(BaseSettings):
    """The options of fastapi_objects (see the module docstring for where they come from)."""

    model_config = SettingsConfigDict(
        env_prefix="OBJECTS_", env_file=".env", extra="ignore", populate_by_name=True,
        frozen=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    """Storage: ``memory://``, ``sqlite+aiosqlite:///path.db``, ``postgresql+asyncpg://...``."""
    pubsub_url: str | None = None
    """Broadcasts between nodes; default: the database on PostgreSQL, else in-process."""
    db_schema: str | None = Field(
        default=None, validation_alias=AliasChoices("OBJECTS_SCHEMA")
    )
    """PostgreSQL schema holding the tables (``OBJECTS_SCHEMA``)."""
    create_tables: bool | None = None
    """Create missing tables on start; default: on SQLite and memory, not on PostgreSQL."""
    max_batch: int = Field(default=512, ge=1, le=10_000)
    """Most objects' commits in one transaction."""

    node_ttl: float = Field(default=10.0, gt=0.3, le=3600)
    """Seconds after its last heartbeat that a node counts as dead (heartbeat every ttl/3)."""
    node_id: str | None = Field(
        default=None, validation_alias=AliasChoices("OBJECTS_NODE_ID")
    )
    """This node's id; default: random per process, prefixed with ``machine`` when known
    (several workers on one machine are several nodes)."""
    region: str | None = Field(
        default=None, validation_alias=AliasChoices("OBJECTS_REGION", "FLY_REGION")
    )
    """This node's region (default ``FLY_REGION``), shown by ``objects nodes``."""
    machine: str | None = Field(
        default=None, validation_alias=AliasChoices("OBJECTS_MACHINE", "FLY_MACHINE_ID")
    )
    """This node's machine (default ``FLY_MACHINE_ID``), for ``fly-replay: instance=``."""
    internal_host: str = "127.0.0.1"
    """Address of the node's internal listener (forwarded calls); on Fly the 6PN address."""
    internal_port: int = Field(default=0, ge=0, le=65535)
    """Port of the internal listener; 0 picks a free one (each worker gets its own)."""
    cluster_secret: SecretStr | None = None
    """HMAC key of internal requests; required when ``internal_host`` is not loopback."""

    fly_replay: bool = False
    """On Fly.io: answer a request or websocket upgrade for an object another machine owns
    with ``fly-replay: instance=<machine>`` (Fly's proxy replays it there) instead of
    forwarding it; ``region=`` for a ``placement = "region"`` object elsewhere."""

    prefix: str = "/objects"
    """Where ``objects.router`` mounts."""
    allowed_origins: list[str] | None = None
    """Websocket ``Origin`` allow-list (``None``: any; ``"*"`` in the list: any)."""
    max_frame_bytes: int = Field(default=1 << 20, ge=64)
    """Largest client frame."""
    max_calls_in_flight: int = Field(default=32, ge=1)
    """Concurrent calls per websocket connection."""
    max_outbox: int = Field(default=1024, ge=1)
    """Frames queued to one client before it is closed as too slow (4408)."""
    max_outbox_bytes: int = Field(default=8 << 20, ge=1024)
    """Characters of JSON text (bytes, for ASCII) queued to one client before it is closed as
    too slow (4408): a client that stops reading holds at most this much of the server's
    memory."""
    send_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds one frame may take to leave for a client (it is not reading: the network
    pushes back) before the client is closed as too slow (4408)."""

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_url(value)

    @classmethod
    def from_options(cls, **options: Any) -> ObjectsSettings:
        """Settings from keyword options, leaving out the ones given as ``None``.

        ``schema`` is the option's name for the field ``db_schema`` (``schema`` is taken on a
        pydantic model).
        """
        if "schema" in options:
            options["db_schema"] = options.pop("schema")
        return cls(**{name: value for name, value in options.items() if value is not None})


class Options(TypedDict, total=False):
    """The keyword options of ``Runtime(...)`` and ``Objects(...)``: the settings' fields.

    ``None`` means "not given here": the environment, ``.env`` or the default decides.
    """

    pubsub_url: str | None
    schema: str | None
    create_tables: bool | None
    max_batch: int | None
    node_ttl: float | None
    node_id: str | None
    region: str | None
    machine: str | None
    internal_host: str | None
    internal_port: int | None
    cluster_secret: str | None
    fly_replay: bool | None
    prefix: str | None
    allowed_origins: list[str] | None
    max_frame_bytes: int | None
    max_calls_in_flight: int | None
    max_outbox: int | None
    max_outbox_bytes: int | None
    send_timeout: float | None
