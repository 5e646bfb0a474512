"""Durable work queues (issue 10): claims, leases, heartbeats, retries, dead letters, workers.

On memory, SQLite and PostgreSQL. Completion records are the queue's journal: each job id
must appear in exactly one ``completed`` event.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from fastapi_objects import Runtime
from fastapi_objects.runtime.queue import Claimed
from tests._apps import make_app
from tests._support import wait_until
from tests.conftest import Backend


def _rt(backend: Backend, **options: object) -> Runtime:
    return Runtime(database_url=backend.url, schema=backend.schema, create_tables=True,
                   **options)  # type: ignore[arg-type]


async def _completions(rt: Runtime, name: str) -> Counter[str]:
    events = await rt.journal(rt.object_type("objects_queue"), name)
    return Counter(e.payload["id"] for e in events
                   if e.kind == "event" and e.payload["kind"] == "completed")


async def test_claim_complete_fail_retry_and_dead_letters(backend: Backend) -> None:
    async with _rt(backend) as rt:
        q = rt.queue("emails")
        first = await q.enqueue({"to": "ann"}, key="ann-welcome")
        assert await q.enqueue({"to": "ann"}, key="ann-welcome") == first  # de-duplicated
        doomed = await q.enqueue({"to": "bob"}, max_attempts=2)
        later = await q.enqueue({"to": "cy"}, delay=3600)
        job = await q.claim("w1", 30.0)
        assert isinstance(job, Claimed) and job.id == first and job.attempt == 1
        assert not await q.complete(first, "not the token")
        assert await q.complete(first, job.token)
        assert not await q.complete(first, job.token)  # once
        for attempt in (1, 2):
            got = await q.claim("w1", 30.0)
            if got is None:  # retried after its backoff
                await asyncio.sleep(1.1)
                got = await q.claim("w1", 30.0)
            assert got is not None and got.id == doomed and got.attempt == attempt
            assert await q.fail(doomed, got.token, "smtp down") == (
                "ready" if attempt == 1 else "dead")
        assert await q.claim("w1", 30.0) is None  # the third is not visible for an hour
        assert await q.stats() == {"ready": 1, "claimed": 0, "dead": 1, "completed": 1}
        (dead,) = await q.jobs(dead=True)
        assert dead["id"] == doomed and dead["last_error"] == "smtp down"
        assert "token_hash" not in dead
        assert await q.retry(doomed)
        again = await q.claim("w1", 30.0)
        assert again is not None and again.id == doomed and again.attempt == 1
        assert later != doomed
        if backend.name != "memory":
            assert await _completions(rt, "emails") == {first: 1}


async def test_an_expired_lease_lets_another_worker_finish(backend: Backend) -> None:
    async with _rt(backend) as rt:
        q = rt.queue("jobs")
        job_id = await q.enqueue("x")
        slow = await q.claim("slow", 0.1)
        assert slow is not None
        await asyncio.sleep(0.2)
        assert not await q.heartbeat(job_id, "forged", 30.0)
        fast = await q.claim("fast", 30.0)
        assert fast is not None and fast.id == job_id and fast.attempt == 2
        assert not await q.complete(job_id, slow.token)  # re-claimed: the old token is void
        assert not await q.heartbeat(job_id, slow.token, 30.0)
        assert await q.complete(job_id, fast.token)


async def test_workers_complete_every_job_once(backend: Backend) -> None:
    seen: Counter[str] = Counter()
    rt = _rt(backend)

    @rt.worker("work", concurrency=4, lease=5.0)
    async def handle(job: Claimed) -> None:
        seen[job.id] += 1
        if job.payload % 7 == 0 and job.attempt == 1:
            raise RuntimeError("first attempt of every 7th job fails")
        await asyncio.sleep(0.001)

    async with rt:
        q = rt.queue("work")
        ids = [await q.enqueue(i) for i in range(60)]
        await wait_until(lambda: len(seen) == 60, within=30, what="every job handled")
        async with asyncio.timeout(30):
            while (await q.stats())["completed"] < 60:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await q.stats() == {"ready": 0, "claimed": 0, "dead": 0, "completed": 60}
        if backend.name != "memory":
            assert await _completions(rt, "work") == {job_id: 1 for job_id in ids}
    assert all(seen[i] == (2 if n % 7 == 0 else 1) for n, i in enumerate(ids))


def test_queues_are_not_reachable_from_browsers(db_url: str) -> None:
    app, _ = make_app(db_url)
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/objects/objects_queue/emails/ws") as ws,
    ):
        ws.receive_json()
    assert closed.value.code == 4403
    assert "not public" in closed.value.reason


def test_the_cli_lists_dead_jobs_and_revives_them(db_url: str) -> None:
    from typer.testing import CliRunner

    from fastapi_objects.cli import app as cli

    async def make_a_dead_job() -> str:
        async with Runtime(database_url=db_url) as rt:
            q = rt.queue("mail")
            job_id = await q.enqueue({"to": "ann"}, max_attempts=1)
            job = await q.claim("w", 30.0)
            assert job is not None
            assert await q.fail(job.id, job.token, "mailbox full") == "dead"
            await q.enqueue({"to": "bob"})
            return job_id

    job_id = asyncio.run(make_a_dead_job())
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--database-url", db_url])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    dead = run("queue", "ls", "mail", "--dead")
    assert job_id in dead and "mailbox full" in dead and "1 dead" in dead
    assert job_id not in run("queue", "ls", "mail")
    assert f"job {job_id} of mail will run again" in run("queue", "retry", "mail", job_id)
    assert job_id in run("queue", "ls", "mail")
    missing = runner.invoke(cli, ["queue", "retry", "mail", "nope", "--database-url", db_url])
    assert missing.exit_code == 1 and "no dead job 'nope'" in missing.output


async def test_kill_9_of_a_worker_node_completes_every_job_once(sql_backend: Backend) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    handled: Counter[str] = Counter()
    rt = _rt(sql_backend, node_ttl=1.0)

    @rt.worker("bulk", concurrency=4, lease=1.0)
    async def handle(job: Claimed) -> None:
        handled[job.id] += 1
        await asyncio.sleep(0.02)  # slow enough that the other node gets its share

    async with rt:
        q = rt.queue("bulk")
        ids = [await q.enqueue(i) for i in range(1000)]  # this node owns the queue
        worker = Path(__file__).with_name("_queue_worker.py")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(worker), sql_backend.url, sql_backend.schema or "-",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line == b"ready\n", await proc.stderr.read()
            taken = 0
            while taken < 100:  # the other node is working: kill it midway
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line, await proc.stderr.read()
                taken += 1
        finally:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        async with asyncio.timeout(90):
            while (stats := await q.stats())["completed"] < 1000:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert stats == {"ready": 0, "claimed": 0, "dead": 0, "completed": 1000}
        assert await _completions(rt, "bulk") == {job_id: 1 for job_id in ids}
        assert len(handled) < 1000  # the killed node did part of the work
