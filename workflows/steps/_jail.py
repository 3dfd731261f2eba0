"""What confines a `code` sandbox child beyond rlimits (stdlib only; used by _zygote.py).

Decided once per zygote (``Jail``), applied in each session child before any of
the step's code runs (``Jail.confine``), so a child serving 256 runs of a step
pays for it once:

* **No network.** As root, the zygote opens a handle on its network namespace,
  then moves itself into a new one with only a loopback that is down: its
  children are born there (nothing to set up per child). A step with
  ``network: true`` joins the workers' namespace again (``setns``), before
  dropping its privileges.
* **A private, size-bounded tmp.** Each child gets its own mount namespace with
  one tmpfs of ``tmp_bytes`` on /tmp, shared with /var/tmp and /dev/shm (bind
  mounts of two hidden directories in it), and its working directory in it.
  Without network, /run (and /var/run) are covered by an empty read-only tmpfs:
  the Unix sockets there (PostgreSQL's, with trust auth) are out of reach. The
  tmpfs goes with the child's namespace when it ends, however it ends: nothing
  is left on the host, even when a worker is SIGKILLed.
* **A uid of its own.** As root, a child drops to ``UID_BASE + its pid`` (uid
  and gid; no supplementary groups): no two live sandboxes share a uid, so none
  can signal or trace another, and none shares a uid with any other process.

Not root (or root without CAP_SYS_ADMIN, as in a default container, or root of
a user namespace that maps few uids): a child
creates a user namespace with its network and mount namespaces (unprivileged
user namespaces, Debian's default), mounts the same tmpfs, and drops every
capability; it keeps the workers' uid (a user namespace maps only one uid
without setuid helpers), so it could signal processes of that uid. Where even
that is impossible, code steps fail with an error naming the cause, unless
``IOLINKER_CODE_SANDBOX=unisolated`` lets them run unconfined (as before: a
working directory in the host's /tmp, named after the zygote's pid, and
`nobody` as root); a zygote sweeps such directories of dead zygotes at start.
"""

import contextlib
import ctypes
import os
import shutil
import tempfile
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
# Sandbox uids are UID_BASE + pid: pids are below 2**22 (the kernel's pid_max
# limit), so they stay under 2**31 and far above any account's uid.
UID_BASE = 2_000_000_000
NOBODY = 65534
PREFIX = "iolinker-code-"
# Directories of the format before pids were part of the name: stale after this.
_LEGACY_STALE_S = 3600
# In a child's own mount namespace (never the host's): where its tmpfs goes, and
# the directories in it that /var/tmp and /dev/shm are bound to.
_TMP = "/tmp"  # noqa: S108
_SHARED = ((".var-tmp", "/var/tmp"), (".shm", "/dev/shm"))  # noqa: S108
_LIBC = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, options=None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    result = _LIBC.mount(encode(source), encode(target), encode(fstype), flags, encode(options))
    _check(result, f"mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _drop_capabilities() -> None:
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    _check(_LIBC.capset(ctypes.byref(header), data), "capset")


class Jail:
    """How this zygote's children are confined: ``mode`` is ``root`` (namespaces
    and a uid per child), ``userns`` (namespaces in a user namespace, the
    workers' uid) or ``none`` (see ``problem``)."""

    def __init__(self, *, tmp_bytes: int, allow_unisolated: bool):
        self.tmp_bytes = tmp_bytes
        self.allow_unisolated = allow_unisolated
        self.host_net: int | None = None
        self.mode, self.problem = "none", ""
        if os.geteuid() == 0 and _all_uids_mapped():
            try:
                self.host_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                _check(_LIBC.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
                self.mode = "root"
                return
            except OSError as exc:
                self.problem = str(exc)
                if self.host_net is not None:
                    os.close(self.host_net)
                    self.host_net = None
        problem = self._probe_userns()
        if problem:
            self.problem = f"{self.problem}; {problem}" if self.problem else problem
        else:
            self.mode, self.problem = "userns", ""

    def _probe_userns(self) -> str:
        """Try what a child will do, in a throwaway child; '' if it works."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                self._enter_userns(network=False)
                self._private_mounts(network=False)
                message = b""
            except OSError as exc:
                message = str(exc).encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as answer:
            message = answer.read().decode()
        os.waitpid(pid, 0)
        return message

    def refusal(self) -> str:
        return (
            "The code sandbox cannot isolate code steps on this machine "
            f"({self.problem}): run the workers as root, allow unprivileged user "
            "namespaces, or set IOLINKER_CODE_SANDBOX=unisolated to run code steps "
            "without network and file isolation"
        )

    @property
    def usable(self) -> bool:
        return self.mode != "none" or self.allow_unisolated

    def host_workdir(self) -> str | None:
        """For ``none`` mode, a working directory on the host (made by the zygote,
        removed when the child ends or, after a crash, by the next zygote)."""
        if self.mode != "none":
            return None
        workdir = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        if _may_drop_to_nobody():
            try:
                os.chown(workdir, NOBODY, NOBODY)
            except OSError:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        return workdir

    def confine(self, *, network: bool, host_workdir: str | None) -> str:
        """In a new child (single-threaded, still privileged): isolate it and
        drop its privileges; the working directory to use."""
        if self.mode == "root":
            if network:
                _check(_LIBC.setns(self.host_net, CLONE_NEWNET), "setns(network)")
            os.close(self.host_net)
            _check(_LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            self._private_mounts(network=network)
            uid = UID_BASE + os.getpid()
            workdir = self._workdir(uid)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        elif self.mode == "userns":
            self._enter_userns(network=network)
            self._private_mounts(network=network)
            workdir = self._workdir(os.getuid())
            _drop_capabilities()
        else:
            workdir = host_workdir
            if _may_drop_to_nobody():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
        # exec cannot gain privileges (setuid programs, file capabilities).
        _check(_LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _forbid_syscalls()
        return workdir

    def clear(self, workdir: str) -> None:
        """Between two runs of a session: empty tmp, /var/tmp and /dev/shm (they
        are the child's own; the host's are never touched)."""
        if self.mode == "none":
            return
        keep = {os.path.basename(workdir)} | {name for name, _ in _SHARED}
        for directory, skip in [(_TMP, keep)] + [(f"{_TMP}/{n}", ()) for n, _ in _SHARED]:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name in skip:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def _enter_userns(self, *, network: bool) -> None:
        uid, gid = os.geteuid(), os.getegid()
        flags = CLONE_NEWUSER | CLONE_NEWNS | (0 if network else CLONE_NEWNET)
        _check(_LIBC.unshare(flags), "unshare(CLONE_NEWUSER)")
        # Our /proc/self files belong to root while we are not dumpable (the
        # zygote is not, so that children cannot read it): dumpable for the
        # three writes, before any of the step's code exists.
        _LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
        for name, line in maps:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(line)
        _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)

    def _private_mounts(self, *, network: bool) -> None:
        _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing propagates either way
        _mount("tmpfs", _TMP, "tmpfs", MS_NOSUID | MS_NODEV, f"size={self.tmp_bytes},mode=1777")
        for name, target in _SHARED:
            if os.path.isdir(target) and not os.path.islink(target):
                os.mkdir(f"{_TMP}/{name}")
                os.chmod(f"{_TMP}/{name}", 0o1777)  # noqa: S103 - what /tmp is, sticky
                _mount(f"{_TMP}/{name}", target, None, MS_BIND)
        if not network:  # a step with the network keeps /run (e.g. its resolv.conf)
            for target in ("/run", "/var/run"):
                if os.path.isdir(target) and not os.path.islink(target):
                    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
                    _mount("tmpfs", target, "tmpfs", flags, "size=4k,mode=755")

    @staticmethod
    def _workdir(uid: int) -> str:
        workdir = f"{_TMP}/{PREFIX}{os.getpid()}"
        os.mkdir(workdir, 0o700)
        os.chown(workdir, uid, -1)
        return workdir


# Refused (EPERM) to sandbox children by a seccomp filter: new namespaces (a user
# namespace would let them mount tmpfs past their bound) and mounts, tracing and
# reading other processes, and signals (user-namespace mode shares the workers' uid).
_FORBIDDEN = ("unshare", "setns", "mount", "ptrace", "process_vm_readv", "process_vm_writev",
              "kill", "tkill", "tgkill", "pidfd_send_signal", "open_tree", "move_mount",
              "fsopen", "fsconfig", "fsmount")  # fmt: skip
_NEW_MOUNT_API = {"pidfd_send_signal": 424, "open_tree": 428, "move_mount": 429, "fsopen": 430}
_NEW_MOUNT_API |= {"fsconfig": 431, "fsmount": 432}
_SYSCALLS = {
    "x86_64": (0xC000003E, {"unshare": 272, "setns": 308, "mount": 165, "ptrace": 101,
               "process_vm_readv": 310, "process_vm_writev": 311, "kill": 62, "tkill": 200,
               "tgkill": 234, **_NEW_MOUNT_API}),
    "aarch64": (0xC00000B7, {"unshare": 97, "setns": 268, "mount": 40, "ptrace": 117,
                "process_vm_readv": 270, "process_vm_writev": 271, "kill": 129, "tkill": 130,
                "tgkill": 131, **_NEW_MOUNT_API}),
}  # fmt: skip
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte)]
    _fields_ += [("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _forbid_syscalls() -> None:
    """Install the seccomp filter (x86_64 and aarch64; elsewhere nothing)."""
    arch = _SYSCALLS.get(os.uname().machine)
    if arch is None:
        return
    audit_arch, numbers = arch
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    nrs = [numbers[name] for name in _FORBIDDEN]
    program = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, audit_arch),
        (ret, 0, 0, deny),  # another ABI (e.g. 32-bit calls): refuse everything
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
        (jge, len(nrs) + 1, 0, 0x40000000),  # x32 syscalls: refuse
    ]
    program += [(jeq, len(nrs) - i, 0, nr) for i, nr in enumerate(nrs)]
    program += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    filters = (_SockFilter * len(program))(*[_SockFilter(*insn) for insn in program])
    fprog = _SockFprog(len(program), filters)
    _check(
        _LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def sweep_stale(directory: str | None = None) -> int:
    """Remove working directories left on the host by zygotes that died (a
    SIGKILLed worker's zygote never removes its child's); how many went."""
    directory = directory or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        owner = entry.name[len(PREFIX) :].split("-", 1)[0]
        try:
            if owner.isdigit() and "-" in entry.name[len(PREFIX) :]:
                if _is_zygote(int(owner)):
                    continue
            elif time.time() - entry.stat(follow_symlinks=False).st_mtime < _LEGACY_STALE_S:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def _may_drop_to_nobody() -> bool:
    return os.geteuid() == 0 and _all_uids_mapped()


def _all_uids_mapped() -> bool:
    """Not in a user namespace with a partial uid map (a rootless container's
    root): there a sandbox's own uid would not exist."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _is_zygote(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"_zygote.py" in f.read()
    except OSError:
        return False
