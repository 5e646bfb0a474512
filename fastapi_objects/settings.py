"""``ObjectsSettings``: every option of the runtime, in one place.

Options come from the ``Objects(...)``/``Runtime(...)`` arguments first, then the environment
(``OBJECTS_<NAME>``), then the project's ``.env`` (what ``objects init`` writes), then the
defaults below. The README's reference lists the same fields.

The database is the one exception: when no argument, ``OBJECTS_DATABASE_URL`` (environment or
``.env``) names it, ``DATABASE_URL`` does (environment, then ``.env``): what ``fly postgres
attach``, Heroku and most hosts set. ``database_url_source`` says which one was used.

Example::

    settings = ObjectsSettings()                    # environment and ./.env
    settings = ObjectsSettings(database_url="postgresql+asyncpg://db/app", node_ttl=5)
"""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .storage import DEFAULT_DATABASE_URL, normalize_url

_SOURCE_KEY = "__database_url_source"
_DEFAULT_SOURCE = "the default; set OBJECTS_DATABASE_URL to change it"
_HOSTED_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")  # what DATABASE_URL may name


class _Named(PydanticBaseSettingsSource):
    """A settings source that says it named the database, when it did."""

    def __init__(self, inner: PydanticBaseSettingsSource, name: str) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner
        self._name = name

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """The inner source's value of one field."""
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        return {**data, _SOURCE_KEY: self._name} if "database_url" in data else data


class _HostDatabaseUrl(PydanticBaseSettingsSource):
    """``DATABASE_URL`` from the environment, else from ``.env``: the lowest of the sources."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: Any) -> None:
        super().__init__(settings_cls)
        self._sources = sources  # the environment's, then the .env file's (their env_vars)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Nothing field by field: see ``__call__``."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        for source, where in zip(self._sources, ("the environment", ".env"), strict=True):
            value = source.env_vars.get("database_url")
            if value:
                return {"database_url": value, _SOURCE_KEY: f"DATABASE_URL in {where}"}
        return {}


def _check_host_url(url: str, source: str) -> None:
    """Refuse a ``DATABASE_URL`` we cannot use, saying where it came from and what to set.

    It is another tool's variable: it may name a database of the app's own, such as MySQL.
    """
    try:
        scheme = normalize_url(url).partition("://")[0]
        if scheme not in _HOSTED_SCHEMES:
            raise ValueError(f"unsupported database URL scheme {scheme!r}")
    except ValueError as exc:
        raise ValueError(
            f"{source}, read because OBJECTS_DATABASE_URL is not set: {exc}; set "
            "OBJECTS_DATABASE_URL to a postgresql:// or sqlite:/// URL"
        ) from None


class ObjectsSettings(BaseSettings):
    """The options of fastapi_objects (see the module docstring for where they come from)."""

    model_config = SettingsConfigDict(
        env_prefix="OBJECTS_", env_file=".env", extra="ignore", populate_by_name=True,
        frozen=True, hide_input_in_errors=True,  # inputs hold passwords and secrets
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
    max_active: int = Field(default=100_000, ge=1)
    """Most objects live on this node at once; past it the least recently used idle ones
    hibernate to make room (``Overloaded`` only when none can)."""

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

    _database_url_source: str = PrivateAttr(default=_DEFAULT_SOURCE)

    @property
    def database_url_source(self) -> str:
        """Where ``database_url`` came from, e.g. ``"OBJECTS_DATABASE_URL in .env"``."""
        return self._database_url_source

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, each naming itself as the database's; ``DATABASE_URL`` last."""
        return (
            _Named(init_settings, "the database_url argument"),
            _Named(env_settings, "OBJECTS_DATABASE_URL in the environment"),
            _Named(dotenv_settings, "OBJECTS_DATABASE_URL in .env"),
            file_secret_settings,
            _HostDatabaseUrl(settings_cls, env_settings, dotenv_settings),
        )

    @model_validator(mode="wrap")
    @classmethod
    def _remember_source(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        source = data.pop(_SOURCE_KEY, _DEFAULT_SOURCE)
        if source.startswith("DATABASE_URL"):
            _check_host_url(str(data["database_url"]), source)
        settings = handler(data)
        settings._database_url_source = source
        return settings

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
    max_active: int | None
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
