"""``eco metrics``: Prometheus exposition of real services, once on stdout and served over HTTP.

The service is the one of test_cli.py (a real process with endpoints, a
queued endpoint and a queued sender); the output is parsed with
prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from apphelpers import app_env, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_cli import Service, eco, js, ok, run_service

from ecosys.cli.core import CliFailure
from ecosys.cli.metrics import EcosysCollector, exposition, parse_listen, parse_scrape_target

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with run_service() as running:
        ok("send", running.tcp, "setup")
        for n in range(3):
            ok("send", running.tcp, "echo", json.dumps({"message": str(n)}))
        for n in (-1, -2):
            ok("send", running.tcp, "jobs", json.dumps({"n": n}))
        ok("send", running.tcp, "outbox.put", '{"n": -1}')
        ok("send", running.tcp, "outbox.put", '{"n": 1}')
        assert wait_until(lambda: js("queue", "data", running.tcp, "jobs")["errors"] == 2, 10)
        assert wait_until(lambda: js("queue", "data", running.tcp, "outbox", "--sender")["errors"] == 1, 10)
        ok("queue", "pause", running.tcp, "jobs", "--what", "processing")
        ok("send", running.tcp, "jobs", '{"n": 5}')  # stays pending while processing is paused
        yield running


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (sample name, labels), and the type of every family."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, sample: str, /, **labels: str) -> float:
    key = (sample, frozenset(labels.items()))
    assert key in samples, f"no sample {sample}{labels}; have {sorted(k for k in samples if k[0] == sample)}"
    return samples[key]


def test_metrics_once_parses_with_expected_samples(service: Service) -> None:
    down = f"tcp://127.0.0.1:{free_port()}"
    result = eco("metrics", service.tcp, f"gone={down}")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr.startswith("eco: gone is down: cannot connect to") and result.stderr.count("\n") == 1
    samples, types = parse(result.stdout)
    svc = service.tcp

    assert value(samples, "ecosys_up", service=svc) == 1
    assert value(samples, "ecosys_up", service="gone") == 0
    assert not any(("service", "gone") in labels for name, labels in samples if name != "ecosys_up"
                   and name != "ecosys_scrape_duration_seconds"), "a down service has only ecosys_up"
    assert value(samples, "ecosys_uptime_seconds", service=svc) > 0

    assert types["ecosys_endpoint_calls"] == "counter"
    assert value(samples, "ecosys_endpoint_calls_total", service=svc, endpoint="echo") == 3
    assert value(samples, "ecosys_endpoint_calls_total", service=svc, endpoint="jobs") == 3
    for quantile in ("0.5", "0.95", "0.99"):
        latency = value(samples, "ecosys_endpoint_latency_seconds", service=svc, endpoint="echo",
                        quantile=quantile)
        assert 0 < latency < 1
    assert value(samples, "ecosys_endpoint_latency_max_seconds", service=svc, endpoint="echo") > 0
    assert value(samples, "ecosys_queued_handler_errors_total", service=svc, queue="jobs", status="600") == 2

    assert value(samples, "ecosys_queue_pending", service=svc, queue="jobs", kind="endpoint") == 1
    assert value(samples, "ecosys_queue_errors", service=svc, queue="jobs", kind="endpoint") == 2
    assert value(samples, "ecosys_queue_active", service=svc, queue="jobs", kind="endpoint",
                 activity="processing") == 0
    assert value(samples, "ecosys_queue_active", service=svc, queue="jobs", kind="endpoint",
                 activity="receiving") == 1
    assert value(samples, "ecosys_queue_errors", service=svc, queue="outbox", kind="sender") == 1
    assert value(samples, "ecosys_queue_delivered_total", service=svc, queue="outbox", kind="sender") == 1

    assert value(samples, "ecosys_sender_calls_total", service=svc, target=svc, route="take") == 2
    assert value(samples, "ecosys_sender_errors_total", service=svc, target=svc, route="take", status="300") == 1

    assert value(samples, "ecosys_custom", service=svc, name="orders") == 8
    assert value(samples, "ecosys_custom", service=svc, name="orders.open") == 3
    assert value(samples, "ecosys_custom", service=svc, name="orders.filled") == 5
    assert ("ecosys_custom", frozenset({("service", svc), ("name", "note")})) not in samples, "not numeric"
    assert value(samples, "ecosys_error_states", service=svc) == 2
    assert value(samples, "ecosys_error_state_count", service=svc, state="disk.full") == 2


def test_metrics_json_and_usage_errors(service: Service) -> None:
    down = f"tcp://127.0.0.1:{free_port()}"
    result = eco("metrics", f"svc={service.uds}", down, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    first, second = document["targets"]
    assert first["service"] == "svc" and first["url"] == service.uds and first["up"] is True
    assert first["statistics"]["current"]["endpoints"]["echo"]["calls"] >= 3
    assert "disk.full" in first["error_states"]
    assert second["service"] == down and second["up"] is False and "cannot connect" in second["error"]

    for args in (["metrics", "tcp://nowhere"], ["metrics", service.tcp, "--listen", "nonsense"],
                 ["metrics", service.tcp, "--listen", "127.0.0.1:1", "--json"]):
        result = eco(*args)
        assert result.exit_code == 2 and result.stderr.startswith("eco: error:"), (args, result.stderr)
    assert eco("metrics").exit_code == 2
    # One service label for two targets would export clashing series.
    for args in (["metrics", f"a={service.tcp}", f"a={service.uds}"], ["metrics", service.tcp, service.tcp]):
        result = eco(*args)
        assert result.exit_code == 2 and "given more than once" in result.stderr, (args, result.stderr)


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    (":9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    (" localhost:0 ", ("localhost", 0)),
])
def test_listen_addresses_follow_the_transport_flags_rules(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address


@pytest.mark.parametrize(("text", "reason"), [
    ("9464", "expected 'host:port'"),
    ("127.0.0.1:", "port must be a number"),
    ("127.0.0.1:http", "port must be a number"),
    ("127.0.0.1:70000", "between 0 and 65535"),
    ("::1:9464", "needs brackets"),  # would have listened on ::1 port 9464, or on "::" port 1?
])
def test_a_bad_listen_address_is_a_usage_error_saying_why(text: str, reason: str) -> None:
    with pytest.raises(CliFailure) as caught:
        parse_listen(text)
    assert caught.value.code == 2 and reason in str(caught.value), str(caught.value)


def test_counters_keep_growing_across_period_rollovers() -> None:
    """With 1 s statistics periods, the collector carries the counts of closed periods over."""
    with run_service(ECOENV_STAT_GP="1") as short:
        collector = EcosysCollector([parse_scrape_target(f"s={short.tcp}")], timeout=5)
        total = 0
        seen_starts = set()
        for round_ in range(3):
            for n in range(4):
                ok("send", short.tcp, "echo", json.dumps({"message": f"{round_}.{n}"}))
            total += 4
            samples, types = parse(exposition(collector))
            assert types["ecosys_endpoint_calls"] == "counter"
            assert value(samples, "ecosys_endpoint_calls_total", service="s", endpoint="echo") == total
            seen_starts.add(value(samples, "ecosys_statistics_period_start_timestamp_seconds", service="s"))
            # Let the service close its period before the next round.
            start = js("stats", short.tcp)["current"]["start"]
            assert wait_until(lambda start=start: js("stats", short.tcp)["current"]["start"] != start, 5)
        assert len(seen_starts) == 3, "each round was in a new period"
        # A one-shot scrape (a fresh collector) only sees the running period.
        samples, _ = parse(exposition(EcosysCollector([parse_scrape_target(f"s={short.tcp}")])))
        assert ("ecosys_endpoint_calls_total", frozenset({("service", "s"), ("endpoint", "echo")})) not in samples


@contextlib.contextmanager
def odd_peer(data: Any) -> Iterator[str]:
    """A TCP peer on loopback (not an ecosys service) answering every request with status 0 and *data*."""
    loop = asyncio.new_event_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                reply = {"uid": json.loads(line).get("uid"), "status": 0, "data": data}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.close()


# Statistics of a shape no ecosys service sends: one trips the call counts, one the queue gauges.
ODD_CALLS = {"current": {"start": 1, "endpoints": {"x": {"calls": 1, "errors": ["a"]}}}}
ODD_QUEUES = {"current": {"start": 1, "queues": {"endpoint.jobs": {"pending": [1]}}}}


def test_a_target_with_an_odd_answer_is_down_and_the_others_are_still_reported(service: Service) -> None:
    with odd_peer(ODD_CALLS) as calls, odd_peer(ODD_QUEUES) as queues:
        targets = [f"good={service.tcp}", f"calls={calls}", f"queues={queues}"]
        result = eco("metrics", *targets)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        lines = result.stderr.splitlines()
        assert len(lines) == 2 and all("unexpected answer" in line for line in lines), result.stderr
        assert lines[0].startswith("eco: calls is down: ") and lines[1].startswith("eco: queues is down: ")
        samples, _ = parse(result.stdout)
        assert value(samples, "ecosys_up", service="good") == 1
        assert value(samples, "ecosys_endpoint_calls_total", service="good", endpoint="echo") >= 3
        for odd in ("calls", "queues"):
            assert value(samples, "ecosys_up", service=odd) == 0
            assert not any(("service", odd) in labels for name, labels in samples
                           if name not in ("ecosys_up", "ecosys_scrape_duration_seconds")), odd

        document = json.loads(ok("metrics", *targets, "--json"))
        good, odd_calls, _ = document["targets"]
        assert good["up"] is True
        assert odd_calls["up"] is False and odd_calls["error"].startswith("unexpected answer")

        # A long-lived collector (what --listen serves) keeps exporting the others at every scrape.
        collector = EcosysCollector([parse_scrape_target(t) for t in targets], timeout=5)
        for _ in range(2):
            samples, _ = parse(exposition(collector))
            assert value(samples, "ecosys_up", service="good") == 1
            assert value(samples, "ecosys_up", service="calls") == 0
            assert value(samples, "ecosys_up", service="queues") == 0


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def test_listen_serves_fresh_metrics_until_ctrl_c(service: Service) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    listener = subprocess.Popen(
        [sys.executable, "-m", "ecosys.cli", "metrics", "--listen", f"127.0.0.1:{port}", f"app={service.tcp}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=app_env(),
    )
    try:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        assert wait_until(lambda: listening() or listener.poll() is not None, timeout=20)
        assert listener.poll() is None, f"eco metrics --listen exited with {listener.returncode}"
        samples, _ = parse(_scrape(url))
        assert value(samples, "ecosys_up", service="app") == 1
        before = value(samples, "ecosys_endpoint_calls_total", service="app", endpoint="echo")
        ok("send", service.tcp, "echo", '{"message": "one more"}')
        samples, _ = parse(_scrape(url))
        assert value(samples, "ecosys_endpoint_calls_total", service="app", endpoint="echo") == before + 1, \
            "each scrape asks the service afresh"
    finally:
        started = time.monotonic()
        listener.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            stdout, stderr = listener.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.communicate()
            raise
    assert listener.returncode == 0, stderr
    assert time.monotonic() - started < 5
    assert f"serving metrics of 1 target(s) on http://127.0.0.1:{port}/metrics" in stderr
    assert "Traceback" not in stderr and stdout == ""
    with pytest.raises(urllib.error.URLError):
        _scrape(url)
