"""Deadlines: the per-connection timeout bookkeeping of the clients, against a plain model."""

from __future__ import annotations

import random

from ecosys.transport.deadlines import Deadlines


class Fut:
    """Stands in for an asyncio future: only done() is used."""

    def __init__(self) -> None:
        self.answered = False

    def done(self) -> bool:
        return self.answered


def test_every_due_deadline_comes_out_whatever_order_they_went_in() -> None:
    rng = random.Random(7)
    deadlines: Deadlines = Deadlines()
    model: list[tuple[float, str]] = []
    futures: dict[str, Fut] = {}
    now = 0.0
    for step in range(3000):
        now += rng.random() * 0.01
        uid = f"u{step}"
        # Mostly one timeout (in order), sometimes a shorter one (out of order).
        timeout = 1.0 if rng.random() < 0.8 else rng.choice((0.05, 0.2, 0.5))
        futures[uid] = Fut()
        deadlines.add(now + timeout, futures[uid], timeout, uid, waiting=len(model))
        model.append((now + timeout, uid))
        if rng.random() < 0.3:
            # Time passes: every unanswered request due comes out, none that is not due.
            now += rng.random() * 0.3
            got = [u for _, _, u in deadlines.pop_due(now)]
            due = {u for d, u in model if d <= now}
            assert len(got) == len(set(got)) and set(got) <= due
            # Answered ones may have been dropped before they were due.
            assert set(got) >= {u for u in due if not futures[u].done()}
            model = [d for d in model if d[0] > now]
        for _ in range(rng.randrange(3)):
            if model:
                futures[rng.choice(model)[1]].answered = True
        waiting = [d for d in model if not futures[d[1]].done()]
        assert deadlines.earliest() == (min(waiting)[0] if waiting else None)


def test_answered_entries_behind_a_slow_request_are_swept() -> None:
    deadlines: Deadlines = Deadlines()
    slow = Fut()
    deadlines.add(10.0, slow, 10.0, "slow", waiting=1)
    for n in range(10_000):
        fut = Fut()
        deadlines.add(10.0 + n, fut, 10.0, f"u{n}", waiting=2)
        fut.answered = True
    # The slow one holds the front: without sweeping all 10,000 would stay.
    assert len(deadlines) <= 4 * 2 + 64 + 1
    assert deadlines.earliest() == 10.0
    slow.answered = True
    assert deadlines.earliest() is None and len(deadlines) == 0


def test_a_shorter_timeout_goes_first_and_clear_forgets_all() -> None:
    deadlines: Deadlines = Deadlines()
    a, b, c = Fut(), Fut(), Fut()
    deadlines.add(5.0, a, 5.0, "a", waiting=0)
    deadlines.add(6.0, b, 5.0, "b", waiting=1)
    deadlines.add(1.5, c, 1.0, "c", waiting=2)
    assert deadlines.earliest() == 1.5
    assert sorted(u for _, _, u in deadlines.pop_due(5.5)) == ["a", "c"]
    assert deadlines.earliest() == 6.0
    deadlines.clear()
    assert deadlines.earliest() is None and len(deadlines) == 0
