import contextlib
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from workflows.steps.base import StepError, StepType, register

_RUNNER = str(Path(__file__).with_name("_code_runner.py"))
# What the child sees of the environment: nothing of the platform's settings.
_CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
DEFAULT_TIMEOUT_S = 10
MAX_TIMEOUT_S = 300
DEFAULT_MEMORY_MB = 256
NOBODY = 65534
PR_SET_DUMPABLE = 4


class _Process:
    hardened_pid: int | None = None


def _harden_parent() -> None:
    """Make this worker non-dumpable, once: a same-user child then cannot read
    /proc/<worker>/environ or its memory (where DATABASE_URL and secrets live)."""
    if _Process.hardened_pid != os.getpid():
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _Process.hardened_pid = os.getpid()


@register
class Code(StepType):
    """Python code, run as the body of ``def main(data)`` in a separate process.

    ``data`` is the resolved ``input`` config (by default every expression name:
    input, body, query, headers, method, steps); the value the code returns is
    the step's output and must be JSON. Only the standard library is importable.
    """

    name = "code"
    label = "Code (Python, in a separate process)"
    literal_keys = frozenset({"code"})
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 1},
            "input": {},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
            "memory_mb": {"type": "integer", "minimum": 32, "maximum": 4096},
        },
        "required": ["code"],
        "additionalProperties": False,
    }

    def check(self, config):
        try:
            compile("def main(data):\n" + _indent(config["code"]), "<code step>", "exec")
        except SyntaxError as exc:
            return [f"code: line {(exc.lineno or 2) - 1}: {exc.msg}"]
        return []

    def resolve_input(self, config, ctx):
        resolved = super().resolve_input(config, ctx)
        if "input" not in config:
            resolved["input"] = ctx.data
        return resolved

    def run(self, resolved, ctx):
        timeout = resolved.get("timeout", DEFAULT_TIMEOUT_S)
        request = {
            "code": resolved["code"],
            "data": resolved["input"],
            "memory_bytes": resolved.get("memory_mb", DEFAULT_MEMORY_MB) * 1024 * 1024,
            "cpu_seconds": math.ceil(timeout) + 1,
        }
        _harden_parent()
        with tempfile.TemporaryDirectory(prefix="iolinker-code-") as workdir:
            if os.geteuid() == 0:
                os.chown(workdir, NOBODY, NOBODY)  # the runner drops to `nobody`
            stdout, stderr, returncode = _communicate(
                [sys.executable, "-I", "-S", _RUNNER],
                json.dumps(request).encode(),
                cwd=workdir,
                timeout=timeout,
            )
        lines = stdout.decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            stderr = stderr.decode(errors="replace").strip()[-2000:]
            reason = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
                reason += ", CPU time limit"
            raise StepError(
                f"Code step process ended without a result ({reason})"
                + (f": {stderr}" if stderr else "")
            ) from None
        if result.get("logs"):
            ctx.logs.append(result["logs"])
        if not result["ok"]:
            raise StepError(result["error"])
        return result["output"]


def _communicate(cmd: list[str], stdin: bytes, *, cwd: str, timeout: float):
    """Run the sandbox process; on timeout (or any interruption, e.g. the run's
    own timeout) kill its whole process group."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=_CHILD_ENV,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise StepError(f"Code step timed out after {timeout:g} s") from None
    except BaseException:
        _kill_group(proc)
        raise
    return stdout, stderr, proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _indent(code: str) -> str:
    return "".join("    " + line for line in code.splitlines(keepends=True)) or "    pass"
