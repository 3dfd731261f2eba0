"""The WSGI application: the trigger fast path, then Django.

Trigger calls (``/v1/api/<module>/<method>/async``) are the hot path. This is
the accelerator of the DRF view that serves the same URL
(``triggers.http.views.TriggerAsyncView``): it answers straight from the WSGI
environ by calling the same transport function
(``triggers.http.transport.trigger_answer``), so both give the same answers and
errors byte for byte (the ``caller`` fixture runs every trigger test through
both). Skipping Django's request and response objects, URL resolver, DRF and
middleware roughly halves the Python CPU per accepted trigger (see
docs/performance.md); the Django internals it still needs (host check,
``is_secure``, HSTS, request signals) are repeated in
``triggers.http.django_mirror``. Everything else goes to Django.
"""

import os
import re

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")

django_application = get_wsgi_application()

# Importable only once Django is set up.
from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import get_bytes_from_wsgi  # noqa: E402

from iolinker import errors, responses  # noqa: E402
from triggers.http import django_mirror as mirror  # noqa: E402
from triggers.http.jsonbody import json_body  # noqa: E402
from triggers.http.parsing import body_read, body_reader  # noqa: E402
from triggers.http.transport import trigger_answer  # noqa: E402

_TRIGGER_PATH = re.compile(r"/v1/api/([^/]+)/([^/]+)/async")
_BAD_HOST_BODY = responses.error_body(errors.BAD_REQUEST)


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
        mirror.request_started.send(sender=self.__class__, environ=environ)
        try:
            if mirror.host_allowed(environ):
                status, headers, body = trigger_answer(
                    module=module,
                    method=method,
                    http_method=environ["REQUEST_METHOD"].upper(),  # as Django does
                    headers=mirror.environ_headers(environ),
                    query_string=get_bytes_from_wsgi(environ, "QUERY_STRING", ""),
                    read_json=lambda: json_body(
                        body_read(environ.get("CONTENT_LENGTH"), body_reader(environ))
                    ),
                    remote_addr=environ.get("REMOTE_ADDR", ""),
                    path=environ["PATH_INFO"],
                )
            else:
                status, headers, body = errors.BAD_REQUEST.status, [], _BAD_HOST_BODY
        finally:
            mirror.request_finished.send(sender=self.__class__)
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += responses.SECURITY_HEADERS
        if settings.SECURE_HSTS_SECONDS and mirror.is_secure(environ):
            headers.append(mirror.hsts_header())
        start_response(mirror.status_line(status), headers)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]


application = TriggerApplication(django_application)
