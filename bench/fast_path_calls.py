"""Python work per request of the WSGI fast path for /async, in this checkout:
function calls counted by cProfile (deterministic, so comparable across
commits on any machine) and CPU time per request (``time.thread_time``, only
meaningful interleaved with another commit's run on the same machine).

    PYTHONPATH=<checkout> .venv/bin/python bench/fast_path_calls.py [REQUESTS]

Runs on a fresh SQLite database in a temporary IOLINKER_VAR_DIR, with an open
POST API; the group committer's thread (the write) is not counted, the request
thread (parsing, checks, the answer, the hand-over) is; calls in threading.py
(the wait for the committer) vary with timing and are counted apart.
DUMP=FILE writes the calls per request of each function, to diff two commits.
Run it for two checkouts alternately (A B A B) to compare.
"""

import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

os.environ["IOLINKER_VAR_DIR"] = tempfile.mkdtemp(prefix="iolinker-bench-")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)

from iolinker.wsgi import application  # noqa: E402
from triggers.models import ApiDefinition, AuthMode  # noqa: E402
from workflows.services import workflow_create  # noqa: E402

workflow = workflow_create(name="bench", steps=[("out", "output", {"value": "{{ body }}"})])
ApiDefinition.objects.create(
    module="bench", method="calls", http_method="POST", workflow=workflow, auth_mode=AuthMode.NONE
)
BODY = b'{"order": 42, "items": [{"sku": "a-1", "qty": 2}], "note": "fast path"}'


def environ() -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/api/bench/calls/async",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "src=bench",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_USER_AGENT": "bench",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.url_scheme": "http",
    }


def call() -> None:
    status = []
    application(environ(), lambda s, h, exc_info=None: status.append(s))
    assert status[0].startswith("202"), status


def main(requests: int) -> None:
    for _ in range(200):  # warm: the uid lease, the API cache, lru caches
        call()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        call()
    profile.disable()
    stats = pstats.Stats(profile)
    calls = stats.total_calls / requests
    primitive = stats.prim_calls / requests
    started = time.thread_time()
    for _ in range(requests):
        call()
    cpu_us = (time.thread_time() - started) / requests * 1e6
    if os.environ.get("DUMP"):
        with open(os.environ["DUMP"], "w") as out:
            for (file, _line, name), (_cc, nc, *_rest) in sorted(stats.stats.items()):
                out.write(f"{nc / requests:9.3f} {file.split('site-packages/')[-1]}:{name}\n")
    steady = sum(
        nc for (file, _l, _n), (_cc, nc, *_r) in stats.stats.items() if "threading" not in file
    )
    print(f"calls/request outside threading.py {steady / requests:.1f}")
    print(f"calls/request {calls:.1f} (primitive {primitive:.1f}); CPU/request {cpu_us:.0f} µs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
