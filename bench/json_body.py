"""CPU per call of the trigger body parser (triggers.body.json_body), against
the parser of an earlier commit, interleaved in one process (whole-machine speed
drifts: only an interleaved comparison means anything).

    .venv/bin/python bench/json_body.py [BASE_COMMIT]    # default 83d14c3

Bodies: a typical order of about 200 bytes, and about 50 KB of rows (560 small
objects, 1,700 arrays and objects: the depth check's slow path).
"""

import json
import os
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")

import django  # noqa: E402

django.setup()

from triggers.http.jsonbody import json_body  # noqa: E402


def base_parser(commit: str):
    """json_body as triggers/views.py had it at ``commit`` (before triggers/body.py)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:triggers/views.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    namespace: dict = {}
    exec(  # noqa: S102 (our own source, at a commit)
        "import json, re\nfrom iolinker import errors\nfrom iolinker.errors import ApiError\n"
        "_LONE_SURROGATE_HINT = re.compile(rb'\\\\u[dD][89a-fA-F]')\n"
        + source[source.index("def _reject_constant") : source.index("def body_reader")]
        + source[source.index("def json_body") :],
        namespace,
    )
    return namespace["json_body"]


def main() -> None:
    before = base_parser(sys.argv[1] if len(sys.argv) > 1 else "83d14c3")
    order = {
        "order": {
            "id": 12345,
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            "customer": {"name": "Ann Example", "email": "ann@example.com"},
            "note": "leave at the door, please",
        }
    }
    rows = {
        "rows": [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5, "meta": {"x": i}}
            for i in range(560)
        ]
    }
    for raw, number in ((json.dumps(order).encode(), 20000), (json.dumps(rows).encode(), 300)):
        assert before(raw) == json_body(raw)
        best = {"before": float("inf"), "after": float("inf")}
        for _ in range(9):
            for label, parse in (("before", before), ("after", json_body)):
                seconds = timeit.timeit(lambda p=parse, r=raw: p(r), number=number)
                best[label] = min(best[label], seconds / number * 1e6)
        print(
            f"{len(raw):>6} bytes: before {best['before']:8.2f} µs, after {best['after']:8.2f} µs "
            f"({best['after'] / best['before'] - 1:+.0%}, best of 9)"
        )


if __name__ == "__main__":
    main()
