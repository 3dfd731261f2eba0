"""Fork server for `code` steps, run as ``python -I -S _zygote.py`` (stdlib only).

A worker starts one and keeps it warm. For a request frame on stdin it forks a
child that confines itself, runs the code as the body of ``def main(data)`` and
sends back its result; the zygote answers with one frame on stdout. Frames are
a 4-byte big-endian length and JSON. Forking a warm interpreter costs about a
millisecond, where starting a new one costs tens.

Sessions: requests carrying the same ``session`` key (code.py uses one key per
step of a workflow, with its code and limits) are served one after another by
the same child, so a batch of runs of one workflow pays for one child, not one
per run (~0.3 ms instead of ~4 ms a step). A session child serves only that
step's code; each request still gets a fresh namespace and a fresh empty
working directory, but module-level state the code leaves behind (e.g. in an
imported module) can be seen by the next run of the same step, as in a warm
AWS Lambda container, and the code can reach the session's pipes (so read the
next runs' requests of that step). That crosses no line the step's author does
not already cross: that code sees every run's input of the step anyway. A
child is retired after SESSION_MAX_REQUESTS requests, SESSION_CPU_SECONDS of
CPU, SESSION_IDLE_SECONDS without work, a timeout, a crash, or a request with
another key.

The zygote holds nothing secret: it was started with an empty environment and
only ever sees the requests it relays. Its argument is its configuration (JSON:
``tmp_bytes``, ``unisolated``). At start it sweeps working directories left by
dead zygotes, imports the modules steps may use (_imports.py) and decides how
children are isolated (_jail.py). Each child, before any user code runs:
* dies with the zygote (PR_SET_PDEATHSIG; the zygote dies with its worker);
* has no network (unless the step has ``network: true``), a private tmpfs for
  /tmp, /var/tmp, /dev/shm and its working directory, and, started as root, a
  uid of its own, so the worker's environment (/proc/<pid>/environ), the secret
  key, the database files and other sandboxes are out of reach; started
  otherwise, a PID namespace and /proc of its own (_jail.py); a seccomp filter
  (_seccomp.py);
* cannot fork (RLIMIT_NPROC 0), so nothing outlives the step, nor gain
  privileges by exec (no_new_privs);
* has address space, CPU time, file size and open descriptors (NOFILE) capped;
* imports only the allowed standard-library modules (_imports.py);
* starts each run in a fresh empty working directory and empty tmp dirs.
"""

import contextlib
import ctypes
import io
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import textwrap
import time
import traceback

if __package__:
    from workflows.steps import _imports, _jail
else:  # run as a script with -I: its directory is not on the path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _imports
    import _jail

    del sys.path[0]

MAX_LOG_CHARS = 65536
# A session child serves consecutive requests of one session key (one step of
# one workflow, see code.py) until it has served this many, used this much CPU
# (its CPU limit leaves each request at least its own allowance on top), or
# waited this long for the next one.
SESSION_MAX_REQUESTS = 256
SESSION_CPU_SECONDS = 1.0
SESSION_IDLE_SECONDS = 2.0
NOFILE = 64  # RLIMIT_NOFILE of a child: descriptors its code may hold at once
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
_FILENAME = "<code step>"
# Source lines are one further than the step's own: its code is the body of a def.
_LINE = re.compile(r'(File "<code step>", line )(\d+)')
_LIBC = ctypes.CDLL(None, use_errno=True)


def read_frame(stream) -> dict | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack(">I", header)
    return json.loads(stream.read(size))


def write_frame(stream, message: dict) -> None:
    payload = json.dumps(message).encode()
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def _confine(request: dict, jail: _jail.Jail, host_workdir, zygote_pid: int) -> str:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:  # the zygote died before the line above
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the zygote's protocol pipes are not the code's to touch
        os.dup2(devnull, fd)
    network = bool(request.get("network"))
    workdir = jail.confine(network=network, host_workdir=host_workdir)
    # A change of uid clears the parent-death signal: set it again. (In
    # user-namespace mode the child is PID 1 of its own namespace, under a parent
    # that waits for it, set up by the jail: its getppid() is 0.)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if jail.mode != "userns" and os.getppid() != zygote_pid:
        os._exit(1)
    os.chdir(workdir)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
    # Few descriptors: each open pipe or socket buffer is kernel memory no other
    # limit counts (the worker's limit, 20,000 here, was inherited).
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    # A session child may already have used up to SESSION_CPU_SECONDS.
    cpu = int(request["cpu_seconds"]) + math.ceil(SESSION_CPU_SECONDS)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    _imports.install(network=network)
    return workdir


def _execute(request: dict) -> dict:
    source = "def main(data):\n" + textwrap.indent(request["code"] or "pass", "    ")
    try:
        namespace = {"__name__": _imports.STEP_MODULE}
        exec(compile(source, _FILENAME, "exec"), namespace)  # noqa: S102 - it is the sandbox
        output = namespace["main"](request["data"])
    except MemoryError:
        return {"ok": False, "error": "MemoryError: the step exceeded its memory limit"}
    except BaseException as exc:  # noqa: BLE001 - report whatever the user code raises
        return {"ok": False, **_failure(exc)}
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return {"ok": False, "error": f"The returned value is not JSON: {exc}"}
    return {"ok": True, "output": output}


def _failure(exc: BaseException) -> dict:
    """The error for callers (the exception and the step's line, no traceback)
    and the full traceback for the step's record."""
    lines = traceback.format_exception(exc)
    text = "".join(line for line in lines if __file__ not in line).strip()
    text = _LINE.sub(lambda m: m.group(1) + str(int(m.group(2)) - 1), text)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == _FILENAME]
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if frames and frames[-1].lineno and frames[-1].lineno > 1:
        error += f" (line {frames[-1].lineno - 1})"
    return {"error": error, "traceback": text}


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(struct.pack(">I", len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def _child(
    request: dict, jail: _jail.Jail, host_workdir, request_fd: int, result_fd: int, zygote_pid: int
) -> None:
    """Serve the session's requests, the first one given, the next ones read
    from ``request_fd``, until the zygote closes it."""
    try:
        workdir = _confine(request, jail, host_workdir, zygote_pid)
        requests = os.fdopen(request_fd, "rb")
    except BaseException as exc:  # noqa: BLE001
        _write_all(
            result_fd, json.dumps({"ok": False, "error": f"Sandbox error: {exc!r}"}).encode()
        )
        os._exit(0)
    while request is not None:
        rundir = tempfile.mkdtemp(dir=workdir)
        try:
            os.chdir(rundir)
            captured = io.StringIO()
            sys.stdout = sys.stderr = captured
            result = _execute(request)
            result["logs"] = captured.getvalue()[-MAX_LOG_CHARS:]
            result["cpu"] = time.process_time()
            payload = json.dumps(result).encode()
        except BaseException as exc:  # noqa: BLE001
            payload = json.dumps({"ok": False, "error": f"Sandbox error: {exc!r}"}).encode()
        finally:
            os.chdir(workdir)
            shutil.rmtree(rundir, ignore_errors=True)
            with contextlib.suppress(OSError):
                jail.clear(workdir)
        _write_all(result_fd, payload)
        request = read_frame(requests)
    os._exit(0)


class _Session:
    """A sandbox child kept for consecutive requests with the same session key."""

    def __init__(self, request: dict, jail: _jail.Jail):
        self.key = request.get("session")
        self.workdir = jail.host_workdir()  # None: the child makes its own, in its tmpfs
        request_r, self.request_w = os.pipe()
        self.result_r, result_w = os.pipe()
        zygote_pid = os.getpid()
        try:
            self.pid = os.fork()
        except OSError:
            for fd in (request_r, self.request_w, self.result_r, result_w):
                os.close(fd)
            if self.workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        if self.pid == 0:
            os.close(self.request_w)
            os.close(self.result_r)
            os.setsid()
            _child(request, jail, self.workdir, request_r, result_w, zygote_pid)
        os.close(request_r)
        os.close(result_w)
        self.results = os.fdopen(self.result_r, "rb", buffering=0)
        self.served = 0
        self.status: int | None = None

    def send(self, request: dict) -> None:
        _write_all(self.request_w, json.dumps(request).encode())

    def receive(self, timeout: float) -> dict | None:
        """The answer; None if the child ended without one (see ``status``);
        raises TimeoutError (the deadline covers the whole frame)."""
        deadline = time.monotonic() + timeout
        header = _read_exactly(self.result_r, 4, deadline)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        body = _read_exactly(self.result_r, size, deadline)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        _, self.status = os.waitpid(self.pid, 0)
        os.close(self.request_w)
        self.results.close()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _read_exactly(fd: int, size: int, deadline: float) -> bytes | None:
    chunks, left = [], size
    while left:
        if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        limit = {signal.SIGXCPU: ", CPU time limit", signal.SIGKILL: ", killed"}.get(sig, "")
        return f"signal {sig}{limit}"
    return f"exit code {os.WEXITSTATUS(status)}"


class Zygote:
    def __init__(self, *, tmp_bytes: int = 64 << 20, unisolated: bool = False):
        _jail.sweep_stale()
        _imports.preload()
        self.jail = _jail.Jail(tmp_bytes=tmp_bytes, allow_unisolated=unisolated)
        self.session: _Session | None = None
        self.status = 0  # how the last retired child ended

    def serve(self, request: dict) -> dict:
        """Run one request, in the current session's child when it has the same
        key, else in a new child."""
        if not self.jail.usable:
            return {"ok": False, "error": self.jail.refusal()}
        key = request.get("session")
        if self.session is not None and (key is None or key != self.session.key):
            self.retire()
        try:
            if self.session is not None:
                try:
                    self.session.send(request)
                except BrokenPipeError:  # it died between requests: start afresh
                    self.retire()
            if self.session is None:
                self.session = _Session(request, self.jail)
            answer = self.session.receive(request["timeout"])
        except TimeoutError:
            self.retire()
            return {"ok": False, "timeout": True}
        except OSError:  # the child is gone (a broken pipe)
            answer = None
        if answer is None:
            self.retire()
            return {
                "ok": False,
                "error": f"Code step process ended without a result ({_describe(self.status)})",
            }
        self.session.served += 1
        if self.jail.mode == "none":
            note = (
                "note: this code step ran without isolation "
                f"(IOLINKER_CODE_SANDBOX=unisolated): {self.jail.problem}\n"
            )
            answer["logs"] = note + answer.get("logs", "")
        cpu = answer.pop("cpu", 0)
        if key is None or self.session.served >= SESSION_MAX_REQUESTS or cpu > SESSION_CPU_SECONDS:
            self.retire()
        return answer

    def retire(self) -> None:
        if self.session is not None:
            self.session.end()
            self.status = self.session.status
            self.session = None


def main() -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # other runs' data is not for a child to read
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    zygote = Zygote(
        tmp_bytes=config.get("tmp_bytes", 64 << 20), unisolated=config.get("unisolated", False)
    )
    while True:
        if (
            zygote.session is not None
            and not select.select([stdin], [], [], SESSION_IDLE_SECONDS)[0]
        ):
            zygote.retire()  # nobody needs it for now
            continue
        request = read_frame(stdin)
        if request is None:
            break
        write_frame(stdout, zygote.serve(request))
    zygote.retire()


if __name__ == "__main__":
    main()
