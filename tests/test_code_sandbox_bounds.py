"""What a `code` step cannot hold outside its memory and tmp bounds: anonymous
memory files (memfd_create, memfd_secret), io_uring and the kernel keyring are
refused by the seccomp filter (workflows/steps/_seccomp.py), and a child may hold
only `_zygote.NOFILE` descriptors at once (attacker pass F3: 100 memfds of 15 MB
held 1.5 GB of host memory from a step bounded to 256 MB).
"""

import os

import pytest

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue
from tests.support.sandbox import SANDBOX_ESCAPE
from workflows.models import Execution, ExecutionStatus, Workflow
from workflows.steps import _zygote

pytestmark = pytest.mark.django_db

# The kernel's numbers (asm/unistd_64.h; aarch64's asm-generic/unistd.h), not the jail's.
_COMMON_NRS = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
               "memfd_secret": 447}  # fmt: skip
SYSCALL_NRS = {
    "x86_64": {"memfd_create": 319, "keyctl": 250, "add_key": 248, "request_key": 249,
               **_COMMON_NRS},
    "aarch64": {"memfd_create": 279, "keyctl": 219, "add_key": 217, "request_key": 218,
                **_COMMON_NRS},
}  # fmt: skip


def run_code(code: str) -> Execution:
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", [("c", "code", {"code": code})])
    execution = execution_start(workflow=workflow, trigger_input={"body": {}})
    assert drain_queue() == 1
    execution.refresh_from_db()
    return execution


def test_a_code_step_cannot_hold_memory_in_anonymous_files():
    # The attacker's code (F3), through os and through the raw syscall.
    execution = run_code(
        SANDBOX_ESCAPE + "held = []\n"
        "try:\n"
        "    for i in range(100):\n"
        "        fd = os.memfd_create('x%d' % i)\n"
        "        for _ in range(15):\n"
        "            os.write(fd, b'1' * (1 << 20))\n"
        "        held.append(fd)\n"
        "except OSError as exc:\n"
        "    return {'held_MB': 15 * len(held), 'errno': exc.errno}\n"
        "return {'held_MB': 15 * len(held)}\n"
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"held_MB": 0, "errno": 1}  # EPERM at the first


def test_a_code_step_cannot_use_io_uring_or_the_kernel_keyring():
    machine = os.uname().machine
    if machine not in SYSCALL_NRS:
        pytest.skip(f"no seccomp filter on {machine}")
    execution = run_code(
        SANDBOX_ESCAPE + "ct = sys.modules['ctypes']\n"
        "libc = ct.CDLL(None, use_errno=True)\n"
        f"nr = {SYSCALL_NRS[machine]!r}\n"
        "params = ct.create_string_buffer(120)\n"  # struct io_uring_params, zeroed
        "args = {'io_uring_setup': (8, ct.addressof(params)),\n"
        "        'keyctl': (0, -3, 0),\n"  # KEYCTL_GET_KEYRING_ID of the session keyring
        "        'add_key': (ct.addressof(ct.c_char_p(b'user')), 0, 0, 0, -3)}\n"
        "found = {}\n"
        "for name, number in nr.items():\n"
        "    result = libc.syscall(ct.c_long(number),\n"
        "                          *[ct.c_long(a) for a in args.get(name, (0, 0, 0, 0))])\n"
        "    found[name] = ct.get_errno() if result == -1 else 'allowed'\n"
        "return found\n"
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == dict.fromkeys(SYSCALL_NRS[machine], 1)  # EPERM each


def test_a_code_step_holds_at_most_nofile_descriptors():
    execution = run_code(
        SANDBOX_ESCAPE + "opened = []\n"
        "try:\n"
        "    for _ in range(1000):\n"
        "        opened.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as exc:\n"
        "    return {'opened': len(opened), 'errno': exc.errno}\n"
        "return {'opened': len(opened)}\n"
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output["errno"] == 24  # EMFILE
    assert 0 < execution.output["opened"] < _zygote.NOFILE
