"""The SQLite store on its own: group commit, batching bounds, generations after a torn move."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import pytest

from ecosys.queues import store
from ecosys.queues.pair import QueuePair
from ecosys.queues.store import MAX_CHANGES_PER_STATEMENT, DurableQueue, Entry, _changes_sql


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, uid FROM entries ORDER BY seq"))


async def test_concurrent_durable_inserts_share_commits(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    await asyncio.gather(*(queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}")]) for i in range(500)))
    # Every insert returned only after its commit, so a fresh connection sees them all.
    assert len(rows(tmp_path / "q.sqlite")) == 500
    assert queue.commits < 100, f"{queue.commits} commits for 500 concurrent inserts: no group commit"
    await queue.close()


async def test_wal_and_synchronous_full_by_default(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    modes = await queue.read(lambda db: (db.execute("PRAGMA journal_mode").fetchone()[0],
                                         db.execute("PRAGMA synchronous").fetchone()[0]))
    assert modes == ("wal", 2)  # 2 is FULL
    await queue.close()


async def test_batched_inserts_bounded_by_max_uncommitted(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=10, commit_interval=60)
    await queue.open()
    for i in range(9):
        await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}")])
    assert rows(tmp_path / "q.sqlite") == [], "below max_uncommitted, inserts wait for the interval"
    # The tenth starts a commit without waiting for it (checking the file then
    # would race that commit); the eleventh, past the bound, waits.
    await queue.insert([Entry(seq=9, uid="u9", request=b"{}")])
    await queue.insert([Entry(seq=10, uid="u10", request=b"{}")])
    assert len(rows(tmp_path / "q.sqlite")) == 11, "the insert past the bound waits for the commit"
    await queue.close()


async def test_commit_interval_bounds_how_long_changes_wait(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=1000, commit_interval=0.05)
    await queue.open()
    await queue.insert([Entry(seq=1, uid="u1", request=b"{}")])
    await asyncio.sleep(0.3)
    assert rows(tmp_path / "q.sqlite") == [(1, "u1")]
    await queue.close()


async def test_torn_move_keeps_the_newer_copy(tmp_path: Path) -> None:
    pending, errors = tmp_path / "p.sqlite", tmp_path / "e.sqlite"
    pair = QueuePair(pending, errors)
    await pair.open()
    first = await pair.push("u1", b'{"n":1}')
    second = await pair.push("u2", b'{"n":2}')
    await pair.close()
    # Simulate a crash in the middle of moving u1 to the error queue: the error
    # copy (a newer generation) is written, the pending copy not yet deleted.
    errs = DurableQueue(errors)
    await errs.open()
    await errs.insert([Entry(seq=first.seq, uid="u1", request=b'{"n":1}', generation=1, reason="boom")])
    await errs.close()
    pair = QueuePair(pending, errors)
    live = await pair.open()
    assert [e.uid for e in live] == ["u2"] and pair.error_count == 1
    # And a torn reprocess (pending copy newer than the error copy) keeps the pending one.
    entry = await pair.find_error("u1")
    entry.generation += 1
    await pair.pending.insert([entry], durable=True)
    await pair.close()
    pair = QueuePair(pending, errors)
    live = await pair.open()
    assert [e.uid for e in live] == ["u1", "u2"] and pair.error_count == 0
    assert (await pair.push("u3", b"{}")).seq == second.seq + 1
    await pair.close()


async def test_commit_listeners_hear_the_outcome_in_order(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    heard: list[tuple[str, BaseException | None]] = []

    def listener(name: str, seen_on_disk: bool = True):  # type: ignore[no-untyped-def]
        def hear(error: BaseException | None) -> None:
            # Called once the row is committed: a fresh connection already sees it.
            if error is None and seen_on_disk:
                assert any(uid == name for _, uid in rows(tmp_path / "q.sqlite"))
            heard.append((name, error))
        return hear

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("listener bug")

    futures = [
        queue.insert_nowait([Entry(seq=1, uid="a", request=b"{}")], on_commit=listener("a")),
        queue.insert_nowait([Entry(seq=2, uid="b", request=b"{}")], on_commit=broken),
        queue.insert_nowait([Entry(seq=3, uid="c", request=b"{}")], on_commit=listener("c")),
    ]
    assert all(f is not None for f in futures)
    await asyncio.gather(*futures)  # type: ignore[arg-type]
    assert heard == [("a", None), ("c", None)], "a broken listener must not silence the others"

    # A commit that fails reaches its listeners with the exception.
    def fail(batch: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    queue._apply_sync = fail  # type: ignore[method-assign]
    failed = queue.insert_nowait([Entry(seq=4, uid="d", request=b"{}")],
                                 on_commit=listener("d", seen_on_disk=False))
    assert failed is not None
    try:
        await failed
    except sqlite3.OperationalError:
        pass
    assert heard[-1][0] == "d" and isinstance(heard[-1][1], sqlite3.OperationalError)
    del queue._apply_sync  # type: ignore[attr-defined]
    await queue.close()


async def test_no_listener_call_when_no_commit_is_awaited(tmp_path: Path) -> None:
    # With max_uncommitted > 0 an insert needs no commit: no future, no listener.
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=10)
    await queue.open()
    heard: list[object] = []
    assert queue.insert_nowait([Entry(seq=1, uid="a", request=b"{}")], on_commit=heard.append) is None
    await queue.flush()
    assert heard == []
    await queue.close()


async def test_rows_read_back_exactly_as_written(tmp_path: Path) -> None:
    # A batch travels to SQLite as bound values: bytes, text, floats and NULLs must survive it.
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    written = [
        Entry(seq=1, uid="u1", request='{"text":"caf\u00e9 \\"quoted\\" \u2603\\n"}'.encode(),
              attempts=2, group_key="g\u00e9", created=1764412800.123456, generation=3,
              reason="ValueError: b\u00e4d", failed_at=1764412801.5),
        Entry(seq=2, uid="u2", request=b"null", created=0.1),
        Entry(seq=3, uid="u3", request=b"[1,2.5,1e300]", group_key=None, created=1e-300),
    ]
    await queue.insert(written, durable=True)
    entry = written[1]
    entry.attempts = 4
    queue.set_attempts_nowait(entry)
    await queue.flush()
    await queue.close()
    reopened = DurableQueue(tmp_path / "q.sqlite")
    read = await reopened.open()
    await reopened.close()
    assert [(e.seq, e.uid, e.request, e.attempts, e.group_key, e.created, e.generation, e.reason,
             e.failed_at) for e in read] == [
        (e.seq, e.uid, e.request, e.attempts, e.group_key, e.created, e.generation, e.reason,
         e.failed_at) for e in written]
    assert all(type(e.request) is bytes for e in read)


async def test_one_batch_of_many_inserts_and_deletes(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}") for i in range(1, 601)], durable=True)
    assert len(rows(tmp_path / "q.sqlite")) == 600
    # 291 deletes and 291 new rows in one commit (one statement, padded to 592 rows).
    queue.delete_nowait(list(range(1, 292)))
    await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}") for i in range(601, 892)], durable=True)
    assert [seq for seq, _ in rows(tmp_path / "q.sqlite")] == list(range(292, 892))
    await queue.close()


async def test_deletes_with_gaps_remove_only_those_entries(tmp_path: Path) -> None:
    # Deletes go to SQLite as runs of consecutive seqs: a gap must split the run.
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}") for i in range(1, 21)], durable=True)
    queue.delete_nowait([1, 2, 3, 5, 7, 8, 20, 12])
    await queue.flush()
    assert [seq for seq, _ in rows(tmp_path / "q.sqlite")] == [4, 6, 9, 10, 11, *range(13, 20)]
    await queue.close()


async def test_a_batch_over_one_statement_commits_whole(tmp_path: Path) -> None:
    # More changes than one statement may carry: several statements, one transaction.
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    count = 2 * MAX_CHANGES_PER_STATEMENT + 17
    await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}") for i in range(count)], durable=True)
    assert [seq for seq, _ in rows(tmp_path / "q.sqlite")] == list(range(count))
    queue.delete_nowait(list(range(0, count, 2)))  # every other one: as many runs as entries
    await queue.flush()
    assert [seq for seq, _ in rows(tmp_path / "q.sqlite")] == list(range(1, count, 2))
    await queue.close()


async def test_an_insert_after_a_clear_survives_it(tmp_path: Path) -> None:
    # Most likely in the clear's own batch, where the clear must apply first.
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    await queue.insert([Entry(seq=i, uid=f"u{i}", request=b"{}") for i in range(5)], durable=True)
    clearing = asyncio.ensure_future(queue.clear())
    await asyncio.sleep(0)  # the clear is in the batch being filled
    queue.insert_nowait([Entry(seq=9, uid="u9", request=b"{}")], durable=False)
    await clearing
    await queue.flush()
    assert rows(tmp_path / "q.sqlite") == [(9, "u9")]
    await queue.close()


async def test_every_batch_size_up_to_a_statement_applies_exactly(tmp_path: Path) -> None:
    # Statements are padded to a few sizes with rows that change nothing.
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    seq = 0
    for size in (1, 15, 16, 17, 31, 255, 256, 257, 1000):
        await queue.insert([Entry(seq=seq + i, uid=f"u{seq + i}", request=b"{}") for i in range(size)],
                           durable=True)
        seq += size
        assert len(rows(tmp_path / "q.sqlite")) == seq
    await queue.close()


async def test_deletes_made_during_a_commit_wait_for_the_interval(tmp_path: Path) -> None:
    # Deletes nobody waits for ride with the next insert's commit or the interval
    # timer; they must not get a commit of their own the moment the one in flight ends.
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path, commit_interval=60)
    await queue.open()
    first = Entry(seq=1, uid="u1", request=b"{}")
    await queue.insert([first])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the next commit waits in SQLite
    try:
        second = queue.insert_nowait([Entry(seq=2, uid="u2", request=b"{}")])
        assert second is not None
        await asyncio.sleep(0.2)  # the queue's thread is now inside that commit
        queue.delete_nowait([first.seq])
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    await second
    await asyncio.sleep(0.3)
    assert queue.commits == 2
    assert rows(path) == [(1, "u1"), (2, "u2")], "the delete was committed without a waiter"
    await queue.flush()
    assert rows(path) == [(2, "u2")]
    assert queue.commits == 3
    await queue.close()


async def test_an_insert_never_overtakes_one_waiting_for_its_commit(tmp_path: Path) -> None:
    # max_uncommitted lets an insert be acknowledged before its commit, but not
    # while an earlier insert still waits for one: its entry would be handed to
    # the worker (or to its sequenced lane) first, out of order.
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=100, commit_interval=60)
    await queue.open()
    heard: list[int] = []
    first = queue.insert_nowait([Entry(seq=1, uid="u1", request=b"{}")], durable=True,
                                on_commit=lambda error: heard.append(1))
    second = queue.insert_nowait([Entry(seq=2, uid="u2", request=b"{}")],
                                 on_commit=lambda error: heard.append(2))
    assert first is not None
    assert second is not None, "entry 2 was acknowledged while entry 1 still waited for its commit"
    await second
    assert heard == [1, 2]
    # Nothing waits any more: max_uncommitted applies again.
    assert queue.insert_nowait([Entry(seq=3, uid="u3", request=b"{}")]) is None
    await queue.close()
    assert [seq for seq, _ in rows(tmp_path / "q.sqlite")] == [1, 2, 3]


async def _rows_become(path: Path, expected: list[tuple[int, str]], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while rows(path) != expected:
        assert loop.time() < deadline, f"rows are {rows(path)}, not {expected}"
        await asyncio.sleep(0.05)


def _fail_commits(queue: DurableQueue, monkeypatch: pytest.MonkeyPatch,
                  error: OSError | None = None) -> list[int]:
    """Make the next commits of *queue* fail, one per item put in the returned list."""
    real_apply = queue._apply_sync
    failing: list[int] = []

    def disk_error_when_asked(batch):  # type: ignore[no-untyped-def]
        # Stands in for a failing disk (as in test_queued_endpoint): the transaction cannot be written.
        if failing:
            failing.pop()
            raise error or OSError(28, "No space left on device")
        real_apply(batch)

    monkeypatch.setattr(queue, "_apply_sync", disk_error_when_asked)
    return failing


async def test_a_failed_commit_keeps_the_changes_nobody_was_told_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path, max_uncommitted=10, commit_interval=0.05)
    await queue.open()
    await queue.insert([Entry(seq=1, uid="u1", request=b"{}")], durable=True)
    failing = _fail_commits(queue, monkeypatch, OSError(5, "Input/output error"))
    failing.append(1)
    # Acknowledged before its commit (max_uncommitted), and a delete of a handled entry:
    # nobody waits for either, so the failed commit must not drop them.
    assert queue.insert_nowait([Entry(seq=2, uid="u2", request=b"{}")]) is None
    queue.delete_nowait([1])
    await _rows_become(path, [(2, "u2")])
    assert not failing, "the first commit should have failed"
    # An insert whose caller hears of the failure is not written later behind its back.
    failing.append(1)
    with pytest.raises(OSError, match="Input/output error"):
        await queue.insert([Entry(seq=3, uid="u3", request=b"{}")], durable=True)
    await queue.insert([Entry(seq=4, uid="u4", request=b"{}")], durable=True)
    await queue.close()
    assert rows(path) == [(2, "u2"), (4, "u4")]


async def test_closing_releases_the_file_even_if_the_last_commit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=10, commit_interval=60)
    await queue.open()

    def disk_error(batch):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(queue, "_apply_sync", disk_error)
    assert queue.insert_nowait([Entry(seq=1, uid="u1", request=b"{}")]) is None
    with pytest.raises(OSError):
        await queue.close()
    with pytest.raises(RuntimeError, match="closed"):
        queue.insert_nowait([Entry(seq=2, uid="u2", request=b"{}")])
    await queue.close()  # a second close is a no-op


async def test_closing_behind_a_slow_commit_says_why_it_waits_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=10, commit_interval=60)
    await queue.open()
    monkeypatch.setattr(store, "SLOW_CLOSE_WARNING", 0.2)
    apply = queue._apply_sync

    def slow_disk(batch):  # type: ignore[no-untyped-def]
        time.sleep(0.7)
        apply(batch)

    monkeypatch.setattr(queue, "_apply_sync", slow_disk)
    assert queue.insert_nowait([Entry(seq=1, uid="u1", request=b"{}")]) is None  # acknowledged
    with caplog.at_level("WARNING", logger="ecosys.queues"):
        await queue.close()
    warnings = [r.getMessage() for r in caplog.records if "for the disk to finish a commit" in r.message]
    assert 2 <= len(warnings) <= 4, warnings
    assert "q.sqlite: closing has waited 0.2s" in warnings[0]
    assert rows(tmp_path / "q.sqlite") == [(1, "u1")]


async def test_a_close_behind_a_fast_commit_warns_of_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_uncommitted=10, commit_interval=60)
    await queue.open()
    queue.insert_nowait([Entry(seq=1, uid="u1", request=b"{}")])
    with caplog.at_level("WARNING", logger="ecosys.queues"):
        await queue.close()
    assert caplog.records == []
    assert rows(tmp_path / "q.sqlite") == [(1, "u1")]


async def test_a_failed_pop_is_not_retried_behind_the_operators_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = QueuePair(tmp_path / "p.sqlite", tmp_path / "e.sqlite")
    await pair.open()
    entry = await pair.push("0b1c5a2e-8a7e-4c55-9d0e-0a4b7b6c9f11", b'{"x":1}')
    await pair.fail(entry, "boom")
    real_apply = pair.errors._apply_sync
    failing = [1]

    def disk_error_once(batch):  # type: ignore[no-untyped-def]
        if failing:
            failing.pop()
            raise sqlite3.OperationalError("disk I/O error")
        real_apply(batch)

    monkeypatch.setattr(pair.errors, "_apply_sync", disk_error_once)
    with pytest.raises(sqlite3.OperationalError):
        await pair.pop_error(entry.uid)
    await asyncio.sleep(1.3)  # past FAILED_COMMIT_RETRY
    assert await pair.error_seqs() == {entry.seq}, "the operator was told the pop failed"
    assert pair.error_count == 1
    popped = await pair.pop_error(entry.uid)  # the operator tries again
    assert popped.seq == entry.seq and await pair.error_seqs() == set()
    await pair.close()


async def test_closing_retries_a_failed_last_commit_once_and_reports_what_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path, max_uncommitted=10, commit_interval=60)
    await queue.open()
    failures = _fail_commits(queue, monkeypatch)
    failures.append(1)  # the next commit fails, the ones after it do not
    assert queue.insert_nowait([Entry(seq=1, uid="u1", request=b"{}")]) is None
    await queue.close()  # the first commit fails, the second try writes the acknowledged entry
    assert rows(path) == [(1, "u1")]

    again = DurableQueue(path, max_uncommitted=10, commit_interval=60)
    await again.open()

    def disk_full(batch):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(again, "_apply_sync", disk_full)
    for seq in (2, 3):
        assert again.insert_nowait([Entry(seq=seq, uid=f"u{seq}", request=b"{}")]) is None
    with caplog.at_level("ERROR", logger="ecosys.queues"), pytest.raises(OSError):
        await again.close()
    assert "q.sqlite: 2 acknowledged request(s) could not be written and are lost" in caplog.text


@pytest.mark.parametrize("content", [b"not a database at all" * 400, b""], ids=["garbage", "directory"])
async def test_a_file_that_is_no_queue_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    from ecosys import QueueFileError

    path = tmp_path / "q.sqlite"
    if content:
        path.write_bytes(content)
    else:
        path.mkdir()  # a directory where the file should be
    queue = DurableQueue(path)
    with pytest.raises(QueueFileError, match=f"queue file {path}: "):
        await queue.open()
    if content:
        assert path.read_bytes() == content, "the file was changed"
    await queue.close()  # nothing left open: a no-op


async def test_a_queue_file_of_another_shape_is_refused(tmp_path: Path) -> None:
    from ecosys import QueueFileError

    path = tmp_path / "q.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, body TEXT)")
    with pytest.raises(QueueFileError, match="no such column"):
        await DurableQueue(path).open()


async def test_a_file_another_process_is_writing_opens_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    path = tmp_path / "q.sqlite"
    first = DurableQueue(path)
    await first.open()
    await first.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # an operator's shell in the middle of a write
    try:
        queue = DurableQueue(path)
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="ecosys.queues"):
            assert await queue.open() == []
        assert time.monotonic() - started < 2, "opening waited out the lock"
        assert "another process is writing the file" in caplog.text
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    await queue.insert([Entry(seq=1, uid="u1", request=b"{}")], durable=True)
    await queue.close()
    assert rows(path) == [(1, "u1")]


async def test_one_batch_of_every_kind_of_change_stores_every_column(tmp_path: Path) -> None:
    # Plain puts bind fewer columns than puts with a group key, reason or failure
    # time; with deletes and attempt counts they share statements, split past the limit.
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path)
    await queue.open()
    await queue.insert([Entry(seq=i, uid=f"old{i}", request=b"{}") for i in range(10)], durable=True)
    count = MAX_CHANGES_PER_STATEMENT + 5
    plain = [Entry(seq=100 + 2 * i, uid=f"p{i}", request=b'{"n":%d}' % i, attempts=i % 3,
                   created=1000.5 + i) for i in range(count // 2)]
    full = [Entry(seq=101 + 2 * i, uid=f"f{i}", request=b"[1]", group_key=f"g{i % 4}",
                  created=7.25, generation=2, reason=f"why {i}" if i % 2 else None,
                  failed_at=None if i % 2 else 99.5) for i in range(count - count // 2)]
    queue.insert_nowait(plain + full, durable=False)
    queue.delete_nowait([1, 2, 3, 7])
    for seq in (0, 4, 9):
        queue.set_attempts_nowait(Entry(seq=seq, uid="ignored", request=b"{}", attempts=seq + 5))
    await queue.flush()
    await queue.close()
    with sqlite3.connect(path) as db:
        stored = list(db.execute("SELECT seq, generation, uid, request, attempts, group_key, created, "
                                 "reason, failed_at FROM entries ORDER BY seq"))
    expected = [(s, 0, f"old{s}", b"{}", s + 5 if s in (0, 4, 9) else 0, None, None, None, None)
                for s in (0, 4, 5, 6, 8, 9)]
    expected += sorted((e.seq, e.generation, e.uid, e.request, e.attempts, e.group_key, e.created,
                        e.reason, e.failed_at) for e in plain + full)
    # The old rows' creation times are whatever time.time() said: compare the rest.
    assert [row[:6] + row[7:] for row in stored[:6]] == [row[:6] + row[7:] for row in expected[:6]]
    assert stored[6:] == expected[6:]


async def test_batches_of_every_size_share_a_few_statements(tmp_path: Path) -> None:
    # SQLite prepares each distinct statement text again (about a commit's worth
    # of CPU): the text must depend on a few padded sizes, not on the exact
    # number of each kind of change in the batch.
    _changes_sql.cache_clear()
    queue = DurableQueue(tmp_path / "q.sqlite")
    await queue.open()
    seq = 0
    expected: dict[int, int] = {}
    for size in range(1, 301):
        entries = [Entry(seq=seq + i, uid=f"u{seq + i}", request=b"{}",
                         group_key="g" if size % 7 == 0 and i == 0 else None) for i in range(size)]
        await queue.insert(entries, durable=True)
        expected.update((entry.seq, 0) for entry in entries)
        gone = list(range(seq, seq + size, 3))  # a run per deleted entry
        queue.delete_nowait(gone)
        for done in gone:
            del expected[done]
        for entry in entries[1:size % 4]:
            entry.attempts = 2
            queue.set_attempts_nowait(entry)
            expected[entry.seq] = 2
        seq += size
    await queue.flush()
    with sqlite3.connect(tmp_path / "q.sqlite") as db:
        assert dict(db.execute("SELECT seq, attempts FROM entries")) == expected
    assert _changes_sql.cache_info().currsize <= 60
    await queue.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_changes_store_what_a_model_says(tmp_path: Path, seed: int) -> None:
    # Any mix of kinds of change in one batch (clears, deletes, puts with and
    # without the optional columns, attempt counts) ends as the plain model says.
    rng = random.Random(seed)
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path)
    await queue.open()
    model: dict[int, Entry] = {}
    next_seq = 0
    clearing: asyncio.Future[None] | None = None
    for _ in range(60):
        if rng.random() < 0.05:
            clearing = asyncio.ensure_future(queue.clear())
            await asyncio.sleep(0)
            model.clear()
        for _ in range(rng.choice([1, 3, 20, 300, 2500])):
            action = rng.random()
            if action < 0.5 or not model:
                entry = Entry(seq=next_seq, uid=f"u{next_seq}", request=rng.choice([b"{}", b"[1, 2]"]),
                              attempts=rng.randrange(3), group_key=rng.choice([None, None, "g", ""]),
                              created=rng.choice([0.0, 1.5]), generation=rng.randrange(3),
                              reason=rng.choice([None, None, "why"]), failed_at=rng.choice([None, 2.5]))
                next_seq += 1
                queue.insert_nowait([entry], durable=False)
                model[entry.seq] = entry
            elif action < 0.8:
                seq = rng.choice(list(model))
                queue.delete_nowait([seq])
                del model[seq]
            else:
                entry = model[rng.choice(list(model))]
                entry.attempts = rng.randrange(10)
                queue.set_attempts_nowait(entry)
        if clearing is not None:
            await clearing
            clearing = None
        await queue.flush()
    await queue.close()
    with sqlite3.connect(path) as db:
        stored = {row[0]: row for row in db.execute(
            "SELECT seq, generation, uid, request, attempts, group_key, created, reason, failed_at "
            "FROM entries")}
    expected = {e.seq: (e.seq, e.generation, e.uid, e.request, e.attempts, e.group_key, e.created,
                        e.reason, e.failed_at) for e in model.values()}
    assert stored == expected
