"""The worker's ready queue: lowest sequence number first, whatever the order of arrival."""

from __future__ import annotations

import random

import pytest

from ecosys.queues.ready import ReadyEntries
from ecosys.queues.store import Entry


def entry(seq: int) -> Entry:
    return Entry(seq=seq, uid=f"uid-{seq}", request=b"{}")


def drain(ready: ReadyEntries) -> list[int]:
    out = []
    while ready:
        out.append(ready.pop().seq)
    return out


def test_entries_come_out_by_seq_whatever_the_order_they_went_in() -> None:
    rng = random.Random(7)
    for _ in range(200):
        ready = ReadyEntries()
        expected: list[int] = []
        popped: list[int] = []
        next_seq = 0
        for _ in range(rng.randrange(1, 60)):
            action = rng.random()
            if action < 0.55:  # a freshly stored entry: the next seq
                next_seq += 1
                ready.push(entry(next_seq))
                expected.append(next_seq)
            elif action < 0.75 and next_seq:  # a retry or a reprocessed entry: any older seq
                seq = rng.randrange(1, next_seq + 1)
                ready.push(entry(seq))
                expected.append(seq)
            elif ready:
                smallest = min(expected)
                assert ready.pop().seq == smallest
                expected.remove(smallest)
                popped.append(smallest)
            assert len(ready) == len(expected)
        assert drain(ready) == sorted(expected)


def test_entries_given_at_start_are_sorted() -> None:
    ready = ReadyEntries(entry(seq) for seq in (5, 1, 9, 3))
    ready.push(entry(2))
    ready.push(entry(10))
    assert drain(ready) == [1, 2, 3, 5, 9, 10]


def test_popping_an_empty_queue_raises() -> None:
    ready = ReadyEntries()
    assert not ready and len(ready) == 0
    with pytest.raises(IndexError):
        ready.pop()
