"""The Fun Factory client: asks the router for fortunes, jokes, numbers, answers and times.

Run it against a running router:

    python examples/fun_factory/fun_client.py tcp://127.0.0.1:8900 --rate 20 --duration 10

It sends messages at a steady rate (open loop: a slow answer does not delay the next
message), each with a fresh uid, and prints what came back and a summary. About one
eight-ball message in twenty is a statement rather than a question, on purpose: the
eight ball refuses it with status 300, and the error travels back through the router.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecosys import Client, TransportError, client_from_url, new_uid

NAMES = ["Ada", "Grace", "Linus", "Guido", "Barbara", "Ken", "Margaret", "Dennis"]
QUESTIONS = [
    "Will the deploy go well?", "Should I refactor it?", "Is the bug in the cache?",
    "Will the queue drain before lunch?", "Is it time for coffee?", "Will the tests pass?",
]
STATEMENTS = ["The bug is in the cache.", "I will refactor it"]
TIMEZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Australia/Sydney"]
TOPICS = ["fortune", "joke", "lottery", "eight_ball", "time"]
MAX_IN_FLIGHT = 512


def make_message(rng: random.Random) -> dict[str, Any]:
    """One random message for the router."""
    topic = rng.choice(TOPICS)
    if topic == "fortune":
        return {"topic": topic, "text": rng.choice(NAMES)}
    if topic == "eight_ball":
        pool = STATEMENTS if rng.random() < 0.05 else QUESTIONS
        return {"topic": topic, "text": rng.choice(pool)}
    if topic == "time":
        return {"topic": topic, "text": rng.choice(TIMEZONES)}
    return {"topic": topic}


@dataclass
class DriveResult:
    """What happened to every message the client sent."""

    sent: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # uid -> status the router answered
    lost: dict[str, str] = field(default_factory=dict)  # uid -> why no answer came (timeout, ...)
    skipped: int = 0  # not sent: too many already in flight
    latencies: list[float] = field(default_factory=list)  # seconds, answered messages only

    @property
    def ok(self) -> int:
        """Messages answered with status 0."""
        return sum(1 for status in self.answered.values() if status == 0)

    def by_status(self) -> Counter[int]:
        """How many answers of each status."""
        return Counter(self.answered.values())

    def percentile_ms(self, fraction: float) -> float | None:
        """A latency percentile in milliseconds (None before any answer)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index] * 1000


async def send_one(client: Client, message: dict[str, Any], result: DriveResult,
                   on_answer: Callable[[str, dict[str, Any], int, Any], None] | None) -> None:
    """Send one message and record its fate under its uid."""
    uid = new_uid()
    result.sent += 1
    started = time.perf_counter()
    try:
        response = await client.send("router.ask", message, uid=uid)
    except TransportError as exc:
        result.lost[uid] = f"{type(exc).__name__}: {exc}"
        return
    result.latencies.append(time.perf_counter() - started)
    result.answered[uid] = response.status
    if on_answer is not None:
        on_answer(uid, message, response.status, response.data)


async def drive(url: str, *, rate: float, duration: float, seed: int | None = None,
                on_answer: Callable[[str, dict[str, Any], int, Any], None] | None = None,
                result: DriveResult | None = None) -> DriveResult:
    """Send *rate* messages a second for *duration* seconds; wait for the answers; return the tally.

    Pass *result* to watch the tally while it runs.
    """
    if rate <= 0 or duration < 0:
        raise ValueError("rate must be positive and duration not negative")
    rng = random.Random(seed)
    result = result if result is not None else DriveResult()
    client = client_from_url(url, timeout=5.0)
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(rate * duration)
    try:
        for n in range(total):
            # Keep to the schedule: sleep until this message is due, never "rate" after the last one.
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= MAX_IN_FLIGHT:
                result.skipped += 1
                continue
            task = asyncio.create_task(send_one(client, make_message(rng), result, on_answer))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
        await client.close()
    return result


def print_answer(uid: str, message: dict[str, Any], status: int, data: Any) -> None:
    """Show one answer on the terminal."""
    if status == 0:
        print(f"{uid[:8]} {message['topic']:<10} {data['text']}")
    else:
        print(f"{uid[:8]} {message['topic']:<10} status {status}: {data.get('message', data)}")


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="tcp://127.0.0.1:8900", help="the router's address")
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to send for")
    args = parser.parse_args()
    try:
        result = asyncio.run(drive(args.url, rate=args.rate, duration=args.duration, on_answer=print_answer))
    except KeyboardInterrupt:
        return 130
    p50, p99 = result.percentile_ms(0.5), result.percentile_ms(0.99)
    print(f"sent {result.sent}, answered {len(result.answered)} (ok {result.ok}), "
          f"no answer {len(result.lost)}; latency p50 {p50 or 0:.2f} ms, p99 {p99 or 0:.2f} ms")
    if result.lost:
        print("no answer:", dict(Counter(reason.split(':')[0] for reason in result.lost.values())))
    return 0 if result.answered and not result.lost else 1


if __name__ == "__main__":
    sys.exit(main())
