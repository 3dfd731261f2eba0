import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run the platform in the foreground: the web server (granian, WSGI) and the "
        "django-q2 workers (qcluster). Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--web-workers",
            type=int,
            default=int(os.environ.get("WEB_WORKERS", os.cpu_count() or 1)),
            help="Web server processes (default: one per core)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=int(os.environ.get("WEB_THREADS", 8)),
            help="Request threads per web process (default 8)",
        )
        parser.add_argument("--no-qcluster", action="store_true", help="Run the web server only")

    def handle(self, *args, host, port, web_workers, threads, no_qcluster, **options):
        manage = str(Path(settings.BASE_DIR) / "manage.py")
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
        if not no_qcluster:
            commands["qcluster"] = [sys.executable, manage, "qcluster"]
        procs = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
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
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with {proc.returncode}; stopping")
                    exit_code, stopping = 1, True
            time.sleep(0.2)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(exit_code)
