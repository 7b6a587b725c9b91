"""``@run_soon`` and the TaskKeeper: fire and forget, failures logged, drained at shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ecosys
from ecosys import Application, Registry, TaskKeeper, run_soon


@pytest.fixture(autouse=True)
def fresh_keeper() -> Iterator[TaskKeeper]:
    ecosys.default_task_keeper.reset()
    yield ecosys.default_task_keeper
    ecosys.default_task_keeper.reset()


def sleeps_then_records(seconds: float, done: list[str]) -> Callable[[str], asyncio.Task[None]]:
    """A run_soon function that sleeps *seconds*, then appends its tag to *done*."""

    @run_soon
    async def background(tag: str) -> None:
        await asyncio.sleep(seconds)
        done.append(tag)

    return background


async def test_run_soon_returns_a_task_at_once(fresh_keeper: TaskKeeper) -> None:
    events: list[str] = []

    @run_soon
    async def work(x: int) -> int:
        events.append("started")
        await asyncio.sleep(0.2)
        events.append("finished")
        return x * 2

    started = time.perf_counter()
    task = work(21)
    took = time.perf_counter() - started
    assert isinstance(task, asyncio.Task), f"calling a run_soon function must return a Task, got {task!r}"
    assert took < 0.05, f"the call took {took:.3f}s: it must not wait for the coroutine"
    assert events == [], "the coroutine must not run before the caller yields"
    assert task in fresh_keeper.tasks, "the keeper must hold a reference to the task"
    assert "work" in task.get_name()
    assert await task == 42
    await asyncio.sleep(0)
    assert events == ["started", "finished"]
    assert task not in fresh_keeper.tasks, "a finished task must be forgotten"


def test_run_soon_needs_an_async_function() -> None:
    def plain() -> None:
        pass

    with pytest.raises(TypeError):
        run_soon(plain)  # type: ignore[arg-type]


async def test_failures_are_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))

    @run_soon
    async def doomed() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("kaput 1234")

    with caplog.at_level(logging.ERROR, logger="ecosys.tasks"):
        task = doomed()
        await asyncio.wait([task])
        await asyncio.sleep(0)  # let the done callbacks run
    failures = [r for r in caplog.records if r.name == "ecosys.tasks" and r.levelno == logging.ERROR]
    assert len(failures) == 1, f"one error record expected: {caplog.records}"
    record = failures[0]
    assert "doomed" in record.getMessage(), f"the record must name the task: {record.getMessage()}"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError), (
        "the record must carry the exception with its traceback"
    )
    assert "kaput 1234" in caplog.text
    del task, record, failures
    caplog.clear()
    gc.collect()
    await asyncio.sleep(0)
    assert not loop_errors, f"the failure must not also surface as 'never retrieved': {loop_errors}"


async def test_cancelled_task_is_not_reported_as_failure(caplog: pytest.LogCaptureFixture) -> None:
    @run_soon
    async def forever() -> None:
        await asyncio.sleep(30)

    with caplog.at_level(logging.ERROR, logger="ecosys.tasks"):
        task = forever()
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "ecosys.tasks"], caplog.text


async def test_wait_all_waits_and_cancels_after_timeout(caplog: pytest.LogCaptureFixture) -> None:
    keeper = TaskKeeper()
    finished: list[int] = []

    async def quick(n: int) -> None:
        await asyncio.sleep(0.05)
        finished.append(n)

    async def stuck() -> None:
        await asyncio.sleep(30)

    quick_tasks = [keeper.spawn(quick(n)) for n in range(3)]
    stuck_tasks = [keeper.spawn(stuck()) for _ in range(2)]
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="ecosys.tasks"):
        cancelled = await keeper.wait_all(0.3)
    took = time.perf_counter() - started
    assert cancelled == 2, f"wait_all must return how many tasks it cancelled, got {cancelled}"
    assert 0.25 <= took < 2.0, f"wait_all(0.3) returned after {took:.2f}s"
    assert sorted(finished) == [0, 1, 2], "tasks that finish in time must complete normally"
    assert all(t.done() and not t.cancelled() for t in quick_tasks)
    assert all(t.cancelled() for t in stuck_tasks), "tasks past the timeout must be cancelled"
    await asyncio.sleep(0)
    assert not keeper.tasks, f"the keeper must be empty afterwards: {keeper.tasks}"
    assert "cancelled 2" in caplog.text, f"the cancellation should be logged: {caplog.text!r}"


async def test_wait_all_includes_tasks_started_by_tasks() -> None:
    keeper = TaskKeeper()
    order: list[str] = []

    async def child() -> None:
        await asyncio.sleep(0.05)
        order.append("child")

    async def parent() -> None:
        await asyncio.sleep(0.02)
        keeper.spawn(child())
        order.append("parent")

    keeper.spawn(parent())
    assert await keeper.wait_all(5.0) == 0
    assert order == ["parent", "child"], f"wait_all must also wait for tasks spawned meanwhile: {order}"


async def test_wait_all_with_nothing_to_wait_for() -> None:
    keeper = TaskKeeper()
    started = time.perf_counter()
    assert await keeper.wait_all(5.0) == 0
    assert await keeper.wait_all() == 0
    assert time.perf_counter() - started < 0.1


def make_app(tmp_path: Path, **config: Any) -> Application:
    app = Application("run_soon_app", instance="1", registry=Registry(),
                      config={"default_dir": str(tmp_path), **config})
    app.configure(argv=[], environ={})
    return app


async def test_application_stop_waits_for_run_soon_tasks(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    done: list[str] = []

    background = sleeps_then_records(0.3, done)

    await app.start()
    try:
        task = background("saved")
    finally:
        await app.stop()
    assert task.done() and not task.cancelled(), "stop() must let a run_soon task finish"
    assert done == ["saved"]
    assert not (tmp_path / "run_soon_app-1.lock").exists(), "stop() releases the lock"


async def test_application_stop_cancels_run_soon_tasks_past_the_grace(tmp_path: Path) -> None:
    app = make_app(tmp_path, shutdown_grace=0.3)

    @run_soon
    async def endless() -> None:
        await asyncio.sleep(30)

    await app.start()
    started = time.perf_counter()
    try:
        task = endless()
    finally:
        await app.stop()
    took = time.perf_counter() - started
    assert task.cancelled(), "a task still running after the grace period must be cancelled"
    assert took < 3.0, f"stop() took {took:.2f}s with a 0.3 s grace"
    log_text = (tmp_path / "run_soon_app-1.log").read_text()
    assert "cancelled" in log_text, f"the cancellation must be logged:\n{log_text}"


async def test_application_with_own_task_keeper_waits_for_run_soon_tasks(tmp_path: Path) -> None:
    keeper = TaskKeeper()
    app = Application("run_soon_app", instance="2", registry=Registry(), task_keeper=keeper,
                      config={"default_dir": str(tmp_path)})
    app.configure(argv=[], environ={})
    done: list[str] = []

    background = sleeps_then_records(0.2, done)

    await app.start()
    try:
        task = background("saved")
    finally:
        await app.stop()
    try:
        assert done == ["saved"], (
            "an Application given its own TaskKeeper must still wait for run_soon tasks at stop()"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stop_waits_for_tasks_started_by_a_queued_handler_it_lets_finish(tmp_path: Path) -> None:
    from ecosys import TcpClient, queued_endpoint

    done: list[str] = []
    registry = Registry()

    @run_soon
    async def follow_up(n: int) -> None:
        await asyncio.sleep(0.2)
        done.append(f"follow-up {n}")

    @queued_endpoint("job", registry=registry)
    async def job(request: dict[str, int]) -> bool:
        await asyncio.sleep(0.3)  # still running when the stop begins
        follow_up(request["n"])
        return True

    app = Application("run_soon_app", instance="3", registry=registry,
                      config={"default_dir": str(tmp_path), "queue_dir": str(tmp_path / "q"),
                              "tcp": "127.0.0.1:0", "shutdown_grace": 5})
    app.configure(argv=[], environ={})
    await app.start()
    try:
        async with TcpClient("127.0.0.1", app.servers[0].port) as client:
            await client.request("job", {"n": 7})
        await asyncio.sleep(0.05)  # the worker has started the handler
    finally:
        await app.stop()
    assert done == ["follow-up 7"], "a task started by a handler during the drain was dropped"


def test_request_stop_from_another_thread_wakes_the_application(tmp_path: Path) -> None:
    import threading

    app = make_app(tmp_path)
    started, stopped = threading.Event(), threading.Event()

    async def serve() -> None:
        await app.start()
        started.set()
        await app._serve_started(banner=False)

    def run() -> None:
        asyncio.run(serve())
        stopped.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    began = time.perf_counter()
    app.request_stop()
    assert stopped.wait(5), "request_stop() from another thread did not stop the application"
    assert time.perf_counter() - began < 2.0
    thread.join(5)


async def test_a_refused_second_start_leaves_the_running_one_alone(tmp_path: Path) -> None:
    from ecosys import AlreadyRunning

    first, second = make_app(tmp_path), make_app(tmp_path)
    done: list[str] = []

    background = sleeps_then_records(0.3, done)

    await first.start()
    try:
        task = background("finished")
        with pytest.raises(AlreadyRunning):
            await second.start()
        await second.stop()  # must not drain or cancel the first one's tasks
        assert not task.done(), "the refused instance's stop() waited for the running one's tasks"
        await task
        assert done == ["finished"]
    finally:
        await first.stop()


async def test_stopping_one_of_two_applications_gives_the_process_back_to_the_other(tmp_path: Path) -> None:
    from ecosys import TcpClient, current_app, endpoint

    done: list[str] = []

    background = sleeps_then_records(0.3, done)

    registry = Registry()

    @endpoint("kick", registry=registry)
    async def kick() -> str:
        background("first")
        return current_app().name

    first_keeper = TaskKeeper()
    first = Application("first_app", instance="0", registry=registry, task_keeper=first_keeper,
                        config={"tcp": "127.0.0.1:0", "default_dir": str(tmp_path / "first")})
    second = Application("second_app", instance="0", registry=Registry(),
                         config={"default_dir": str(tmp_path / "second")})
    first.configure(argv=[], environ={})
    second.configure(argv=[], environ={})
    await first.start()
    try:
        await second.start()
        assert current_app() is second
        await second.stop()
        assert current_app() is first, "the first application is still running"
        async with TcpClient("127.0.0.1", first.servers[0].port) as client:
            assert await client.request("kick") == "first_app"
        assert len(first_keeper.tasks) == 1, "a task started by the first one's handler is its to wait for"
    finally:
        await first.stop()
    assert done == ["first"], "stop() waits for its own run_soon tasks"
    with pytest.raises(ecosys.EcosysError, match="no ecosys Application is running"):
        current_app()
