import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from iolinker.env import env_int, env_str


class Command(BaseCommand):
    help = (
        "Run the platform in the foreground: the web server (granian, WSGI) and the "
        "django-q2 workers (qcluster). Ctrl-C stops both."
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
            default=env_int("WEB_THREADS", 32, minimum=1),
            help="Request threads per web process (default 32: concurrent triggers share commits)",
        )
        parser.add_argument("--no-qcluster", action="store_true", help="Run the web server only")

    def handle(self, *args, host, port, web_workers, threads, no_qcluster, **options):
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        # `bootstrap` collects static files here; the server needs the folder either way.
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        commands = {
            "web": [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "wsgi",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(web_workers),
                "--blocking-threads",
                str(threads),
                "--respawn-failed-workers",
                "--no-access-log",
                "--static-path-route",
                "/" + settings.STATIC_URL.strip("/"),
                "--static-path-mount",
                str(settings.STATIC_ROOT),
                "iolinker.wsgi:application",
            ]
        }
        envs = {
            "web": {**os.environ, "DB_POOL_SIZE": env_str("WEB_DB_POOL_SIZE", "8")},
            "qcluster": {**os.environ, "DB_POOL_SIZE": "0"},
        }
        if not no_qcluster:
            commands["qcluster"] = [sys.executable, manage, "qcluster"]
        # Each child leads its own process group: a terminal's Ctrl-C reaches only this
        # command, which stops the children in order, then clears their groups.
        procs = {
            name: subprocess.Popen(cmd, process_group=0, env=envs[name])
            for name, cmd in commands.items()
        }
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
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping")
                        exit_code, stopping = 1, True
                time.sleep(0.2)
        finally:
            _stop_all(procs.values(), grace=20)
        sys.exit(exit_code)


def _stop_all(procs, *, grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Whatever is left of its group (e.g. the workers of a stuck parent).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _default_web_workers() -> int:
    # SQLite has one writer: two web processes' committers queue on its lock with
    # back-off sleeps (measured p99 1.0-1.7 s at 16-64 connections, vs 63 ms with one).
    if connection.vendor == "sqlite":
        return 1
    return os.cpu_count() or 1
