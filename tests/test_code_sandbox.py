"""The `code` step sandbox: which modules steps import, and what confines them
(no network, a private bounded tmp, a uid per sandbox, nothing left behind).

Run as CI runs them: as root, so sandboxes drop to their own uid (the Python
here lives under /root, which that uid cannot read: issue 19.1 shows up here).
"""

import os
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue
from tests.support.sandbox import SANDBOX_ESCAPE
from tests.support.servers import RecordingServer
from workflows import steps as step_library
from workflows.models import Execution, ExecutionStatus, Workflow
from workflows.selectors import execution_status
from workflows.steps import _imports

pytestmark = pytest.mark.django_db
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a uid per sandbox needs root workers")


def run(steps, body=None) -> Execution:
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", steps)
    execution = execution_start(workflow=workflow, trigger_input={"body": body or {}})
    assert drain_queue() == 1
    execution.refresh_from_db()
    return execution


def code_step(code: str, **config) -> list:
    return [("c", "code", {"code": code, **config})]


# --- what a step may import ------------------------------------------------------


def test_the_common_standard_library_imports_under_the_privilege_drop():
    code = (
        "import datetime, hashlib, json, re, math, decimal, uuid, base64, itertools, collections\n"
        "import zoneinfo, statistics, fractions, hmac, secrets, gzip, csv, io, textwrap\n"
        "paris = zoneinfo.ZoneInfo('Europe/Paris')\n"
        "return {\n"
        "    'date': datetime.datetime.strptime('2026-06-01', '%Y-%m-%d').isoformat(),\n"
        "    'offset': str(datetime.datetime(2026, 6, 1, tzinfo=paris).utcoffset()),\n"
        "    'sha': hashlib.sha256(b'x').hexdigest()[:8],\n"
        "    'json': json.loads('[1]'), 're': re.sub('a', 'b', 'aa'), 'pi': math.floor(math.pi),\n"
        "    'dec': str(decimal.Decimal('1.10') + 1), 'uuid': len(str(uuid.uuid4())),\n"
        "    'b64': base64.b64encode(b'hi').decode(),\n"
        "    'perm': len(list(itertools.permutations('abc'))),\n"
        "    'count': collections.Counter('aab')['a'], 'mean': statistics.mean([1, 2, 3]),\n"
        "    'utf16': len('é'.encode('utf-16')), 'gz': len(gzip.decompress(gzip.compress(b'x'))),\n"
        "}"
    )
    execution = run(code_step(code))
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {
        "date": "2026-06-01T00:00:00",
        "offset": "2:00:00",
        "sha": "2d711642",
        "json": [1],
        "re": "bb",
        "pi": 3,
        "dec": "2.10",
        "uuid": 36,
        "b64": "aGk=",
        "perm": 6,
        "count": 2,
        "mean": 2,
        "utf16": 4,
        "gz": 1,
    }


def test_every_module_of_the_documented_list_imports():
    code = (
        "failed = []\n"
        "for name in data['body']['names']:\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as exc:\n"
        "        failed.append(f'{name}: {exc}')\n"
        "return failed"
    )
    names = [name for name in _imports.ALLOWED if name not in ("lzma", "bz2", "tomllib")]
    execution = run(code_step(code), body={"names": names})
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == []


def test_a_module_outside_the_list_fails_the_step_with_a_clear_error():
    execution = run(code_step("import socket\nreturn 1"))
    assert execution.status == ExecutionStatus.FAILED
    assert (
        "ModuleNotFoundError: module 'socket' is not available in code steps; available: abc,"
        in execution.error
    )
    assert "datetime" in execution.error and "(line 1)" in execution.error


def test_from_imports_submodules_and_dunder_import_follow_one_rule():
    code = (
        "def attempt(source):\n"
        "    try:\n"
        "        exec(source, {'__name__': 'step'})\n"
        "        return 'ok'\n"
        "    except ImportError as exc:\n"
        "        return str(exc).split(';')[0]\n"
        "return {s: attempt(s) for s in data['body']['sources']}"
    )
    allowed = [
        "import urllib.parse",
        "from urllib.parse import quote",
        "from collections import abc",
        "import collections.abc",
        "__import__('collections.abc')",
        "from xml.etree import ElementTree",
        "from hashlib import sha256",
    ]
    refused = {
        "import os": "module 'os' is not available in code steps",
        "import os.path": "module 'os.path' is not available in code steps",
        "from os import path": "module 'os' is not available in code steps",
        "from urllib import request": "module 'urllib.request' is not available in code steps",
        "import urllib.request": "module 'urllib.request' is not available in code steps",
        "__import__('subprocess')": "module 'subprocess' is not available in code steps",
        "__import__('ctypes')": "module 'ctypes' is not available in code steps",
        "from random import _os": "module 'random._os' is not available in code steps",
        "import importlib": "module 'importlib' is not available in code steps",
    }
    execution = run(code_step(code), body={"sources": allowed + list(refused)})
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {**dict.fromkeys(allowed, "ok"), **refused}


# --- network -------------------------------------------------------------------

REACH = (
    SANDBOX_ESCAPE + "import struct\n"
    "S, ct = sys.modules['socket'], sys.modules['ctypes']\n"
    "libc = ct.CDLL(None, use_errno=True)\n"
    "out = {}\n"
    "for port in data['body']['ports']:\n"
    "    try:\n"
    "        S.create_connection(('127.0.0.1', port), timeout=2).close()\n"
    "        out[f'socket {port}'] = 'connected'\n"
    "    except OSError as exc:\n"
    "        out[f'socket {port}'] = exc.errno\n"
    "    fd = libc.socket(2, 1, 0)\n"
    "    addr = struct.pack('=H', 2) + struct.pack('!H', port) + bytes([127, 0, 0, 1]) + bytes(8)\n"
    "    rc = libc.connect(fd, addr, 16)\n"
    "    out[f'ctypes {port}'] = 'connected' if rc == 0 else ct.get_errno()\n"
    "for path in data['body']['unix']:\n"
    "    try:\n"
    "        s = S.socket(S.AF_UNIX)\n"
    "        s.connect(path)\n"
    "        out[path] = 'connected'\n"
    "    except OSError as exc:\n"
    "        out[path] = exc.errno\n"
    "return out"
)


def test_a_code_step_reaches_no_local_service_even_through_ctypes():
    listener = socket.create_server(("127.0.0.1", 0))
    own_port = listener.getsockname()[1]
    socket.create_connection(("127.0.0.1", own_port), timeout=2).close()  # it does listen
    unix = [
        p
        for p in ("/var/run/postgresql/.s.PGSQL.5432", "/run/mysqld/mysqld.sock")
        if Path(p).exists()
    ]
    try:
        body = {"ports": [own_port, 5432, 6379], "unix": unix}
        execution = run(code_step(REACH), body=body)
    finally:
        listener.close()
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert len(execution.output) == 6 + len(unix)
    assert "connected" not in execution.output.values(), execution.output
    # ctypes is not importable (the test above reaches it around the guard).
    refused = run(code_step("import ctypes"))
    assert "module 'ctypes' is not available" in refused.error


def test_a_step_with_network_true_reaches_a_local_server():
    code = "import urllib.request\nreturn urllib.request.urlopen(data['body']['url']).status"
    with RecordingServer() as server:
        allowed = run(code_step(code, network=True), body={"url": server.url})
        refused = run(code_step(code), body={"url": server.url})
    assert allowed.status == ExecutionStatus.SUCCEEDED, allowed.error
    assert allowed.output == 200 and len(server.requests) == 1
    assert "module 'urllib.request' is not available" in refused.error


def test_network_is_a_literal_boolean_no_template_can_turn_on():
    code_type = step_library.get("code")
    assert code_type.validate({"code": "return 1", "network": True}) == []
    assert code_type.validate({"code": "return 1", "network": "{{ body.net }}"})
    assert "network" in code_type.literal_keys


# --- a private, bounded tmp ------------------------------------------------------

FILL = (
    SANDBOX_ESCAPE + "import errno\n"
    "out = {}\n"
    "for place in ('/tmp', '/var/tmp', '/dev/shm'):\n"
    "    written, error, names = 0, None, []\n"
    "    try:\n"
    "        while written < 200:\n"
    "            name = f\"{place}/{data['body']['tag']}-{written}\"\n"
    "            names.append(name)\n"
    "            with open(name, 'wb') as f:\n"
    "                f.write(bytes(8 << 20))\n"
    "            written += 8\n"
    "    except OSError as exc:\n"
    "        error = errno.errorcode.get(exc.errno)\n"
    "    for name in names:\n"
    "        try:\n"
    "            os.unlink(name)\n"
    "        except OSError:\n"
    "            pass\n"
    "    out[place] = [written, error]\n"
    "return {'fill': out, 'left': sorted(os.listdir('/tmp'))}"
)


def test_filling_tmp_var_tmp_and_dev_shm_stops_at_the_bound_and_leaves_nothing(settings):
    settings.IOLINKER_CODE_TMP_MB = 64
    tag = f"fill-{os.getpid()}-{time.time_ns()}"
    execution = run(code_step(FILL, memory_mb=512, timeout=60), body={"tag": tag})
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    for place, (written, error) in execution.output["fill"].items():
        assert error == "ENOSPC", (place, written, error)
        assert written <= 64, (place, written)
    for place in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not [n for n in os.listdir(place) if n.startswith(tag)], place


def test_each_run_of_a_session_starts_with_empty_tmp_dirs():
    code = (
        SANDBOX_ESCAPE
        + "found = sorted(os.listdir('/tmp')) + os.listdir('/var/tmp') + os.listdir('/dev/shm')\n"
        "for place in ('/tmp', '/var/tmp', '/dev/shm'):\n"
        "    open(place + '/left-over', 'w').write('x')\n"
        "return [n for n in found if not n.startswith(('iolinker-code-', '.'))]"
    )
    workflow = make_workflow("session-tmp", code_step(code))
    runs = [execution_start(workflow=workflow, trigger_input={"body": {}}) for _ in range(3)]
    assert drain_queue() == 3
    for execution in runs:
        execution.refresh_from_db()
        assert (execution.status, execution.output) == (ExecutionStatus.SUCCEEDED, []), (
            execution.error
        )


SECCOMP_PROBE = (
    SANDBOX_ESCAPE + "ct = sys.modules['ctypes']\n"
    "libc = ct.CDLL(None, use_errno=True)\n"
    "nr = data['nr']\n"
    "def errno_of(result):\n"
    "    return ct.get_errno() if result == -1 else 'allowed'\n"
    "def call(name, *args):\n"
    "    return errno_of(libc.syscall(ct.c_long(nr[name]), *[ct.c_long(a) for a in args]))\n"
    "me = os.getpid()\n"
    "found = {\n"
    "    'user namespace': errno_of(libc.unshare(0x10000000)),\n"
    "    'pid namespace': errno_of(libc.unshare(0x20000000)),\n"
    "    'setns': call('setns', 0, 0),\n"
    "    'mount': errno_of(libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None)),\n"
    "    'ptrace': errno_of(libc.ptrace(16, os.getppid(), None, None)),\n"
    "    'kill': errno_of(libc.kill(me, 0)),\n"
    "    'rt_sigqueueinfo': call('rt_sigqueueinfo', me, 0, 0),\n"
    "    'rt_tgsigqueueinfo': call('rt_tgsigqueueinfo', me, me, 0, 0),\n"
    "    'pidfd_open': call('pidfd_open', me, 0),\n"
    "    'pidfd_getfd': call('pidfd_getfd', 0, 0, 0),\n"
    "    'process_vm_readv': call('process_vm_readv', me, 0, 0, 0, 0, 0),\n"
    "    'process_vm_writev': call('process_vm_writev', me, 0, 0, 0, 0, 0),\n"
    # clone with a namespace flag (and SIGCHLD): refused whatever the flag
    "    'clone new user': call('clone', 0x10000000 | 17, 0, 0, 0, 0),\n"
    "    'clone new net': call('clone', 0x40000000 | 17, 0, 0, 0, 0),\n"
    "    'clone new pid': call('clone', 0x20000000 | 17, 0, 0, 0, 0),\n"
    "    'clone3': call('clone3', 0, 0),\n"
    "}\n"
    # clone without such a flag reaches the kernel (and RLIMIT_NPROC 0: EAGAIN)
    "found['clone plain'] = call('clone', 17, 0, 0, 0, 0)\n"
    "return found"
)


# The kernel's numbers (asm/unistd_64.h; aarch64's asm-generic/unistd.h), not the jail's.
_COMMON_NRS = {"pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438}
SYSCALL_NRS = {
    "x86_64": {"setns": 308, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "clone": 56,
               "process_vm_readv": 310, "process_vm_writev": 311, **_COMMON_NRS},
    "aarch64": {"setns": 268, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "clone": 220,
                "process_vm_readv": 270, "process_vm_writev": 271, **_COMMON_NRS},
}  # fmt: skip


def test_a_code_step_cannot_make_namespaces_mount_trace_or_signal():
    machine = os.uname().machine
    if machine not in SYSCALL_NRS:
        pytest.skip(f"no seccomp filter on {machine}")
    numbers = SYSCALL_NRS[machine]
    execution = run([("c", "code", {"code": SECCOMP_PROBE.replace("data['nr']", repr(numbers))})])
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    eperm = [
        "user namespace", "pid namespace", "setns", "mount", "ptrace", "kill",
        "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_getfd",
        "process_vm_readv", "process_vm_writev", "clone new user", "clone new net",
        "clone new pid",
    ]  # fmt: skip
    assert execution.output == {**dict.fromkeys(eperm, 1), "clone3": 38, "clone plain": 11}


# --- what callers see of a failure ---------------------------------------------


def test_a_failed_code_step_tells_callers_the_exception_and_line_not_the_traceback():
    execution = run(code_step("x = 1\ny = 0\nreturn x / y"))
    assert execution.status == ExecutionStatus.FAILED
    expected = "Step 'c' (code) failed: ZeroDivisionError: division by zero (line 3)"
    assert execution.error == expected
    assert execution_status(execution)["msg"] == expected
    step_run = execution.step_runs.get()
    assert step_run.error == "ZeroDivisionError: division by zero (line 3)"
    assert "Traceback (most recent call last)" in step_run.logs
    assert 'File "<code step>", line 3, in main' in step_run.logs
