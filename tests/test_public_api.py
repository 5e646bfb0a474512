"""The public surface changes only on purpose."""

from __future__ import annotations

import subprocess
import sys
import typing

import fastapi_objects


def test_all_is_pinned_and_sorted() -> None:
    assert fastapi_objects.__all__ == [
        "Alarm",
        "CallTimeout",
        "ConflictError",
        "Connection",
        "ConnectionRejected",
        "CorruptState",
        "DurableObject",
        "EventSourced",
        "ForwardFailed",
        "Handle",
        "InvalidArguments",
        "InvalidCall",
        "InvalidEdit",
        "InvalidKey",
        "InvalidQuery",
        "Job",
        "JournalEntry",
        "Message",
        "MissingDependency",
        "ObjectNotFound",
        "ObjectPage",
        "Objects",
        "ObjectsError",
        "ObjectsSettings",
        "OutcomeUnknown",
        "Overloaded",
        "PubSubClosed",
        "RemoteError",
        "Runtime",
        "RuntimeStats",
        "StaleRevision",
        "StorageUnavailable",
        "SubscriptionOverflow",
        "TypeStats",
        "UnknownMethod",
        "UnknownObjectType",
        "UnstorableValue",
        "client_callable",
        "get_object",
        "readonly",
    ]
    assert fastapi_objects.__all__ == sorted(fastapi_objects.__all__)
    for name in fastapi_objects.__all__:
        assert getattr(fastapi_objects, name) is not None


def test_the_types_the_api_hands_out_are_public() -> None:
    # What on_alarm, a worker function, journal(), query() and type_stats() receive or return.
    from fastapi_objects import runtime, storage
    from fastapi_objects.runtime import queues

    assert fastapi_objects.Alarm is storage.Alarm
    assert fastapi_objects.Job is queues.Claimed
    assert queues.Handler.__args__[0] is fastapi_objects.Job  # type: ignore[attr-defined]
    assert fastapi_objects.JournalEntry is storage.JournalEntry
    assert fastapi_objects.ObjectPage is storage.ObjectPage
    assert fastapi_objects.TypeStats is storage.TypeStats
    hints = typing.get_type_hints(runtime.DurableObject.on_alarm)
    assert hints["alarm"] is fastapi_objects.Alarm
    assert typing.get_type_hints(runtime.Runtime.journal)["return"] == list[
        fastapi_objects.JournalEntry
    ]
    assert typing.get_type_hints(runtime.Runtime.query)["return"] is fastapi_objects.ObjectPage
    assert typing.get_type_hints(runtime.Runtime.type_stats)["return"] == list[
        fastapi_objects.TypeStats
    ]


def test_every_error_is_an_objects_error_with_a_distinct_type() -> None:
    errors = [
        getattr(fastapi_objects, name)
        for name in fastapi_objects.__all__
        if isinstance(getattr(fastapi_objects, name), type)
        and issubclass(getattr(fastapi_objects, name), Exception)
    ]
    assert len(errors) >= 13
    assert all(issubclass(e, fastapi_objects.ObjectsError) for e in errors)
    types = [e.type for e in errors]
    assert len(types) == len(set(types)), types


def test_every_public_name_has_a_docstring() -> None:
    for name in fastapi_objects.__all__:
        obj = getattr(fastapi_objects, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name


def test_the_package_imports_its_web_parts_on_first_use() -> None:
    # `from fastapi_objects import Objects` works as ever, but importing the package (for its
    # errors, or the CLI) loads neither FastAPI nor SQLAlchemy (PEP 562 lazy exports).
    code = (
        "import sys, fastapi_objects\n"
        "from fastapi_objects import ObjectsError\n"
        "assert 'fastapi' not in sys.modules and 'sqlalchemy' not in sys.modules\n"
        "from fastapi_objects import Objects, get_object\n"
        "assert 'fastapi' in sys.modules and Objects.__name__ == 'Objects'\n"
        "assert 'Objects' in dir(fastapi_objects)\n"
        "try:\n"
        "    fastapi_objects.nope\n"
        "except AttributeError as exc:\n"
        "    assert 'nope' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
