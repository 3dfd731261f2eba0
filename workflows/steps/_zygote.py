"""Fork server for `code` steps, run as ``python -I -S _zygote.py`` (stdlib only).

A worker starts one and keeps it warm. For each request frame on stdin it forks
a child that confines itself, runs the code as the body of ``def main(data)``
and sends back its result; the zygote answers with one frame on stdout. Frames
are a 4-byte big-endian length and JSON. Forking a warm interpreter costs about
a millisecond, where starting a new one costs tens.

The zygote holds nothing secret: it was started with an empty environment and
only ever sees the requests it relays. Each child, before any user code runs:
* dies with the zygote (PR_SET_PDEATHSIG; the zygote dies with its worker);
* started as root, drops to the unprivileged `nobody` user, so the worker's
  environment (/proc/<pid>/environ), the secret key and the database files are
  not readable;
* cannot fork (RLIMIT_NPROC 0), so nothing outlives the step;
* has address space, CPU time and file size capped;
* writes only into a fresh empty working directory, removed afterwards.
"""

import contextlib
import ctypes
import io
import json
import os
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

MAX_LOG_CHARS = 65536
NOBODY = 65534
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
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


def _confine(request: dict, workdir: str, zygote_pid: int) -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:  # the zygote died before the line above
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the zygote's protocol pipes are not the code's to touch
        os.dup2(devnull, fd)
    os.chdir(workdir)
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


def _execute(request: dict) -> dict:
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


def _child(request: dict, workdir: str, result_fd: int, zygote_pid: int) -> None:
    try:
        _confine(request, workdir, zygote_pid)
        captured = io.StringIO()
        sys.stdout = sys.stderr = captured
        result = _execute(request)
        result["logs"] = captured.getvalue()[-MAX_LOG_CHARS:]
        payload = json.dumps(result).encode()
    except BaseException as exc:  # noqa: BLE001
        payload = json.dumps({"ok": False, "error": f"Sandbox error: {exc!r}"}).encode()
    view = memoryview(payload)
    while view:
        view = view[os.write(result_fd, view) :]
    os._exit(0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        limit = {signal.SIGXCPU: ", CPU time limit", signal.SIGKILL: ", killed"}.get(sig, "")
        return f"signal {sig}{limit}"
    return f"exit code {os.WEXITSTATUS(status)}"


def serve_one(request: dict) -> dict:
    workdir = tempfile.mkdtemp(prefix="iolinker-code-")
    if os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)
    read_fd, write_fd = os.pipe()
    zygote_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setsid()
        _child(request, workdir, write_fd, zygote_pid)
    os.close(write_fd)
    deadline = time.monotonic() + request["timeout"]
    chunks, timed_out = [], False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                timed_out = True
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read_fd)
        shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        return {"ok": False, "timeout": True}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {
            "ok": False,
            "error": f"Code step process ended without a result ({_describe(status)})",
        }


def main() -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # other runs' data is not for a child to read
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_frame(stdin)) is not None:
        write_frame(stdout, serve_one(request))


if __name__ == "__main__":
    main()
