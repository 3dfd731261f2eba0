"""Idle connections against a real `manage.py serve`, over raw sockets: under
HTTP/1.1 (serve's default) a connection that never sends a byte is closed at the
header deadline, so a few hundred of them cannot take every connection slot of a
web process while a normal caller waits; with `--http auto` an idle HTTP/2
connection is closed once it stops answering keep-alive pings. The front's answers
carry header values without surrounding whitespace (`Set-Cookie` included), which
HTTP/2 clients refuse otherwise.
"""

import json
import socket
import time

import pytest

from tests.conftest import make_api, make_workflow
from tests.support.clients import raw_http
from tests.support.processes import Platform
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


def envelope(answer: bytes) -> tuple[int, dict, dict]:
    head, _, content = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), fields, json.loads(content)


def test_connect_and_targets_that_are_not_paths_answer_envelopes_over_the_wire():
    """They answered Django's HTML CSRF-failure and 404 pages (attacker pass F6)."""
    platform = serve()
    try:
        for line, status, code in [
            ("CONNECT 127.0.0.1:5432 HTTP/1.1", 405, "requestError.methodNotAllowed"),
            ("CONNECT /admin/ HTTP/1.1", 405, "requestError.methodNotAllowed"),
            ("OPTIONS * HTTP/1.1", 400, "requestError.badRequest"),
        ]:
            data = f"{line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            got, fields, body = envelope(raw_http(platform.port, data))
            assert got == status, line
            assert fields["content-type"] == "application/json"
            assert body["response"]["error"]["code"] == code
            assert ("allow" in fields) == (status == 405)
    finally:
        platform.stop()


def test_set_cookie_goes_out_without_a_leading_space_over_http_1_1():
    """Django writes " csrftoken=…" (attacker pass F8): the field's bytes on the wire."""
    platform = serve()
    try:
        data = b"GET /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        head = raw_http(platform.port, data).partition(b"\r\n\r\n")[0].lower()
        assert b"\r\nset-cookie: csrftoken=" in head, head
        assert b"set-cookie:  " not in head
    finally:
        platform.stop()


def h2_connection(port: int):
    h2 = pytest.importorskip("h2.connection")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.H2Connection()
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def test_with_http_auto_strict_http2_clients_take_the_admins_cookies():
    """python-h2 refused the login page ("header value surrounded by whitespace")."""
    events = pytest.importorskip("h2.events")
    platform = serve(WEB_HTTP="auto")
    try:
        sock, conn = h2_connection(platform.port)
        headers = [(":method", "GET"), (":path", "/admin/login/"), (":scheme", "http"),
                   (":authority", "127.0.0.1")]  # fmt: skip
        conn.send_headers(1, headers, end_stream=True)
        sock.sendall(conn.data_to_send())
        answer, ended = {}, False
        while not ended and (data := sock.recv(65536)):
            for event in conn.receive_data(data):  # raises on a malformed field
                if isinstance(event, events.ResponseReceived):
                    answer = [(k.decode(), v.decode()) for k, v in event.headers]
                ended = ended or isinstance(event, events.StreamEnded)
            sock.sendall(conn.data_to_send())
        sock.close()
        assert dict(answer)[":status"] == "200"
        cookies = [v for k, v in answer if k == "set-cookie"]
        assert cookies and all(v.startswith("csrftoken=") for v in cookies), answer
    finally:
        platform.stop()


def test_with_http_auto_an_idle_http2_connection_is_closed_by_unanswered_pings():
    """The header deadline does not apply to HTTP/2: granian's keep-alive ping
    (every deadline, to be answered within the deadline) is what closes a connection
    that sends nothing after its preface (attacker pass F2b: it was never closed).
    A client that answers pings keeps its connection: README says so."""
    platform = serve(WEB_HTTP="auto")
    try:
        sock, conn = h2_connection(platform.port)
        # The server's SETTINGS acknowledged (as the attacker's client did), then
        # nothing: no request, and no answer to a ping.
        conn.receive_data(sock.recv(65536))
        sock.sendall(conn.data_to_send())
        assert closed_by_server(sock, by=time.monotonic() + 3 * DEADLINE + 10)
        sock.close()
    finally:
        platform.stop()
