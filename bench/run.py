"""iolinker benchmark: trigger acceptance, end-to-end runs, memory.

    .venv/bin/python bench/run.py                       # all three backends, full size
    .venv/bin/python bench/run.py --backends sqlite --duration 2 --n 200 --quick

For each backend (sqlite = SQLite + ORM broker, pg = PostgreSQL + ORM broker,
pg-redis = PostgreSQL + Redis broker) it makes a fresh database, loads the
reference workflow (transform -> code -> output) behind a token-auth POST API,
starts the platform with `manage.py serve` in its production configuration and
measures with wrk (Debian package `wrk`):

1. acceptance: wrk for --duration seconds at each concurrency, web server only
   (workers stopped, so they do not share the two cores); req/s, p50/p99
   latency, non-2xx count; then checks that every accepted uid is a queued
   execution with a queue message.
2. end to end: web + workers; --n triggers sent by 16 keep-alive client threads
   (each uid answered is checked to be stored), then waits until every
   execution is final; runs/s from the first trigger to the
   last finish, trigger-to-start p50/p99. Then a paced phase at --paced-rate
   triggers/s (below saturation) for trigger-to-start latency.
3. RSS of each web and worker process, idle and under load (max sampled).

Results: JSON (--out) and, with --report, docs/benchmarks.md plus a plot.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# Run as a script (bench/run.py): the repository root must be importable first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BACKENDS, BASE_DIR  # noqa: E402
from bench.phases import bench_backend  # noqa: E402


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ["django", "django-q2", "granian", "psycopg", "redis"]:
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = "?"
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    out["wrk"] = wrk_version.split()[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--n", type=int, default=5000, help="triggers in the end-to-end phase")
    parser.add_argument("--e2e-timeout", type=float, default=300)
    parser.add_argument("--paced-rate", type=float, default=100)
    parser.add_argument("--paced-seconds", type=float, default=10)
    parser.add_argument("--quick", action="store_true", help="skip the paced phase")
    parser.add_argument(
        "--soak", type=float, default=0, help="seconds of steady load with workers (0: none)"
    )
    parser.add_argument("--soak-rate", type=float, default=300)
    parser.add_argument("--soak-backends", default="pg")
    parser.add_argument("--out", default=str(BASE_DIR / "var" / "bench-results.json"))
    parser.add_argument("--report", action="store_true", help="write docs/benchmarks.md + plot")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install wrk")
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "args": {k: v for k, v in vars(args).items() if k not in {"out", "report"}},
        "backends": [bench_backend(b, args) for b in args.backends.split(",")],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    if args.report:
        from bench.report import write_report

        write_report(results)


if __name__ == "__main__":
    main()
