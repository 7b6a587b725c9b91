"""The ping-pong benchmark's row selection, run for real on one fast row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "ping_pong" / "run.py"


def test_unknown_case_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, str(RUN), "--cases", "persistent_uds_1,nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown case(s) nope" in done.stderr and "persistent_uds_64" in done.stderr


def test_cases_measures_only_the_chosen_rows(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--loop", "asyncio",
         "--cases", "persistent_uds_1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["loops"]["asyncio"]["rows"]
    assert [row["case"] for row in rows] == ["persistent_uds_1"]
    assert rows[0]["ecosys"]["median"] > 0 and rows[0]["baseline"]["median"] > 0
    table_rows = [line for line in done.stdout.splitlines() if line.startswith(("persistent", "transient", "UDP"))]
    assert len(table_rows) == 1 and table_rows[0].startswith("persistent UDS, 1 at a time")


def _ping_pong_run_module():  # type: ignore[no-untyped-def]
    # Loaded from its path under its own name: examples/fun_factory has a run.py too.
    import importlib.util
    folder = str(RUN.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # for its own imports (servers, workloads)
    spec = importlib.util.spec_from_file_location("ping_pong_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_ratio_pairs_each_repetition_and_skips_failed_ones() -> None:
    run = _ping_pong_run_module()
    ours = run.Outcome([100.0, None, 300.0, 80.0], ["ConnectFailed: x"])
    theirs = run.Outcome([200.0, 400.0, None, 100.0], ["ConnectFailed: y"])
    # Repetitions 2 and 3 failed on one side each: only 1 and 4 make pairs.
    assert run.paired_ratios(ours.by_repetition, theirs.by_repetition) == [0.5, 0.8]
    assert ours.median == 100.0 and theirs.median == 200.0


def test_ratio_is_the_median_pair_not_the_ratio_of_medians() -> None:
    run = _ping_pong_run_module()
    row = run.Row("persistent_uds_1", "persistent UDS, 1 at a time", None, "UDS 1 at a time",
                  None, target=0.75)
    # The machine slows down between repetitions: side by side each pair is 80%,
    # but the medians of the two columns come from different moments.
    ours = run.Outcome([800.0, 400.0, 160.0], [])
    theirs = run.Outcome([1000.0, 500.0, 200.0], [])
    result = run.row_result(row, {"ecosys": ours, "baseline": theirs})
    assert result["ratio"] == 0.8 and result["passed"] is True and result["doubtful"] is False
    assert result["ratio_of_medians"] == 0.8
    ours = run.Outcome([900.0, 300.0, 150.0], [])
    theirs = run.Outcome([1000.0, 500.0, 200.0], [])
    result = run.row_result(row, {"ecosys": ours, "baseline": theirs})
    assert result["ratios"] == [0.9, 0.6, 0.75]
    assert result["ratio"] == 0.75 and result["passed"] is True
    # The target sits inside the middle half of the pairs: the verdict may flip.
    assert result["ratio_middle_half"] == [0.675, 0.825] and result["doubtful"] is True


def test_queue_benchmark_judges_ratios_by_repetition() -> None:
    # In a subprocess: benchmarks/queues has a workloads.py of its own, as ping_pong does.
    queues = RUN.parent.parent / "queues"
    script = (
        "import run\n"
        "plain = run.Outcome([30000.0, 48000.0, 30000.0])\n"
        "queued = run.Outcome([11000.0, 20000.0, 17000.0])\n"
        "sqlite = run.Outcome([3500.0, 3500.0, 3500.0])\n"
        "checks = {c['id']: c for c in run.targets({run.TARGET_CASE: queued, 'plain_64': plain}, sqlite)}\n"
        "c = checks['c']\n"
        # Pairs 36.7%, 41.7%, 56.7%: the median pair fails although the medians' ratio passes.
        "assert abs(c['value'] - 20000 / 48000) < 1e-9, c\n"
        "assert abs(c['ratio_of_medians'] - 17000 / 30000) < 1e-9, c\n"
        "assert c['passed'] is False and c['repetitions_passed'] == 1, c\n"
        "queued.rates.pop()\n"
        "c = {c['id']: c for c in run.targets({run.TARGET_CASE: queued, 'plain_64': plain}, sqlite)}['c']\n"
        # A failed repetition leaves no pairs: the ratio of the medians stands in.
        "assert c['value'] == c['ratio_of_medians'] == 15500 / 30000, c\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=queues, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
