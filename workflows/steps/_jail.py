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
creates a user namespace with its network, mount and PID namespaces
(unprivileged user namespaces, Debian's default), forks once so that the code
runs as PID 1 of that PID namespace (its parent only waits and ends as it
ended), mounts a /proc of its own (no other process in it: the workers'
environments and command lines are out of sight; an empty tmpfs where a new
procfs may not be mounted), the same tmpfs, and drops every capability; it
keeps the workers' uid (a user namespace maps only one uid without setuid
helpers): the seccomp filter (_seccomp.py) refuses signals. Where even
that is impossible, code steps fail with an error naming the cause, unless
``IOLINKER_CODE_SANDBOX=unisolated`` lets them run unconfined (as before: a
working directory in the host's /tmp, named after the zygote's pid, and
`nobody` as root); a zygote sweeps such directories of dead zygotes at start.
"""

import contextlib
import ctypes
import os
import resource
import select
import shutil
import signal
import tempfile
import time

if __package__:
    from . import _seccomp
else:  # imported by the zygote run as a script (its directory is on the path)
    import _seccomp

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
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


def _become_pid_one() -> None:
    """After unshare(CLONE_NEWPID): fork; the child goes on as PID 1 of the new
    namespace (it sees no other process), the parent only waits for it and ends
    as it ended (the zygote's waitpid, its kill of the process group and its
    reading of the exit status are unchanged)."""
    alive_r, alive_w = os.pipe()  # EOF for the child: its parent is gone
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if select.select([alive_r], [], [], 0)[0]:  # the parent died before the line above
            os._exit(1)
        os.close(alive_r)
        return
    os.close(alive_r)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump a core
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _fresh_proc() -> None:
    """/proc of the child's PID namespace: no other process's environ, cmdline
    or fds to read. Where a new procfs may not be mounted (a container's masked
    /proc), an empty read-only tmpfs covers /proc instead."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        _mount("proc", "/proc", "proc", flags)
    except OSError:
        _mount("tmpfs", "/proc", "tmpfs", flags | MS_RDONLY, "size=4k,mode=555")


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
            _become_pid_one()  # in a PID namespace of its own, under a waiting parent
            self._private_mounts(network=network)
            _fresh_proc()
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
        _seccomp.install()
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
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | (0 if network else CLONE_NEWNET)
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
