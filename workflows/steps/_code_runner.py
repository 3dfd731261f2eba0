"""Runs one `code` step in a fresh interpreter (``python -I -S``): stdlib only.

Reads ``{"code", "data", "memory_bytes"}`` as JSON on stdin, caps its own
memory, runs the code as the body of ``def main(data)`` and writes one JSON
line ``{"ok": true, "output": ..., "logs": ...}`` or ``{"ok": false,
"error": ..., "logs": ...}`` to stdout. What the code prints is captured into
``logs``.
"""

import io
import json
import resource
import sys
import textwrap
import traceback

MAX_LOG_CHARS = 65536


def _run(request: dict, captured: io.StringIO) -> dict:
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
    limit = request.get("memory_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    real_stdout = sys.stdout
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
    result = _run(request, captured)
    result["logs"] = captured.getvalue()[-MAX_LOG_CHARS:]
    real_stdout.write("\n" + json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
