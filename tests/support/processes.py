"""Real child processes on the test database: the platform (`manage.py serve`)
and a qcluster, their environment, ports and process trees (pids, RSS)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from tests.support.environment import BASE_DIR


def test_database_url() -> str:
    """The URL a child process uses to reach this test run's database."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return "sqlite:///" + str(Path(s["NAME"]).resolve())
    user = s.get("USER") or ""
    auth = user + (":" + s["PASSWORD"] if s.get("PASSWORD") else "") + ("@" if user else "")
    return f"postgres://{auth}{s.get('HOST') or 'localhost'}:{s.get('PORT') or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"DATABASE_URL": test_database_url(), "LOG_LEVEL": "WARNING", **extra})
    return env


class Platform:
    """The web server and a qcluster as real child processes on the test database."""

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        workers: int = 2,
        env: dict | None = None,
        qcluster: bool = True,
    ):
        self.qcluster = qcluster
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        extra = {"IOLINKER_WORKERS": str(workers), "IOLINKER_QUEUE_NAME": f"test-{self.port}"}
        # The platform's steps and callbacks call local test servers.
        extra["IOLINKER_OUTBOUND_ALLOW"] = "127.0.0.1/32"
        extra.update(env or {})
        if redis_url:
            extra["REDIS_URL"] = redis_url
        self.env = child_env(**extra)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Platform":
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port), "--web-workers", "1"]
            + ([] if self.qcluster else ["--no-qcluster"]),
            cwd=BASE_DIR,
            env=self.env,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise
        return self

    @property
    def queue_name(self) -> str:
        return self.env["IOLINKER_QUEUE_NAME"]

    def kill(self) -> None:
        """SIGKILL the web server, the cluster and its workers at once (`serve`
        starts each in its own process group)."""
        for pid in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 9)
        os.killpg(self.proc.pid, 9)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def web_worker_pids(self) -> list[int]:
        """The granian worker processes (children of granian's main process)."""
        (granian,) = [p for p in _children(self.proc.pid) if b"granian" in _cmdline(p)]
        return _children(granian)

    def pids(self) -> dict[str, list[int]]:
        """Every process of the platform by kind: web (granian and its workers)
        and cluster (qcluster and its workers)."""
        kinds: dict[str, list[int]] = {"web": [], "cluster": []}
        for child in _children(self.proc.pid):
            kind = "web" if b"granian" in _cmdline(child) else "cluster"
            kinds[kind] += [child, *_descendants(child)]
        return kinds


class Cluster:
    """A `manage.py qcluster` on a platform's environment, in its own process
    group: SIGKILL reaches the cluster and all its workers at once."""

    def __init__(self, env: dict):
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Cluster":
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env={**self.env, "DB_POOL_SIZE": "0"},  # as `serve` starts it
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        if self.proc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return children
