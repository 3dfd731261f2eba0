"""The benchmark harness runs end to end on a tiny load (correctness, not speed)."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import needs_service
from tests.support.environment import BASE_DIR


@pytest.mark.slow
def test_benchmark_harness_runs_on_a_tiny_load(tmp_path):
    needs_service(None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--backends",
            "sqlite",
            "--duration",
            "1",
            "--concurrency",
            "1,4",
            "--n",
            "40",
            "--quick",
            "--out",
            str(out),
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (backend,) = json.loads(out.read_text())["backends"]
    for row in backend["acceptance"]:
        assert row["requests"] > 0 and row["non_2xx"] == 0 and row["socket_errors"] == 0
        # Every accepted trigger is a stored execution with its run queued (wrk does
        # not count answers still in flight when it stops: at most one per connection).
        assert row["requests"] <= row["executions"] <= row["requests"] + row["connections"]
        assert row["queued_messages"] >= 1
    e2e = backend["end_to_end"]
    assert e2e["triggers"] == 40 and e2e["refused"] == 0
    assert e2e["answered_uids_missing"] == 0
    assert e2e["total"] == e2e["final"] == e2e["succeeded"] == 40
    assert e2e["runs_per_s"] > 0 and e2e["start_p99_ms"] >= e2e["start_p50_ms"] >= 0
    assert backend["rss_mb"]["idle"]["web"] > 0 and backend["rss_mb"]["worker_load"] > 0
