"""The code step: Python run in a separate, isolated process (the per-process
sandbox zygote, workflows/steps/_zygote.py and _jail.py), killed on cancel or
timeout."""

import contextlib
import ctypes
import hashlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from workflows.steps import _zygote
from workflows.steps.base import StepError, StepType, Stopped, register

_ZYGOTE = str(Path(__file__).with_name("_zygote.py"))
# What the sandbox sees of the environment: nothing of the platform's settings.
_CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
DEFAULT_TIMEOUT_S = 10
MAX_TIMEOUT_S = 300
DEFAULT_MEMORY_MB = 256
PR_SET_DUMPABLE = 4
# Extra wait for the zygote's answer beyond the step timeout before giving up on it.
_ANSWER_GRACE_S = 5
# How often a waiting step looks at the run's cancel flag.
_CANCEL_CHECK_S = 0.1


class _Sandbox:
    """This worker process's fork server (workflows/steps/_zygote.py), kept warm.

    One request at a time; a zygote that misbehaves (no answer, broken pipe,
    interrupted mid-request) is killed and a new one started on next use.
    """

    lock = threading.Lock()
    pid: int | None = None
    proc: subprocess.Popen | None = None
    config: str = ""  # what the running zygote was started with (settings may change)

    @classmethod
    def call(cls, request: dict, cancelled: threading.Event | None = None) -> dict:
        """Run a request; a set ``cancelled`` kills the sandbox (and the step's
        child with it) within _CANCEL_CHECK_S and raises Stopped."""
        with cls.lock:
            proc = cls._ensure()
            try:
                _zygote.write_frame(proc.stdin, request)
                give_up = time.monotonic() + request["timeout"] + _ANSWER_GRACE_S
                while not select.select([proc.stdout], [], [], _CANCEL_CHECK_S)[0]:
                    if cancelled is not None and cancelled.is_set():
                        raise Stopped("cancelled")
                    if time.monotonic() > give_up:
                        raise TimeoutError("the sandbox did not answer")
                answer = _zygote.read_frame(proc.stdout)
                if answer is None:
                    raise EOFError("the sandbox closed its pipe")
                return answer
            except BaseException:
                cls._discard()
                raise

    @classmethod
    def _ensure(cls) -> subprocess.Popen:
        config = json.dumps(
            {
                "tmp_bytes": settings.IOLINKER_CODE_TMP_MB * 1024 * 1024,
                "unisolated": settings.IOLINKER_CODE_SANDBOX == "unisolated",
            }
        )
        if cls.proc is not None and cls.pid == os.getpid() and cls.config != config:
            cls._discard()
        if cls.pid != os.getpid() or cls.proc is None or cls.proc.poll() is not None:
            # Non-dumpable: a same-user sandbox cannot read this worker's
            # /proc/<pid>/environ or memory (where DATABASE_URL and secrets live).
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            cls.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _ZYGOTE, config],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_CHILD_ENV,
                cwd="/",
                start_new_session=True,
            )
            cls.pid, cls.config = os.getpid(), config
        return cls.proc

    @classmethod
    def _discard(cls) -> None:
        if cls.proc is not None and cls.pid == os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(cls.proc.pid, signal.SIGKILL)
            cls.proc.wait()
        cls.proc = None


@register
class Code(StepType):
    """Python code, run as the body of ``def main(data)`` in a separate process.

    ``data`` is the resolved ``input`` config (by default every expression name:
    input, body, query, headers, method, steps); the value the code returns is
    the step's output and must be JSON. Only an allow-list of the standard
    library is importable (_imports.py). ``network: true`` (a literal, so only
    who may edit code steps can set it) gives the step the workers' network.
    """

    name = "code"
    label = "Code (Python, in a separate process)"
    literal_keys = frozenset({"code", "network"})
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 1},
            "input": {},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
            "memory_mb": {"type": "integer", "minimum": 32, "maximum": 4096},
            "network": {"type": "boolean"},
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
        timeout = ctx.time_left(resolved.get("timeout", DEFAULT_TIMEOUT_S))
        request = {
            "code": resolved["code"],
            "data": resolved["input"],
            "timeout": timeout,
            "memory_bytes": resolved.get("memory_mb", DEFAULT_MEMORY_MB) * 1024 * 1024,
            "cpu_seconds": math.ceil(timeout) + 1,
            "network": resolved.get("network") is True,
            # Runs of this step (same code and limits) share a sandbox child in turn.
            "session": _session_key(ctx, resolved),
        }
        try:
            result = _Sandbox.call(request, ctx.cancelled)
        except (OSError, TimeoutError, EOFError, ValueError) as exc:
            raise StepError(f"The code sandbox failed: {exc}") from None
        if result.get("timeout"):
            raise StepError(f"Code step timed out after {timeout:.3g} s")
        if result.get("logs"):
            ctx.logs.append(result["logs"])
        if not result["ok"]:
            # Callers see the message (status, /sync, callbacks); the step's
            # record keeps the traceback in its logs, for the admin.
            if result.get("traceback"):
                ctx.logs.append(result["traceback"])
            raise StepError(result["error"])
        return result["output"]


def _session_key(ctx, resolved: dict) -> str:
    identity = json.dumps(
        [
            ctx.step_id,
            resolved["code"],
            resolved.get("timeout"),
            resolved.get("memory_mb"),
            resolved.get("network") is True,
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()


def _indent(code: str) -> str:
    return "".join("    " + line for line in code.splitlines(keepends=True)) or "    pass"
