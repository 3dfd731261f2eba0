"""The `code` step sandbox's processes: a uid per sandbox, nothing left behind
after a kill, and what happens where the machine cannot isolate (no namespaces,
a non-root worker in user namespaces). What a step may import and what confines
it (network, tmp, failures): tests/test_code_sandbox.py.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.environment import BASE_DIR
from tests.support.sandbox import SANDBOX_ESCAPE
from tests.test_code_sandbox import as_root, code_step, run
from workflows.models import ExecutionStatus
from workflows.steps import _jail, _zygote
from workflows.steps.code import _ZYGOTE, _Sandbox

pytestmark = pytest.mark.django_db


# --- a uid per sandbox -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry))
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _gone(pid: int) -> bool:
    """Ended (a zombie nobody reaps in a container counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_for(predicate, timeout: float = 20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("not within the time")


def _zygote_process(config: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", _ZYGOTE, json.dumps(config or {"tmp_bytes": 64 << 20})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        cwd="/",
    )


def _request(code: str, **extra) -> dict:
    return {
        "code": code,
        "data": {},
        "timeout": 20,
        "memory_bytes": 256 << 20,
        "cpu_seconds": 21,
        "session": None,
        **extra,
    }


@pytest.mark.slow
@as_root
def test_two_live_sandboxes_have_their_own_uids_and_cannot_signal_each_other():
    other = _zygote_process()
    try:
        _zygote.write_frame(other.stdin, _request("import time\ntime.sleep(3)\nreturn 'alive'"))
        first = _wait_for(lambda: [p for p in _children(other.pid) if _uid(p) != 0])[0]
        code = (
            SANDBOX_ESCAPE + "try:\n"
            "    os.kill(data['body']['pid'], 9)\n"
            "    killed = 'killed'\n"
            "except OSError as exc:\n"
            "    killed = type(exc).__name__\n"
            "return {'uid': os.getuid(), 'pid': os.getpid(), 'kill': killed}"
        )
        execution = run(code_step(code), body={"pid": first})
        assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
        second = execution.output
        assert second["kill"] == "PermissionError"
        assert _uid(first) == _jail.UID_BASE + first
        assert second["uid"] == _jail.UID_BASE + second["pid"] != _uid(first)
        assert _zygote.read_frame(other.stdout) == {"ok": True, "output": "alive", "logs": ""}
    finally:
        other.kill()
        other.wait()


# --- nothing left behind ---------------------------------------------------------

WORKER = """
import os, sys
sys.path.insert(0, {base!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "iolinker.settings"
import django
django.setup()
from workflows.steps.code import _Sandbox
_Sandbox.call({request!r})
"""


@pytest.mark.slow
def test_a_sigkilled_worker_leaves_no_sandbox_directory_or_process_behind(tmp_path):
    request = _request(SANDBOX_ESCAPE + "open('mine', 'w').write('x')\nimport time\ntime.sleep(60)")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(base=str(BASE_DIR), request=request)]
    )
    try:
        zygote = _wait_for(lambda: _children(worker.pid), timeout=60)[0]
        child = _wait_for(lambda: [p for p in _children(zygote) if _uid(p) != 0])[0]
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    _wait_for(lambda: _gone(child) and _gone(zygote), timeout=10)
    # Only this zygote's directories (named by its pid): other test runs on the
    # machine may have sandboxes of their own.
    assert not list(Path("/tmp").glob(f"iolinker-code-{zygote}-*"))
    assert not list(Path("/tmp").glob(f"iolinker-code-{zygote}"))


def test_a_zygote_sweeps_directories_of_dead_zygotes_at_start(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path("/tmp") / f"iolinker-code-{dead.pid}-stale"
    legacy = Path("/tmp") / "iolinker-code-legacy00"
    live = Path("/tmp") / f"iolinker-code-{os.getpid()}-notazygote"
    for directory in (stale, legacy, live):
        directory.mkdir()
        (directory / "left").write_text("x")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    live_zygote = _zygote_process()
    kept = Path("/tmp") / f"iolinker-code-{live_zygote.pid}-itsown"
    kept.mkdir()
    try:
        _Sandbox._discard()  # the next step starts a zygote, which sweeps
        execution = run(code_step("return 1"))
        assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
        assert not stale.exists() and not legacy.exists()
        assert not live.exists()  # this pytest process is no zygote
        assert kept.exists()  # a live zygote's directory stays
    finally:
        live_zygote.kill()
        live_zygote.wait()
        for directory in (stale, legacy, live, kept):
            subprocess.run(["rm", "-rf", str(directory)], check=False)


# --- where the machine cannot isolate -------------------------------------------

NO_USERNS = ["unshare", "--user", "--map-root-user", "sh", "-c"]
NO_USERNS_SCRIPT = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'


@pytest.mark.slow
@pytest.mark.parametrize("unisolated", [False, True])
def test_without_namespaces_code_steps_fail_clearly_unless_unisolated_is_set(unisolated):
    # Root of a user namespace that maps one uid and may not create more:
    # neither the root isolation nor user namespaces are possible there.
    config = json.dumps({"tmp_bytes": 64 << 20, "unisolated": unisolated})
    try:
        proc = subprocess.Popen(
            [*NO_USERNS, NO_USERNS_SCRIPT, "sh", sys.executable, "-I", "-S", _ZYGOTE, config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={},
            cwd="/",
        )
    except FileNotFoundError:
        pytest.skip("util-linux unshare is not installed")
    try:
        _zygote.write_frame(proc.stdin, _request("import datetime\nreturn 1"))
        answer = _zygote.read_frame(proc.stdout)
    finally:
        proc.kill()
        proc.wait()
    if answer is None:
        pytest.skip("user namespaces are not available to make the test's setting")
    if unisolated:
        assert (answer["ok"], answer["output"]) == (True, 1)
        assert answer["logs"].startswith("note: this code step ran without isolation")
    else:
        assert answer["ok"] is False
        assert answer["error"].startswith(
            "The code sandbox cannot isolate code steps on this machine"
        )
        assert "IOLINKER_CODE_SANDBOX=unisolated" in answer["error"]


USERNS_PROBE = (
    SANDBOX_ESCAPE + "import datetime, errno\n"
    "S = sys.modules['socket']\n"
    "try:\n"
    "    S.create_connection(('127.0.0.1', data['port']), timeout=2).close()\n"
    "    net = 'connected'\n"
    "except OSError as exc:\n"
    "    net = errno.errorcode[exc.errno]\n"
    "return {'uid': os.getuid(), 'net': net, 'run': os.listdir('/run'),\n"
    "        'tmp': os.statvfs('/tmp').f_blocks * os.statvfs('/tmp').f_frsize,\n"
    "        'date': str(datetime.date(2026, 1, 2))}"
)


@pytest.mark.slow
@as_root
def test_a_non_root_worker_isolates_its_sandboxes_with_user_namespaces():
    # The workers' Python here is under /root, unreadable for another user: the
    # fork server (standard library only) runs on the system's Python as `nobody`.
    python = "/usr/bin/python3"
    if not Path(python).exists() or not shutil.which("setpriv"):
        pytest.skip("needs /usr/bin/python3 and setpriv to run a fork server as nobody")
    listener = socket.create_server(("127.0.0.1", 0))
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    config = json.dumps({"tmp_bytes": 16 << 20, "unisolated": False})
    proc = subprocess.Popen(
        [*drop, python, "-I", "-S", _ZYGOTE, config],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        cwd="/",
    )
    try:
        request = _request(USERNS_PROBE)
        request["data"] = {"port": listener.getsockname()[1]}
        _zygote.write_frame(proc.stdin, request)
        answer = _zygote.read_frame(proc.stdout)
    finally:
        proc.kill()
        proc.wait()
        listener.close()
    if answer and "cannot isolate" in answer.get("error", ""):
        pytest.skip(f"no unprivileged user namespaces here: {answer['error']}")
    assert answer["ok"], answer
    assert answer["output"] == {
        "uid": 65534,
        "net": "ENETUNREACH",
        "run": [],
        "tmp": 16 << 20,
        "date": "2026-01-02",
    }


WORKER_PROBE = (
    SANDBOX_ESCAPE + "pid = data['pid']\n"
    "try:\n"
    "    environ = open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')\n"
    "except OSError as exc:\n"
    "    environ = type(exc).__name__\n"
    "try:\n"
    "    cmdline = open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace')\n"
    "except OSError as exc:\n"
    "    cmdline = type(exc).__name__\n"
    "try:\n"
    "    os.kill(pid, 15)\n"
    "    signalled = 'sent'\n"
    "except OSError as exc:\n"
    "    signalled = type(exc).__name__\n"
    "return {'environ': environ, 'cmdline': cmdline, 'signal': signalled,\n"
    "        'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}"
)


@pytest.mark.slow
@as_root
def test_in_user_namespace_mode_a_code_step_cannot_read_or_signal_the_worker():
    """Non-root workers' sandboxes keep the workers' uid. They live in a PID
    namespace of their own with its own /proc: the worker (here a process of the
    same uid holding a secret in its environment) is neither visible (its
    cmdline was readable before, its environ refused by the kernel across user
    namespaces) nor reachable."""
    python = "/usr/bin/python3"
    if not Path(python).exists() or not shutil.which("setpriv"):
        pytest.skip("needs /usr/bin/python3 and setpriv to run a fork server as nobody")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    secret = "IOLINKER_TEST_SECRET=s3cret-of-the-worker"
    worker = subprocess.Popen(
        [*drop, "sleep", "60"], env={secret.split("=")[0]: secret.split("=")[1]}
    )
    config = json.dumps({"tmp_bytes": 16 << 20, "unisolated": False})
    proc = subprocess.Popen(
        [*drop, python, "-I", "-S", _ZYGOTE, config],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        cwd="/",
    )
    try:
        assert secret in Path(f"/proc/{worker.pid}/environ").read_bytes().decode()
        request = _request(WORKER_PROBE)
        request["data"] = {"pid": worker.pid}
        _zygote.write_frame(proc.stdin, request)
        answer = _zygote.read_frame(proc.stdout)
        assert worker.poll() is None  # not signalled
    finally:
        proc.kill()
        proc.wait()
        worker.kill()
        worker.wait()
    if answer and "cannot isolate" in answer.get("error", ""):
        pytest.skip(f"no unprivileged user namespaces here: {answer['error']}")
    assert answer["ok"], answer
    assert answer["output"] == {
        "environ": "FileNotFoundError",
        "cmdline": "FileNotFoundError",
        "signal": "PermissionError",
        "pids": [1],
    }


@pytest.mark.slow
@as_root
def test_in_user_namespace_mode_how_the_code_ended_reaches_the_zygote():
    """The code runs under a parent that only waits (PID 1 of its namespace needs
    one): an exit code and a killing signal are passed on as they were."""
    python = "/usr/bin/python3"
    if not Path(python).exists() or not shutil.which("setpriv"):
        pytest.skip("needs /usr/bin/python3 and setpriv to run a fork server as nobody")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    config = json.dumps({"tmp_bytes": 16 << 20, "unisolated": False})
    proc = subprocess.Popen(
        [*drop, python, "-I", "-S", _ZYGOTE, config],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        cwd="/",
    )
    answers = []
    try:
        for code in ("os._exit(3)", "sys.modules['ctypes'].string_at(0)"):
            _zygote.write_frame(proc.stdin, _request(SANDBOX_ESCAPE + code))
            answers.append(_zygote.read_frame(proc.stdout))
    finally:
        proc.kill()
        proc.wait()
    if answers[0] and "cannot isolate" in answers[0].get("error", ""):
        pytest.skip(f"no unprivileged user namespaces here: {answers[0]['error']}")
    assert [a["error"] for a in answers] == [
        "Code step process ended without a result (exit code 3)",
        "Code step process ended without a result (signal 11)",
    ]
