"""The benchmark's harness: where it runs (paths, the PostgreSQL and Redis it
uses), the platform as a child process (`manage.py serve`, its ports, process
tree and RSS), and each backend's fresh database and Django-side fixture calls."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PY = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
# The database each PostgreSQL backend drops and makes again (one per person when
# several benchmark on one server).
PG_DB = os.environ.get("BENCH_PG_DB", "iolinker_bench")
BACKENDS = ["sqlite", "pg", "pg-redis"]


# --- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def manage(env: dict, *args: str, capture: bool = True) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=capture,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout if capture else ""


def django_shell(env: dict, code: str) -> str:
    return manage(env, "shell", "--no-imports", "-c", code)


class Server:
    def __init__(self, env: dict, port: int, *, workers: bool):
        args = [PY, "manage.py", "serve", "--port", str(port)]
        if not workers:
            args.append("--no-qcluster")
        self.proc = subprocess.Popen(
            args, cwd=BASE_DIR, env=env, start_new_session=True, stdout=subprocess.DEVNULL
        )
        self.port = port
        wait_port(port)
        time.sleep(1.5)  # let workers of both kinds finish importing

    def pids(self) -> dict[str, list[int]]:
        """Web and worker process ids (children of `serve`'s children)."""
        kinds: dict[str, list[int]] = {"web": [], "worker": []}
        for pid in descendants(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # gone meanwhile (e.g. a code step's sandbox)
            if "granian" in cmd:
                kinds["web"].append(pid)
            elif "qcluster" in cmd:
                kinds["worker"].append(pid)
        return kinds

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Max RSS per process kind while load runs."""

    def __init__(self, server: Server):
        self.server = server
        self.max: dict[str, float] = {"web": 0.0, "worker": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.25):
            for kind, pids in self.server.pids().items():
                for pid in pids:
                    self.max[kind] = max(self.max[kind], rss_mb(pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def rss_snapshot(server: Server) -> dict[str, float]:
    return {
        kind: max((rss_mb(p) for p in pids), default=0.0) for kind, pids in server.pids().items()
    }


# --- database and fixtures -------------------------------------------------------


def backend_env(backend: str, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        IOLINKER_VAR_DIR=str(workdir),
        DEBUG="0",
        LOG_LEVEL="WARNING",
        IOLINKER_QUEUE_NAME=f"bench-{os.getpid()}",
    )
    if backend == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB
        if backend == "pg-redis":
            env["REDIS_URL"] = REDIS_URL
    return env


def reset_database(backend: str, env: dict) -> None:
    if backend != "sqlite":
        import psycopg

        with psycopg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
        ) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{PG_DB}"')
    if backend == "pg-redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")


SETUP = """
from bench.fixture import bench_setup
print(bench_setup())
"""

CLEAR = """
from bench.fixture import bench_clear
bench_clear()
"""

MISSING = """
import json
from bench.fixture import bench_missing
print(json.dumps(bench_missing({path!r})))
"""

STATS = """
import json
from bench.fixture import bench_stats
print(json.dumps(bench_stats()))
"""
