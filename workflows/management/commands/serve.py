"""`manage.py serve`: the production platform on one machine. granian (RSGI, the
front of iolinker/server.py) with its web processes, and the qcluster, restarted
with back-off when it dies while the web server goes on; the flags that bound
connections (HTTP/1.1 by default, header deadline, backpressure, backlog) and the
open-files limit they need are set here."""

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from iolinker.env import env_int, env_str


def open_files_raise(needed: int) -> int | None:
    """Raise this process's soft limit of open files toward ``needed`` (the web
    processes inherit it): a common soft limit is 1,024, below --backpressure's
    2,048 connections. Returns the limit when even the hard limit is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want if want < needed else None


class Command(BaseCommand):
    help = (
        "Run the platform in the foreground: the web server (granian, through the RSGI "
        "front of iolinker/server.py) and the django-q2 workers (qcluster, restarted "
        "if it dies). Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=env_str("HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=env_int("PORT", 8000, minimum=1, maximum=65535)
        )
        parser.add_argument(
            "--web-workers",
            type=int,
            default=env_int("WEB_WORKERS", _default_web_workers(), minimum=1),
            help="Web server processes (default: one per core; one on SQLite)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=settings.WEB_THREADS,
            help="Request threads per web process (default: the WEB_THREADS setting, 32: "
            "concurrent triggers share commits)",
        )
        parser.add_argument(
            "--http",
            choices=["1", "auto"],
            default=env_str("WEB_HTTP", "1"),
            help="HTTP versions served: 1 (HTTP/1.1, the default) or auto (HTTP/1.1 and "
            "cleartext HTTP/2 with prior knowledge). Under HTTP/1.1 a connection that sends "
            "no request within the header deadline is closed; an idle HTTP/2 connection is "
            "closed only when it stops answering keep-alive pings",
        )
        parser.add_argument(
            "--backpressure",
            type=int,
            default=env_int("WEB_BACKPRESSURE", 2048, minimum=1),
            help="Connections each web process serves at once (default 2048): an idle or "
            "slow one costs an event-loop task, not a thread",
        )
        parser.add_argument(
            "--backlog",
            type=int,
            default=env_int("WEB_BACKLOG", 4096, minimum=128),
            help="Connections the kernel queues before they are accepted (default 4096)",
        )
        parser.add_argument("--no-qcluster", action="store_true", help="Run the web server only")

    def handle(
        self,
        *args,
        host,
        port,
        web_workers,
        threads,
        http,
        backpressure,
        backlog,
        no_qcluster,
        **options,
    ):
        if not 1 <= threads <= 1024:  # what the WEB_THREADS setting accepts
            raise CommandError("--threads must be between 1 and 1024")
        if http not in ("1", "auto"):  # WEB_HTTP bypasses argparse's choices
            raise CommandError("--http (WEB_HTTP) must be 1 or auto")
        if backpressure < 1 or backlog < 128:
            raise CommandError("--backpressure must be at least 1 and --backlog at least 128")
        short = open_files_raise(backpressure + 256)  # each connection is a descriptor
        if short:
            self.stderr.write(
                f"warning: at most {short} open files (ulimit -n): fewer connections "
                f"than --backpressure {backpressure} fit in a web process"
            )
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        # `bootstrap` collects static files here; the server needs the folder either way.
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        # Headers get as long as bodies (granian's limit is 60 s); the body deadline
        # is the front's (IOLINKER_BODY_READ_TIMEOUT), read without holding a thread.
        header_timeout_ms = min(60_000, settings.IOLINKER_BODY_READ_TIMEOUT * 1000)
        commands = {
            "web": [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "rsgi",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(web_workers),
                # HTTP/1.1 only by default: granian's header deadline then also closes
                # a connection that never sends a byte (under --http auto it never
                # does, and ~backpressure such sockets locked every caller out).
                "--http",
                http,
                "--http1-header-read-timeout",
                str(header_timeout_ms),
                "--backpressure",
                str(backpressure),
                "--backlog",
                str(backlog),
                # Over HTTP/2 the header deadline does not apply: an idle connection is
                # closed when a keep-alive ping goes unanswered (a client that answers
                # pings may stay; put a proxy with client timeouts in front for that).
                *(
                    []
                    if http == "1"
                    else [
                        "--http2-keep-alive-interval",
                        str(header_timeout_ms),
                        "--http2-keep-alive-timeout",
                        str(max(1, header_timeout_ms // 1000)),
                    ]
                ),
                "--no-ws",
                "--respawn-failed-workers",
                "--no-access-log",
                "--static-path-route",
                "/" + settings.STATIC_URL.strip("/"),
                "--static-path-mount",
                str(settings.STATIC_ROOT),
                "iolinker.server:application",
            ]
        }
        envs = {
            "web": {
                **os.environ,
                "DB_POOL_SIZE": env_str("WEB_DB_POOL_SIZE", "8"),
                # The one way to give the web processes' settings.WEB_THREADS a value.
                "WEB_THREADS": str(threads),
            },
            "qcluster": {**os.environ, "DB_POOL_SIZE": "0"},
        }
        if not no_qcluster:
            commands["qcluster"] = [sys.executable, manage, "qcluster"]
        # Each child leads its own process group: a terminal's Ctrl-C reaches only this
        # command, which stops the children in order, then clears their groups.
        procs = {name: _start(cmd, envs[name]) for name, cmd in commands.items()}
        self.stdout.write(
            f"iolinker on http://{host}:{port}/ (admin: /admin/) — "
            f"{', '.join(procs)} started; Ctrl-C stops."
        )
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        cluster = _Restarts()
        try:
            while not stopping:
                web = procs["web"]
                if web.poll() is not None:
                    # granian respawns its own workers: its main process gone is final.
                    self.stderr.write(f"web exited with {web.returncode}; stopping")
                    exit_code, stopping = 1, True
                    break
                qcluster = procs.get("qcluster")
                if qcluster is not None and qcluster.poll() is not None:
                    if cluster.restart_at is None:
                        _kill_group(qcluster)  # its workers, if the parent died alone
                        delay = cluster.schedule()
                        self.stderr.write(
                            f"qcluster exited with {qcluster.returncode}; the web server "
                            f"goes on, restarting qcluster in {delay:g} s"
                        )
                    elif time.monotonic() >= cluster.restart_at:
                        procs["qcluster"] = _start(commands["qcluster"], envs["qcluster"])
                        cluster.started()
                        self.stderr.write(f"qcluster restarted (pid {procs['qcluster'].pid})")
                time.sleep(0.2)
        finally:
            _stop_all(procs.values(), grace=20)
        sys.exit(exit_code)


class _Restarts:
    """Back-off for a dying qcluster: 1 s, doubling up to 60 s; a cluster that
    then stays up for 5 minutes starts again from 1 s."""

    FIRST, LONGEST, STABLE = 1.0, 60.0, 300.0

    def __init__(self):
        self.delay = self.FIRST
        self.restart_at: float | None = None
        self.started_at = time.monotonic()

    def schedule(self) -> float:
        if time.monotonic() - self.started_at >= self.STABLE:
            self.delay = self.FIRST
        delay, self.delay = self.delay, min(self.LONGEST, self.delay * 2)
        self.restart_at = time.monotonic() + delay
        return delay

    def started(self) -> None:
        self.restart_at, self.started_at = None, time.monotonic()


def _start(command: list[str], env: dict) -> subprocess.Popen:
    # Each child leads its own process group: a terminal's Ctrl-C reaches only this
    # command, which stops the children in order, then clears their groups.
    return subprocess.Popen(command, process_group=0, env=env)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stop_all(procs, *, grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        _kill_group(proc)  # whatever is left of its group (e.g. the workers of a stuck parent)
        proc.wait()


def _default_web_workers() -> int:
    # SQLite has one writer: two web processes' committers queue on its lock with
    # back-off sleeps (measured p99 1.0-1.7 s at 16-64 connections, vs 63 ms with one).
    if connection.vendor == "sqlite":
        return 1
    return os.cpu_count() or 1
