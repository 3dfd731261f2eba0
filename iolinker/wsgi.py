"""The WSGI application.

Trigger calls (``/v1/api/<module>/<method>/async``) are the hot path: they are
answered here, straight from the WSGI environ, by the same code the Django view
uses (``triggers.views.trigger_accept``), so both give the same answers and
errors. Skipping Django's request and response objects, URL resolver and
middleware roughly halves the Python CPU per accepted trigger (see
docs/performance.md). Everything else goes to Django.
"""

import functools
import logging
import os
import re
from http import HTTPStatus

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")

django_application = get_wsgi_application()

# Importable only once Django is set up.
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.handlers.wsgi import get_bytes_from_wsgi  # noqa: E402
from django.http import QueryDict  # noqa: E402
from django.http.request import split_domain_port, validate_host  # noqa: E402

from iolinker import errors, responses  # noqa: E402
from triggers.views import (  # noqa: E402
    accepted_headers,
    body_read,
    body_reader,
    trigger_accept,
)

security_logger = logging.getLogger("django.security.DisallowedHost")

_TRIGGER_PATH = re.compile(r"/v1/api/([^/]+)/([^/]+)/async")


@functools.cache
def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _headers(environ) -> dict[str, str]:
    """Request headers by lower-case name (what HttpHeaders gives, for less)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


class TriggerApplication:
    """Serve trigger calls directly; hand every other request to ``fallback``."""

    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, environ, start_response):
        match = _TRIGGER_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or environ.get("SCRIPT_NAME"):
            return self.fallback(environ, start_response)
        try:
            # WSGI gives the path as latin-1; names are UTF-8 (like Django's decoding).
            module, method = (part.encode("latin-1").decode() for part in match.groups())
        except UnicodeError:
            return self.fallback(environ, start_response)  # Django's answer for odd paths
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            status, headers, body = self._answer(environ, module, method)
        finally:
            signals.request_finished.send(sender=self.__class__)
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += responses.SECURITY_HEADERS
        if settings.SECURE_HSTS_SECONDS and self._is_secure(environ):
            headers.append(("Strict-Transport-Security", _hsts_value()))
        start_response(_status_line(status), headers)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    def _answer(self, environ, module: str, method: str) -> tuple[int, list, bytes]:
        http_method = environ["REQUEST_METHOD"].upper()  # as Django does
        try:
            if not self._host_allowed(environ):
                return errors.BAD_REQUEST.status, [], responses.error_body(errors.BAD_REQUEST)
            accepted = trigger_accept(
                module=module,
                method=method,
                http_method=http_method,
                headers=_headers(environ),
                query=QueryDict(get_bytes_from_wsgi(environ, "QUERY_STRING", "")),
                read_body=lambda: body_read(environ.get("CONTENT_LENGTH"), body_reader(environ)),
                remote_addr=environ.get("REMOTE_ADDR", ""),
            )
        except Exception as exc:
            spec, message, extra = responses.error_parts(
                exc, method=http_method, path=environ["PATH_INFO"]
            )
            return spec.status, list(extra.items()), responses.error_body(spec, message)
        body = responses.ok_body({"uid": str(accepted.uid)})
        return 202, accepted_headers(module, method, accepted), body

    @staticmethod
    def _is_secure(environ) -> bool:
        """HTTPS, as Django's ``HttpRequest.is_secure`` tells (SECURE_PROXY_SSL_HEADER)."""
        if settings.SECURE_PROXY_SSL_HEADER:
            header, secure_value = settings.SECURE_PROXY_SSL_HEADER
            value = environ.get(header)
            if value is not None:
                return value.split(",", 1)[0].strip() == secure_value
        return environ.get("wsgi.url_scheme") == "https"

    @staticmethod
    def _host_allowed(environ) -> bool:
        """ALLOWED_HOSTS, checked as Django's ``HttpRequest.get_host`` does."""
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


def _hsts_value() -> str:
    """Strict-Transport-Security as Django's SecurityMiddleware sends it."""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


application = TriggerApplication(django_application)
