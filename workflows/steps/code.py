import json
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
        }
        with tempfile.TemporaryDirectory(prefix="iolinker-code-") as workdir:
            try:
                proc = subprocess.run(
                    [sys.executable, "-I", "-S", _RUNNER],
                    input=json.dumps(request).encode(),
                    capture_output=True,
                    timeout=timeout,
                    cwd=workdir,
                    env=_CHILD_ENV,
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise StepError(f"Code step timed out after {timeout:g} s") from None
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            stderr = proc.stderr.decode(errors="replace").strip()[-2000:]
            raise StepError(
                f"Code step process ended without a result (exit code {proc.returncode})"
                + (f": {stderr}" if stderr else "")
            ) from None
        if result.get("logs"):
            ctx.logs.append(result["logs"])
        if not result["ok"]:
            raise StepError(result["error"])
        return result["output"]


def _indent(code: str) -> str:
    return "".join("    " + line for line in code.splitlines(keepends=True)) or "    pass"
