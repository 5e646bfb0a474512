"""What the state sync tests share: synced objects, random calls, a client-side mirror."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonpatch
from pydantic import BaseModel

from fastapi_objects import Connection, DurableObject, client_callable, readonly


class BoardState(BaseModel):
    value: int = 0
    items: list[str] = []
    tags: dict[str, int] = {}
    fields: dict[str, Any] = {f"f{i}": i for i in range(20)}


class Board(DurableObject[BoardState]):
    """Every client sees the whole state (``sync_state``)."""

    public = True
    sync_state = True

    @client_callable
    async def step(self, op: str, key: str = "", n: int = 0, text: str = "") -> int:
        s = self.state
        if op == "set":
            s.value = n
        elif op == "push":
            s.items.append(text)
        elif op == "insert":
            s.items.insert(n % (len(s.items) + 1), text)
        elif op == "pop" and s.items:
            s.items.pop(n % len(s.items))
        elif op == "tag":
            s.tags[key] = n
        elif op == "untag":
            s.tags.pop(key, None)
        elif op == "field":
            s.fields[key] = json.loads(text)
        elif op == "fail":
            s.value += 1000
            raise ValueError("refused on purpose: rolled back")
        return s.value

    @readonly
    @client_callable
    async def view(self) -> dict[str, Any]:
        return self.state.model_dump(mode="json")


class Sleepy(Board):
    """A board that hibernates as soon as it is left alone."""

    type_name = "sleepy"
    idle_timeout = 0.1


class NoteState(BaseModel):
    notes: list[dict[str, str]] = []
    secret: str = "hidden"


class Notes(DurableObject[NoteState]):
    """A view per connection: a client sees its own notes only, and never ``secret``."""

    public = True

    def client_view(self, conn: Connection) -> Any:
        user = conn.query.get("user", "")
        return {"mine": [n["text"] for n in self.state.notes if n["owner"] == user]}

    @client_callable
    async def add(self, owner: str, text: str) -> int:
        self.state.notes.append({"owner": owner, "text": text})
        self.state.secret = text
        return len(self.state.notes)


class Plain(DurableObject[BoardState]):
    """No sync: nothing extra is sent."""

    public = True

    @client_callable
    async def step(self, n: int) -> int:
        self.state.value = n
        return n


def random_step(rnd: random.Random) -> dict[str, Any]:
    """The arguments of one random ``Board.step`` (about one in twenty fails and rolls back)."""
    op = rnd.choice(["set", "push", "push", "insert", "pop", "tag", "untag", "field", "field",
                     "fail"])
    key = rnd.choice(["a", "b", "c/d", "e~f", "f3", "f7", "new"])
    value = rnd.choice([0, 1, True, None, 1.5, "x", [1, 2], {"k": [True]}, rnd.randrange(100)])
    return {"op": op, "key": key, "n": rnd.randrange(-5, 50), "text": json.dumps(value)
            if op == "field" else f"t{rnd.randrange(1000)}"}


class Mirror:
    """A client's copy of the view: whole views and patches applied as they come.

    ``strict``: a patch must start from the rev held (no gap); the tests' clients read every
    frame in order, so a gap would be a server bug.
    """

    def __init__(self) -> None:
        self.view: Any = None
        self.rev: int | None = None
        self.run: str | None = None
        self.states = 0
        self.patches = 0
        self.history: list[tuple[int, Any]] = []  # (rev, view) after each frame

    def feed(self, frame: dict[str, Any]) -> bool:
        """Take a frame; ``True`` when it was a state frame."""
        event, payload = frame.get("event"), frame.get("payload")
        if event == "objects:state":
            self.view, self.rev, self.run = payload["state"], payload["rev"], payload["run"]
            self.states += 1
        elif event == "objects:state_patch":
            assert self.rev is not None, f"a patch before any state: {frame}"
            assert payload["base"] == self.rev, f"gap: holding {self.rev}, got {payload}"
            assert payload["rev"] >= self.rev, frame
            self.view = jsonpatch.apply_patch(self.view, payload["patch"])
            self.rev = payload["rev"]
            self.patches += 1
        else:
            return False
        self.history.append((self.rev, self.view))
        return True

    def resume_query(self) -> str:
        return f"objects_rev={self.rev}&objects_run={self.run}"


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON (``true`` is not ``1``; key order does not matter)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
