"""What Django 5.2 does for every request, repeated for the WSGI fast path of
``iolinker/wsgi.py``, which answers trigger calls without Django's request and
response objects, URL resolver or middleware.

Each function mirrors one Django 5.2 internal, named in its docstring: the
``ALLOWED_HOSTS`` check of ``HttpRequest.get_host``, ``HttpRequest.is_secure``
(SECURE_PROXY_SSL_HEADER), the Strict-Transport-Security header of
``SecurityMiddleware``, the ``request_started``/``request_finished`` signals of
``WSGIHandler``, the status line and the ``HttpHeaders`` view of the environ. A
Django upgrade re-reads these against the new version; the parity fixture
(``caller`` in tests/conftest.py, every trigger test through both stacks) fails
on any difference that shows in an answer.
"""

import functools
import logging
from http import HTTPStatus

from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host

DJANGO_VERSION = (5, 2)

security_logger = logging.getLogger("django.security.DisallowedHost")


@functools.cache
def status_line(status: int) -> str:
    """``WSGIHandler``'s status line: the code and its reason phrase."""
    return f"{status} {HTTPStatus(status).phrase}"


def environ_headers(environ) -> dict[str, str]:
    """Request headers by lower-case name (what ``HttpHeaders`` gives, for less)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


# Sent around each request as ``WSGIHandler.__call__`` (request_started, with the
# environ) and the response's ``close()`` (request_finished) send them: database
# connections are checked and closed on them.
request_started = signals.request_started
request_finished = signals.request_finished


def is_secure(environ) -> bool:
    """HTTPS, as Django's ``HttpRequest.is_secure`` tells (SECURE_PROXY_SSL_HEADER)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def host_allowed(environ) -> bool:
    """ALLOWED_HOSTS, checked as Django's ``HttpRequest.get_host`` does (and its
    DisallowedHost warning logged as Django logs it)."""
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        host = environ["HTTP_X_FORWARDED_HOST"]
    elif "HTTP_HOST" in environ:
        host = environ["HTTP_HOST"]
    else:
        host = f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    if domain and validate_host(domain, allowed):
        return True
    security_logger.warning("Invalid HTTP_HOST header: %r.", host)
    return False


def hsts_header() -> tuple[str, str]:
    """Strict-Transport-Security as Django's ``SecurityMiddleware`` sends it (the
    caller checks SECURE_HSTS_SECONDS and ``is_secure`` first, as it does)."""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return ("Strict-Transport-Security", value)
