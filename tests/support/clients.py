"""Clients that talk to the platform: the production WSGI application called in
this process, raw bytes over a socket, and many concurrent keep-alive POSTs."""

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from urllib.parse import unquote_to_bytes, urlsplit

from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse
from django.test import RequestFactory


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
