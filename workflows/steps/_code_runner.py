"""Runs one `code` step in a fresh interpreter (``python -I -S``): stdlib only.

Reads ``{"code", "data", "memory_bytes", "cpu_seconds"}`` as JSON on stdin,
confines itself, runs the code as the body of ``def main(data)`` and writes one
JSON line ``{"ok": true, "output": ..., "logs": ...}`` or ``{"ok": false,
"error": ..., "logs": ...}`` to stdout. What the code prints goes to ``logs``.

Confinement, before any user code runs:
* dies with its parent (PR_SET_PDEATHSIG), so a killed worker leaves nothing;
* started as root, drops to the unprivileged `nobody` user: the worker's
  environment (/proc/<ppid>/environ), the secret key and the database files
  are not readable;
* cannot fork (RLIMIT_NPROC 0), so nothing outlives the step;
* address space and CPU time capped (RLIMIT_AS, RLIMIT_CPU), file writes
  capped (RLIMIT_FSIZE).
"""

import ctypes
import io
import json
import os
import resource
import signal
import sys
import textwrap
import traceback

MAX_LOG_CHARS = 65536
NOBODY = 65534
PR_SET_PDEATHSIG = 1


def _confine(request: dict) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
    cpu = int(request["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _run(request: dict) -> dict:
    source = "def main(data):\n" + textwrap.indent(request["code"] or "pass", "    ")
    try:
        namespace = {"__name__": "step"}
        exec(compile(source, "<code step>", "exec"), namespace)  # noqa: S102 - it is the sandbox
        output = namespace["main"](request["data"])
    except MemoryError:
        return {"ok": False, "error": "MemoryError: the step exceeded its memory limit"}
    except BaseException as exc:  # noqa: BLE001 - report whatever the user code raises
        lines = traceback.format_exception(exc)
        message = "".join(line for line in lines if __file__ not in line).strip()
        return {"ok": False, "error": message}
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return {"ok": False, "error": f"The returned value is not JSON: {exc}"}
    return {"ok": True, "output": output}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    _confine(request)
    real_stdout = sys.stdout
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
    result = _run(request)
    result["logs"] = captured.getvalue()[-MAX_LOG_CHARS:]
    real_stdout.write("\n" + json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
