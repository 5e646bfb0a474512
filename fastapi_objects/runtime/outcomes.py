"""What happens to an activation when a commit resolves, or when it is deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import ConflictError, ObjectsError, StorageUnavailable
from .clients import Clients

if TYPE_CHECKING:
    from .committer import PendingCommit


class Outcomes(Clients):
    """Commit outcomes and deletion, for ``Activation`` (a mixin: its state is in the slots)."""

    __slots__ = ("last", "queued")
    last: PendingCommit | None  # latest commit not yet durable (the output gate)
    queued: PendingCommit | None  # merged turns not yet taken by the writer

    # -- deletion ----------------------------------------------------------------------------

    async def destroy(self) -> None:
        """Delete this object for good (the caller holds the gate): state, journal, alarms.

        Waits for the commits in flight, then deletes fenced by this instance's ownership
        epoch and leaves memory; the next call starts the object fresh.
        """
        if self.last is not None:
            await self.last.wait()
        assert self.epoch is not None
        if not await self.host.storage.destroy(
            self.cls.type_name, self.key, self.host.node_id, self.epoch
        ):
            self.invalidate(ConflictError(f"{self.topic}: lost ownership before the delete"))
            raise ConflictError(f"{self.topic} was not deleted: another node owns it now")
        self.close()

    async def destroy_held(self, held: bool) -> None:
        """``objects.delete``: take the gate (unless ``held``) and destroy."""
        if not held:
            await self._enter(False)
        try:
            await self.destroy()
        finally:
            self.gate.leave(False)

    # -- commit outcomes (called by the committer) --------------------------------------------

    def committed(self, pending: PendingCommit) -> None:
        """A commit of this object is durable."""
        if self.last is pending:
            self.last = None

    def commit_failed(self, pending: PendingCommit, failure: ObjectsError | None) -> None:
        """A commit was fenced out (``failure is None``) or the transaction failed: drop out."""
        error: ObjectsError
        if failure is None:
            self.host.counters.conflicts += 1
            error = ConflictError(
                f"{self.topic}: commit on rev {pending.commit.expected_rev} was fenced out: "
                "another writer changed this object (a second process or machine serving it?). "
                "This instance was dropped and the call was not applied; see docs/running.md"
            )
        else:
            error = StorageUnavailable(
                f"{self.topic}: {failure.message}; the call was not acknowledged and the object "
                "will reload from storage on the next call"
            )
        pending.finish(error)  # first: its callers' error replies go out before any close
        self.invalidate(error)

    def invalidate(self, error: ObjectsError) -> None:
        """Drop this instance: fail turns that built on unconfirmed state, forget it."""
        if self.queued is not None:
            self.host.committer.discard(self.queued, error)
            self.queued = None
        self.close()
