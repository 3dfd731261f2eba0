"""Test helpers: the real queue drained in-process, real processes for end-to-end tests."""

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string

BASE_DIR = Path(__file__).resolve().parent.parent
# Prepended to a code step's code: reaches `os` and `sys` around the import guard
# (which is not the security boundary, see workflows/steps/_imports.py), so tests
# prove the operating system's isolation holds against code that has them.
SANDBOX_ESCAPE = (
    "_g = next(c for c in ().__class__.__base__.__subclasses__()"
    " if c.__name__ == '_wrap_close').__init__.__globals__\n"
    "os, sys = _g['sys'].modules['os'], _g['sys']\n"
)
REQUIRE_SERVICES = os.environ.get("IOLINKER_REQUIRE_SERVICES") == "1"


def drain_queue() -> int:
    """Run every task waiting in the configured django-q2 broker, in this process."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()
    ran = 0
    while broker.queue_size():  # Redis's dequeue blocks on an empty queue: ask first
        for task_id, payload in broker.dequeue() or []:
            task = SignedPackage.loads(payload)
            func = task["func"]
            func = import_string(func) if isinstance(func, str) else func
            func(*task["args"], **task["kwargs"])
            broker.acknowledge(task_id)
            ran += 1
    return ran


def queue_is_redis() -> bool:
    from django_q.conf import Conf

    return not Conf.ORM


def queued_messages() -> int:
    from django_q.brokers import get_broker

    return get_broker().queue_size()


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


class TcpProxy:
    """A TCP forwarder to ``(host, port)`` on a local port, which a test can cut
    (every connection closed, new ones accepted and closed at once, as a server
    that went away) and restore: a database or Redis becoming unreachable,
    without touching the shared server."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.down = False
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "TcpProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True
        self.cut()
        self.listener.close()

    def cut(self) -> None:
        with self.lock:
            self.down = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def restore(self) -> None:
        with self.lock:
            self.down = False

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def raw_http(port: int, data: bytes, *, half_close: bool = False, timeout: float = 10) -> bytes:
    """Send bytes as they are to a local server; everything it answers until it
    closes the connection (or ``timeout``). A server may answer and close before
    it has read everything (431 to megabytes of headers): the send then fails with
    a broken pipe, and its answer is still read."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


class LocalHttpServer:
    """A ThreadingHTTPServer on a free local port, served by a thread inside a
    ``with`` block (the test servers below and in test files build on it).
    While it serves, the outbound address filter (workflows/outbound.py) allows
    its address, and only that: by default loopback is refused."""

    host = "127.0.0.1"
    allow_outbound = True  # False: a server the filter must keep steps away from

    def serve(self, handler, path: str = "") -> None:
        self.server = ThreadingHTTPServer((self.host, 0), handler)
        self.url = f"http://{self.host}:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        from django.conf import settings
        from django.test import override_settings

        allowed = tuple(settings.IOLINKER_OUTBOUND_ALLOW)
        if self.allow_outbound:
            allowed += (ipaddress.ip_network(self.host),)
        self._allow = override_settings(IOLINKER_OUTBOUND_ALLOW=allowed)
        self._allow.enable()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._allow.disable()


class RecordingServer(LocalHttpServer):
    """A local HTTP server for the http step: answers JSON and records requests
    (500 for paths under /fail, and for the first ``fail_first`` requests)."""

    def __init__(self, *, fail_first: int = 0):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"method": self.command, "path": self.path, "body": body.decode()}
                )
                failing = self.path.startswith("/fail") or len(outer.requests) <= fail_first
                status = 500 if failing else 200
                try:
                    echo = json.loads(body) if body else None
                except ValueError:
                    echo = body.decode()
                payload = json.dumps({"echo": echo, "ok": True})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.serve(Handler)


def redis_url_or_reason() -> tuple[str | None, str]:
    url = (
        os.environ.get("IOLINKER_TEST_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379/15"
    )
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return None, f"Redis is not reachable at {url}: {exc}"
    return url, ""


class WsgiClient:
    """Sends requests to the production WSGI application (iolinker.wsgi), in this
    process, built by Django's RequestFactory: the test Client's requests, minus
    Django's handler (which the trigger path skips in production)."""

    VERBS = {"get", "post", "put", "patch", "delete", "head", "options", "generic"}

    def __init__(self):
        self._factory = RequestFactory()

    def __getattr__(self, verb: str):
        if verb not in self.VERBS:
            raise AttributeError(verb)
        build = getattr(self._factory, verb)

        def request(*args, **kwargs):
            environ = build(*args, **kwargs).environ
            # Building Django's request decoded PATH_INFO in place; a server gives
            # the path's bytes as latin-1 (PEP 3333), as the factory first made it.
            path = args[1] if verb == "generic" else args[0]
            environ["PATH_INFO"] = unquote_to_bytes(urlsplit(path).path).decode("latin-1")
            return self.send(environ)

        return request

    def send(self, environ: dict) -> HttpResponse:
        from iolinker.wsgi import application

        started = {}

        def start_response(status, headers, exc_info=None):
            started.update(status=int(status.split()[0]), headers=headers)

        # Like Django's test Client: the test's transaction must outlive the request.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            chunks = application(environ, start_response)
            try:
                content = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        response = HttpResponse(content, status=started["status"])
        for name, value in started["headers"]:
            response[name] = value
        response.json = lambda: json.loads(response.content)
        return response


def post_many(
    url: str,
    bodies: list[dict],
    *,
    threads: int = 8,
    timeout: float = 30,
    on_answer: Callable[[], None] | None = None,
) -> list[tuple[int, object]]:
    """POST each body to ``url`` from ``threads`` keep-alive clients; for each,
    (status, parsed JSON or text), or (0, the error) when no answer came."""
    import httpx

    results: list[tuple[int, object]] = [(0, "not sent")] * len(bodies)
    indexes = iter(range(len(bodies)))
    lock = threading.Lock()

    def work():
        with httpx.Client(timeout=timeout) as client:
            while True:
                with lock:
                    i = next(indexes, None)
                if i is None:
                    return
                try:
                    response = client.post(url, json=bodies[i])
                    try:
                        results[i] = (response.status_code, response.json())
                    except ValueError:
                        results[i] = (response.status_code, response.text)
                except httpx.HTTPError as exc:
                    results[i] = (0, repr(exc))
                if on_answer is not None:
                    on_answer()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def queue_message_uids(queue_name: str) -> list[int]:
    """The run uids named by the messages waiting in a platform's queue."""
    from django_q import core_signing
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import OrmQ
    from django_q.signing import PickleSerializer

    if queue_is_redis():
        broker = get_broker(list_key=queue_name)
        payloads = broker.connection.lrange(broker.list_key, 0, -1)
    else:
        payloads = OrmQ.objects.filter(key=queue_name).values_list("payload", flat=True)
    uids = []
    for payload in payloads:
        # Signed with the platform's queue name as the salt (django-q2's PREFIX).
        task = core_signing.loads(
            payload, key=Conf.SECRET_KEY, salt=queue_name, serializer=PickleSerializer
        )
        uids += task["args"][0]
    return uids
