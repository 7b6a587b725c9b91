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
