"""``Record``: the durable side of an activation — what its turns made, on its way to storage.

It keeps the instance's revisions, its ownership epoch and the last good state as stored,
turns each finished turn into a fenced ``Commit`` for the group committer, and hears back from
the committer (it is the committer's ``CommitOwner``). The state and journal entries are
encoded to JSON once, here: the same bytes tell whether the state changed, are checked to
read back (``UnstorableValue`` rolls the turn back), and go to storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._exceptions import ConflictError, ObjectsError, StorageUnavailable
from ..storage import Commit
from .committer import merge_alarms
from .storable import storable_json

if TYPE_CHECKING:
    from .activation import Activation
    from .committer import PendingCommit
    from .turn import Turn


class Record:
    """What one live instance has made durable, and what it is making durable."""

    __slots__ = (
        "_act", "epoch", "journal_rev", "last", "queued", "rev", "since_snapshot",
        "snapshot_rev", "state_text", "topic",
    )

    def __init__(self, act: Activation) -> None:
        self._act = act
        self.topic = act.topic
        self.rev = self.journal_rev = self.snapshot_rev = self.since_snapshot = 0
        self.epoch: int | None = None  # the ownership epoch this instance commits under
        self.state_text = b""  # the last good state as stored (JSON), for rollback
        self.queued: PendingCommit | None = None  # merged turns not yet taken by the writer
        self.last: PendingCommit | None = None  # latest commit not yet durable (output gate)

    @property
    def closed(self) -> bool:
        """Whether the instance was dropped (its later turns must not commit)."""
        return self._act.closed

    def encode_state(self) -> bytes:
        """The state as stored: its JSON, checked to read back (``UnstorableValue``)."""
        return storable_json(
            self._act.instance.state.model_dump(mode="json"), f"{self.topic}: the new state"
        )

    def finish(self, turn: Turn) -> PendingCommit | None:
        """Hand a finished turn to the committer; ``None`` when it changed nothing."""
        act, topic = self._act, self.topic
        entries = [
            (kind, storable_json(payload, f"{topic}: journal entry {kind!r}"))
            for kind, payload in turn.entries
        ] if turn.entries else ()
        if act.event_sourced:
            if not entries and not turn.alarms:
                return None
            self.since_snapshot += sum(1 for kind, _ in entries if kind == "event")
            snapshot = self.rev == 0 or self.since_snapshot >= act.cls.snapshot_every  # type: ignore[attr-defined]
            return self.commit(turn, entries, self.encode_state() if snapshot else None,
                               snapshot)
        state: bytes | None = self.encode_state()
        if state == self.state_text:
            if not entries and not turn.alarms:
                if turn.after:  # broadcasts of a turn that wrote nothing: after earlier commits
                    if self.last is not None:
                        self.last.then(turn.after)
                    else:
                        for action in turn.after:
                            action()
                return None
            if self.rev:
                state = None  # journal only; a first commit must create the row with its state
        if state is not None:
            self.state_text = state
        return self.commit(turn, entries, state, True)

    def commit(
        self, turn: Turn, entries: Sequence[tuple[str, bytes]], state: bytes | None, snapshot: bool
    ) -> PendingCommit:
        """Queue a commit of ``entries`` and ``state`` (``None``: unchanged) after the last."""
        act = self._act
        new_rev = self.rev + 1
        journal_rev = self.journal_rev + len(entries)
        if snapshot:
            self.snapshot_rev = journal_rev
            self.since_snapshot = 0
        commit = Commit(
            type=act.cls.type_name, key=act.key, expected_rev=self.rev, new_rev=new_rev,
            state=state, state_version=act.cls.state_version if state is not None else None,
            snapshot_rev=self.snapshot_rev, journal_rev=journal_rev, entries=entries,
            epoch=self.epoch, alarms=merge_alarms((), turn.alarms) if turn.alarms else (),
            history=act.cls.__objects_history__ is not None,
        )
        self.rev, self.journal_rev = new_rev, journal_rev
        pending = act.host.committer.submit(self, commit)
        spans = act.host.spans
        if spans is not None:
            spans.committing(pending)
        if commit.alarms and act.alarms is not None:
            act.alarms.committing(commit.alarms)
        if turn.after:
            pending.then(turn.after)
        self.last = pending
        return pending

    # -- what the committer says -------------------------------------------------------------

    def committed(self, pending: PendingCommit) -> None:
        """A commit of this object is durable."""
        if self.last is pending:
            self.last = None

    def commit_failed(self, pending: PendingCommit, failure: ObjectsError | None) -> None:
        """A commit was fenced out (``failure is None``) or the transaction failed: drop out."""
        act = self._act
        error: ObjectsError
        if failure is None:
            act.host.counters.conflicts += 1
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
        act.invalidate(error)

    def discard_queued(self, error: ObjectsError) -> None:
        """Fail the turns merged but not yet taken by the writer (they built on lost state)."""
        if self.queued is not None:
            self._act.host.committer.discard(self.queued, error)
            self.queued = None


class MemoryRecord(Record):
    """The record of a memory object (``persistence = "memory"``): nothing is ever written.

    A turn's state is still encoded (it is what a raising turn rolls back to, and stays
    storable JSON like any state), but no commit is made: the answer and the broadcasts leave
    as soon as the turn ends. ``rev`` counts the turns that changed the state (from 0 at each
    start), as state sync needs.
    """

    __slots__ = ()

    def finish(self, turn: Turn) -> PendingCommit | None:
        """Keep the turn's state as the one to roll back to; send its broadcasts now."""
        state = self.encode_state()
        if state != self.state_text:
            self.rev += 1
        self.state_text = state
        for action in turn.after:
            action()
        return None

    def commit(
        self, turn: Turn, entries: Sequence[tuple[str, bytes]], state: bytes | None, snapshot: bool
    ) -> PendingCommit:
        """Never: a memory object has nothing to commit."""
        raise AssertionError(f"{self.topic}: a memory object does not commit")


class ExpiringRecord(Record):
    """The record of a class with ``expire_after``: its commits also keep the expiry alarm.

    An activation's first commit writes the object's expiry when storage holds none (a new
    object, or one stored before its class had ``expire_after``), so that an object whose node
    crashes before it hibernates still expires (``runtime/expiry.py``).
    """

    __slots__ = ()

    def commit(
        self, turn: Turn, entries: Sequence[tuple[str, bytes]], state: bytes | None, snapshot: bool
    ) -> PendingCommit:
        """Queue the commit, with the expiry alarm when storage has none yet."""
        expiry = self._act.expiry
        assert expiry is not None
        if expiry.alarm is None:
            turn.alarm(expiry.write(self.rev + 1, expiry.now()))
        return super().commit(turn, entries, state, snapshot)


def record_for(act: Activation) -> Record:
    """The record an activation of its class needs: durable, expiring or memory."""
    cls = act.cls
    if cls.persistence == "memory":
        return MemoryRecord(act)
    return Record(act) if cls.expire_after is None else ExpiringRecord(act)
