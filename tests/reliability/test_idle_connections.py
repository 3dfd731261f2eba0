"""Idle connections against a real `manage.py serve`, over raw sockets: under
HTTP/1.1 (serve's default) a connection that never sends a byte is closed at the
header deadline, so a few hundred of them cannot take every connection slot of a
web process while a normal caller waits; with `--http auto` an idle HTTP/2
connection is closed once it stops answering keep-alive pings. The front's answers
carry header values without surrounding whitespace (`Set-Cookie` included), which
HTTP/2 clients refuse otherwise.
"""

import contextlib
import json
import socket
import time

import pytest

from tests.conftest import make_api, make_workflow
from tests.helpers import Platform, raw_http
from triggers.models import AuthMode
from workflows.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEADLINE = 2  # IOLINKER_BODY_READ_TIMEOUT of the served process: the header deadline too
SLOTS = 50  # WEB_BACKPRESSURE of the served process: connections served at once
IDLE = 4 * SLOTS
STEPS = [("out", "output", {"value": "{{ body }}"})]


def serve(**env: str) -> Platform:
    env = {
        "WEB_THREADS": "4",
        "IOLINKER_BODY_READ_TIMEOUT": str(DEADLINE),
        "WEB_BACKPRESSURE": str(SLOTS),
        **env,
    }
    return Platform(qcluster=False, env=env).start()


def closed_by_server(sock: socket.socket, *, by: float) -> bool:
    """True when the server has closed ``sock`` (EOF or reset) by monotonic time ``by``."""
    sock.settimeout(max(0.01, by - time.monotonic()))
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_connections_are_closed_at_the_header_deadline_and_a_caller_is_served():
    api = make_api(make_workflow("idle", STEPS), auth_mode=AuthMode.NONE)
    platform = serve()
    try:
        idle = [socket.create_connection(("127.0.0.1", platform.port)) for _ in range(IDLE)]
        try:
            # Four times the slots, none sending a byte: the caller below is still
            # answered, because the idle ones are closed at the deadline.
            request = (
                f"POST {api.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                "Content-Length: 2\r\n\r\n{}"
            ).encode()
            answer = raw_http(platform.port, request, timeout=DEADLINE + 20)
            assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert Execution.objects.filter(uid=body["response"]["uid"]).exists()
            by = time.monotonic() + DEADLINE + 10
            still_open = [s for s in idle if not closed_by_server(s, by=by)]
            assert not still_open, f"{len(still_open)} of {IDLE} idle connections left open"
        finally:
            for sock in idle:
                sock.close()
    finally:
        platform.stop()
