"""The seccomp filter of a `code` sandbox child (stdlib only; installed by
_jail.Jail.confine after the child is isolated and before any of the step's
code runs; x86_64 and aarch64, elsewhere nothing).

What it refuses is listed once, below, and docs/reliability.md says the same.
"""

import ctypes
import os

_LIBC = ctypes.CDLL(None, use_errno=True)
# Every CLONE_NEW* flag clone() takes (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET; CLONE_NEWTIME's bit is part of clone()'s exit signal byte).
_CLONE_NEW_FLAGS = 0x7E020000

# Refused to sandbox children by a seccomp filter (EPERM unless said):
# * new namespaces: unshare, setns, and clone with any CLONE_NEW* flag (a user
#   namespace would let them mount tmpfs past their bound); clone3 answers
#   ENOSYS, as on a kernel without it, so glibc falls back to clone (threads and
#   fork still work; clone3's flags live in memory a filter cannot read);
# * mounts: mount and the new mount API (open_tree, move_mount, fsopen,
#   fsconfig, fsmount);
# * tracing and reading other processes: ptrace, process_vm_readv/writev,
#   pidfd_open and pidfd_getfd (taking another process's file descriptors);
# * signals (user-namespace mode shares the workers' uid): kill, tkill, tgkill,
#   rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_send_signal;
# * memory outside the step's bounds: memfd_create and memfd_secret (anonymous
#   files are neither in the address space RLIMIT_AS caps nor in the private
#   tmpfs: 100 of them held 1.5 GB from a 256 MB step, attacker pass F3);
# * io_uring (io_uring_setup, io_uring_enter, io_uring_register: its operations
#   bypass this filter, which sees syscall numbers only);
# * the kernel keyring: keyctl, add_key, request_key (kernel memory, shared by uid).
# Any other ABI (32-bit or x32 calls) is refused whole.
_FORBIDDEN = ("unshare", "setns", "mount", "ptrace", "process_vm_readv", "process_vm_writev",
              "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
              "pidfd_send_signal", "pidfd_open", "pidfd_getfd", "open_tree", "move_mount",
              "fsopen", "fsconfig", "fsmount", "memfd_create", "memfd_secret",
              "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
              "request_key")  # fmt: skip
# Numbered alike on both (the syscalls added since 4.20 share one table).
_COMMON = {"pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
           "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
           "fsconfig": 431, "fsmount": 432, "pidfd_open": 434, "clone3": 435,
           "pidfd_getfd": 438, "memfd_secret": 447}  # fmt: skip
_SYSCALLS = {
    "x86_64": (0xC000003E, {"unshare": 272, "setns": 308, "mount": 165, "ptrace": 101,
               "process_vm_readv": 310, "process_vm_writev": 311, "kill": 62, "tkill": 200,
               "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "clone": 56,
               "memfd_create": 319, "keyctl": 250, "add_key": 248, "request_key": 249,
               **_COMMON}),
    "aarch64": (0xC00000B7, {"unshare": 97, "setns": 268, "mount": 40, "ptrace": 117,
                "process_vm_readv": 270, "process_vm_writev": 271, "kill": 129, "tkill": 130,
                "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "clone": 220,
                "memfd_create": 279, "keyctl": 219, "add_key": 217, "request_key": 218,
                **_COMMON}),
}  # fmt: skip
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
EPERM, ENOSYS = 1, 38


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte)]
    _fields_ += [("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _program(audit_arch: int, numbers: dict) -> list[tuple]:
    """The BPF program: (code, jt, jf, k), jumps given as labels and resolved."""
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|..|K
    allow, errno = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO
    # seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low 32 bits: little-endian)
    program = [
        (ld_abs, 0, 0, 4),
        (jeq, 0, "deny", audit_arch),
        (ld_abs, 0, 0, 0),
        (jge, "deny", 0, 0x40000000),  # x32 syscalls
        (jeq, "enosys", 0, numbers["clone3"]),
        (jeq, "clone", 0, numbers["clone"]),
        *[(jeq, "deny", 0, numbers[name]) for name in _FORBIDDEN],
        (ret, 0, 0, allow),
        "clone",
        (ld_abs, 0, 0, 16),
        (jset, "deny", 0, _CLONE_NEW_FLAGS),
        (ret, 0, 0, allow),
        "enosys",
        (ret, 0, 0, errno | ENOSYS),
        "deny",
        (ret, 0, 0, errno | EPERM),
    ]
    labels, at = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = at
        else:
            at += 1
    instructions = [item for item in program if not isinstance(item, str)]

    def offset(target, index):
        return labels[target] - index - 1 if isinstance(target, str) else target

    return [
        (code, offset(jt, i), offset(jf, i), k) for i, (code, jt, jf, k) in enumerate(instructions)
    ]


def install() -> None:
    """Install the seccomp filter (x86_64 and aarch64; elsewhere nothing)."""
    arch = _SYSCALLS.get(os.uname().machine)
    if arch is None:
        return
    program = _program(*arch)
    filters = (_SockFilter * len(program))(*[_SockFilter(*insn) for insn in program])
    fprog = _SockFprog(len(program), filters)
    _check(
        _LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
