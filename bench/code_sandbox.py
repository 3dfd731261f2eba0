"""Micro-benchmark of the `code` step sandbox: N steps through the warm fork server.

    python bench/code_sandbox.py [N]

Three patterns, each N steps: one session (runs of one step share a child), a
new child per step (what alternating steps or a first run pay), and a new child
per step with network egress (where the sandbox must join the host network).
Prints milliseconds per step (median of three rounds). Run on the machine you
compare; only numbers from one run compare.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")
django.setup()

from workflows.steps.code import _Sandbox  # noqa: E402


def request(session, network=False):
    return {
        "code": "import json\nreturn json.dumps(data)",
        "data": {"n": 1},
        "timeout": 5,
        "memory_bytes": 256 << 20,
        "cpu_seconds": 6,
        "session": session,
        "network": network,
    }


def per_step_ms(n: int, make) -> float:
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            answer = _Sandbox.call(make(i))
            assert answer.get("ok"), answer
        rounds.append((time.perf_counter() - t0) * 1000 / n)
    return statistics.median(rounds)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    _Sandbox.call(request("warm-up"))
    print(f"{n} code steps, ms per step (median of 3 rounds)")
    print(f"  one session:               {per_step_ms(n, lambda i: request('s')):.3f}")
    print(f"  new child per step:        {per_step_ms(n, lambda i: request(None)):.3f}")
    print(f"  new child, network egress: {per_step_ms(n, lambda i: request(None, True)):.3f}")


if __name__ == "__main__":
    main()
