"""The key a node signs and checks internal requests with (``signing.py``).

``OBJECTS_CLUSTER_SECRET`` when set: the same on every node, required when the internal
listener listens beyond loopback. Otherwise the cluster's own: a random secret that the first
node makes and keeps in the database every node shares (``objects_cluster``, storage tables
version 4), so that only who can read the database knows it. A node that cannot read it yet
(the database is down, or not migrated to version 4) starts anyway, as it does when it cannot
register: it refuses internal requests and cannot forward until it has the secret, and keeps
trying.
"""

from __future__ import annotations

import asyncio
import logging

from .._exceptions import StorageUnavailable
from .._tasks import cancel_and_wait
from ..storage import Storage
from .listener import is_loopback
from .signing import Signer

log = logging.getLogger("fastapi_objects")

RETRY_EVERY = 2.0  # seconds between attempts to read the secret


class ClusterSecret:
    """Puts the cluster's secret into a node's ``Signer``, now or as soon as it can."""

    def __init__(self, storage: Storage, signer: Signer, configured: str | None, host: str):
        self.storage = storage
        self.signer = signer
        self.configured = configured
        self.host = host
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Set the secret (``ValueError`` when none is set and the listener is not loopback)."""
        if self.configured is not None:
            self.signer.secret = self.configured.encode()
            return
        if not is_loopback(self.host):
            raise ValueError(
                f"the internal listener would listen on {self.host}, which other machines can "
                "reach: set OBJECTS_CLUSTER_SECRET (the same on every node; on Fly.io `fly "
                "secrets set OBJECTS_CLUSTER_SECRET=$(openssl rand -hex 32)`)"
            )
        if not await self._read(warn=True):
            self._task = asyncio.get_running_loop().create_task(
                self._retry(), name="objects-cluster-secret"
            )

    async def stop(self) -> None:
        """Stop trying."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _read(self, warn: bool) -> bool:
        try:
            self.signer.secret = (await self.storage.cluster_secret()).encode()
        except StorageUnavailable as exc:
            if warn:
                log.warning(
                    "node %s cannot read the cluster's secret (%s): it takes and forwards no "
                    "call to other nodes until it can. Create the storage tables version 4 "
                    "(`objects init` writes the revision, `objects migrate` runs it), or set "
                    "OBJECTS_CLUSTER_SECRET. Retrying.", self.signer.node_id, exc.message,
                )
            return False
        return True

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(RETRY_EVERY)
            if await self._read(warn=False):
                break
        log.info("node %s has the cluster's secret now", self.signer.node_id)
