"""Local servers a test stands up: HTTP servers the outbound filter allows
while they serve (the recording server answers the http step), and a TCP proxy
that can cut a database or Redis connection."""

import contextlib
import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
