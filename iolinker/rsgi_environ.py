"""The WSGI environ of a request granian hands the RSGI front (iolinker/server.py),
and what the front refuses while building it: a request target that is not a path
(`OPTIONS *`, `CONNECT host:port`: this server is no proxy) and header values
granian cannot pass on. Header names with an underscore are dropped, as gunicorn
does: ``X_Forwarded_For`` would otherwise become ``HTTP_X_FORWARDED_FOR`` and
override the real ``X-Forwarded-For``.
"""

import functools
import sys

from iolinker import errors, responses

# What granian's WSGI interface put in every environ (minus its copy of os.environ).
_BASE_ENVIRON = {
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SCRIPT_NAME": "",
    "SERVER_SOFTWARE": "Granian",
    "wsgi.errors": sys.stderr,
    "wsgi.input_terminated": True,
    "wsgi.multiprocess": False,
    "wsgi.multithread": True,
    "wsgi.run_once": False,
    "wsgi.version": (1, 0),
}
_PROTOCOLS = {"1": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2", "3": "HTTP/3"}
# Every method some URL here answers: what a refused CONNECT's Allow lists.
_ALLOW_ANYWHERE = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"


class Refused(Exception):
    """A request answered by the front itself, before it takes a thread."""

    def __init__(self, spec: errors.ErrorSpec, message: str | None = None, headers: tuple = ()):
        self.spec, self.message, self.headers = spec, message, headers


@functools.cache
def _environ_key(name: str) -> str | None:
    """The environ key of a (lower-case) header name; None drops the header."""
    if "_" in name:
        return None
    if name in ("content-type", "content-length"):
        return name.upper().replace("-", "_")
    return "HTTP_" + name.upper().replace("-", "_")


def _undecodable_values(headers, environ: dict) -> None:
    """Header fields whose value is not visible ASCII: granian lists their names
    but hands over no value (it cannot decode the bytes), so without this they
    would vanish: an Idempotency-Key of other bytes would silently start a second
    run, and an X-Forwarded-For with one such byte left of the proxy's entry would
    make the caller the trusted proxy (past IP allowlists and per-address limits).
    Under /v1/, and for X-Forwarded-For anywhere, the request is refused (400,
    naming the field); elsewhere (the admin, a browser's stray cookie) the value
    becomes U+FFFD, never a value the sender did not write."""
    for name in headers.keys():  # noqa: SIM118 (granian's Headers, not a dict)
        key = _environ_key(name)
        if key is None or headers.get_all(name):
            continue
        if name == "x-forwarded-for" or responses.is_api_path(environ["PATH_INFO"]):
            raise Refused(
                errors.BAD_REQUEST, f"Header {name} has a value that is not printable ASCII"
            )
        environ[key] = "\ufffd"


def _wsgi_str(text: str) -> str:
    """PEP 3333's "bytes as latin-1" form of a path or query granian decoded as UTF-8."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def _refuse_target(method: str, path: str) -> None:
    """CONNECT (any target) and a target that is not a path (asterisk-form
    `OPTIONS *`; granian passes authority-form `host:port` on too) never reach
    Django, whose answers to them were HTML pages (a CSRF failure, a 404).
    Absolute-form targets reach here as their path, as RFC 9112 §3.2.2 asks."""
    if method == "CONNECT":
        raise Refused(
            errors.METHOD_NOT_ALLOWED,
            "CONNECT is not supported: this server is not a proxy",
            (("Allow", _ALLOW_ANYWHERE),),
        )
    if not path.startswith("/"):
        raise Refused(errors.BAD_REQUEST, "The request target must be a path")


def environ_of(scope) -> dict:
    """The WSGI environ of ``scope`` (granian's RSGI HTTP scope), or Refused."""
    if scope.method == "CONNECT" or scope.path[:1] != "/":
        _refuse_target(scope.method, scope.path)
    server, _, port = scope.server.rpartition(":")
    environ = {
        **_BASE_ENVIRON,
        "SERVER_PROTOCOL": _PROTOCOLS.get(scope.http_version, "HTTP/1.1"),
        "SERVER_NAME": server,
        "SERVER_PORT": port,
        "REMOTE_ADDR": scope.client.rpartition(":")[0].strip("[]"),
        "REQUEST_METHOD": scope.method,
        "PATH_INFO": _wsgi_str(scope.path),
        "QUERY_STRING": _wsgi_str(scope.query_string),
        "wsgi.url_scheme": scope.scheme,
    }
    headers = scope.headers
    before, underscored = len(environ), ()
    for name, value in headers.items():
        key = _environ_key(name)
        if key is None:
            underscored = {*underscored, name}  # rare: a set only when needed
            continue
        if key in environ:
            # Repeated fields: Cookie pairs join with "; " (RFC 6265 §5.4; a ","
            # would glue two cookies into one value), others with "," (RFC 9110).
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            environ[key] = value
    if len(environ) - before + len(underscored) != len(headers):
        # A name granian counts but gives no value for: look closer (rare).
        _undecodable_values(headers, environ)
    return environ
