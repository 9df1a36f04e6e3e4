"""The supervisor without sockets: start order, unwinding on a failed start, idempotent reverse stop,
and the watch over background tasks (parts are small fakes recording what happens to them)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from passerelle.connector.lifecycle import Part, StartupError, Supervisor


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def part(self, name: str, *, fail: BaseException | None = None, task: asyncio.Task[None] | None = None) -> Part:
        async def start() -> None:
            self.calls.append(f"start {name}")
            if fail is not None:
                raise fail

        async def stop() -> None:
            self.calls.append(f"stop {name}")

        return Part(name, start, stop, lambda: [task] if task is not None else [])


async def test_start_in_order_stop_in_reverse_once() -> None:
    rec = Recorder()
    sup = Supervisor()
    assert sup.readiness() == "not started"
    await sup.start([rec.part("a"), rec.part("b"), rec.part("c")])
    assert sup.running and sup.readiness() == ""
    await sup.start([rec.part("again")])  # idempotent
    await asyncio.gather(sup.stop(), sup.stop())
    await sup.stop()
    assert rec.calls == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert sup.readiness() == "stopped" and not sup.running


async def test_a_failed_start_stops_what_started_in_reverse_and_says_which_part() -> None:
    rec = Recorder()
    sup = Supervisor()
    busy = OSError(98, "Address already in use")
    with pytest.raises(StartupError) as exc:
        await sup.start(
            [rec.part("journal"), rec.part("mllp"), rec.part("dicom"), rec.part("http", fail=busy), rec.part("x")]
        )
    assert str(exc.value) == "http: Address already in use"
    assert rec.calls == [
        "start journal", "start mllp", "start dicom", "start http",
        "stop http", "stop dicom", "stop mllp", "stop journal",
    ]  # fmt: skip
    assert not sup.running


async def test_a_stop_that_fails_does_not_keep_the_others_up(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("socket already closed")

    async def fine() -> None:
        calls.append("fine")

    sup = Supervisor()
    await sup.start([Part("first", stop=fine), Part("second", stop=broken)])
    await sup.stop()
    assert calls == ["broken", "fine"]
    assert "second did not stop cleanly: RuntimeError: socket already closed" in caplog.text


async def test_a_background_task_that_dies_turns_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[str] = []
    release = asyncio.Event()

    async def doomed() -> None:
        await release.wait()
        raise ValueError("committer lost its connection")

    rec = Recorder()
    task = asyncio.create_task(doomed())
    sup = Supervisor(on_failure=failures.append)
    await sup.start([rec.part("journal", task=task), rec.part("http")])
    assert sup.running
    release.set()
    with pytest.raises(ValueError):
        await task
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    reason = "journal stopped unexpectedly (failed: ValueError)"
    assert failures == [reason] and sup.readiness() == reason and not sup.running
    assert any(r.levelno == logging.ERROR and r.getMessage() == reason for r in caplog.records)
    await sup.stop()
    assert sup.readiness() == reason  # the cause stays visible


async def test_tasks_ending_while_stopping_are_expected() -> None:
    failures: list[str] = []
    task = asyncio.create_task(asyncio.Event().wait())

    async def stop() -> None:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    sup = Supervisor(on_failure=failures.append)
    await sup.start([Part("worker", stop=stop, tasks=lambda: [task])])
    await sup.stop()
    await asyncio.sleep(0)
    assert failures == [] and sup.readiness() == "stopped"


async def test_a_task_dead_during_start_fails_the_start() -> None:
    async def quits() -> None:
        return None

    task = asyncio.create_task(quits())
    await task
    rec = Recorder()
    sup = Supervisor()

    async def slow_start() -> None:
        await asyncio.sleep(0)  # lets the done callback of the dead task run

    with pytest.raises(StartupError, match="gauges stopped unexpectedly"):
        await sup.start([Part("gauges", tasks=lambda: [task]), Part("http", slow_start), rec.part("later")])
    assert rec.calls == ["start later", "stop later"]
