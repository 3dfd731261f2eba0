"""The HTTP request step: one outbound request through the guarded client
(workflows/outbound.py), with stored credentials applied."""

import json
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from workflows.outbound import OutboundRefused, outbound_client
from workflows.steps.base import StepError, StepType, register

DEFAULT_TIMEOUT_S = 10
MAX_TIMEOUT_S = 120
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@register
class Http(StepType):
    """An outbound HTTP request; output is ``{"status", "headers", "body"}``.

    ``json`` sends a JSON body, ``form`` (an object) a form-encoded one; the
    response body is parsed as JSON when the response says so, else kept as text.
    A non-2xx answer fails the step unless ``fail_on_error`` is false.
    """

    name = "http"
    label = "HTTP request"
    schema = {
        "type": "object",
        "properties": {
            "method": {"enum": _METHODS},
            "url": {"type": "string", "minLength": 1},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {"type": "object"},
            "json": {},
            "form": {"type": ["object", "string"]},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
            "fail_on_error": {"type": "boolean"},
        },
        "required": ["url"],
        "not": {"required": ["json", "form"]},
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        url = resolved["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise StepError(f"url must be an http:// or https:// URL, got {shown_url(url)!r}")
        has_body = "json" in resolved or "form" in resolved
        shown = shown_url(url)
        method = resolved.get("method", "POST" if has_body else "GET")
        kwargs = {"headers": resolved.get("headers") or {}, "params": resolved.get("query")}
        if "json" in resolved:
            kwargs["json"] = resolved["json"]
        if "form" in resolved:
            form = resolved["form"]
            if not isinstance(form, dict):
                raise StepError(f"form must be an object of fields, got {type(form).__name__}")
            kwargs["data"] = {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in form.items()
            }
        timeout = ctx.time_left(resolved.get("timeout", DEFAULT_TIMEOUT_S))
        try:
            with (
                outbound_client(timeout=timeout, follow_redirects=True) as client,
                client.stream(method, url, **kwargs) as response,
            ):
                content = _read_limited(response, deadline=time.monotonic() + timeout)
        except OutboundRefused as exc:
            raise StepError(f"HTTP {method} {shown} refused: {exc}") from None
        except httpx.TimeoutException:
            raise StepError(f"HTTP {method} {shown} timed out after {timeout:.3g} s") from None
        except httpx.HTTPError as exc:
            raise StepError(f"HTTP {method} {shown} failed: {_no_url(exc, url)}") from None
        output = {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": _parse_body(response, content),
        }
        if response.is_error and resolved.get("fail_on_error", True):
            raise StepError(f"HTTP {method} {shown} answered {response.status_code}", output=output)
        return output


def shown_url(url: str) -> str:
    """A URL as error messages show it: without its query string and user info,
    where a secret from the environment (a key, a password) may sit. Errors reach
    callers (the run's msg) while the step's input is only in the admin."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<a malformed URL>"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _no_url(exc: Exception, url: str) -> str:
    return str(exc).replace(str(url), shown_url(url))


def _read_limited(response: httpx.Response, *, deadline: float) -> bytes:
    """The body, within MAX_RESPONSE_BYTES and the step's wall-clock timeout
    (httpx's timeout applies to each read, so a trickling server could last forever)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise StepError("HTTP response took longer than the step's timeout to arrive")
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise StepError(f"HTTP response is larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(response: httpx.Response, content: bytes):
    if not content:
        return None
    text = content.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(content)
        except ValueError:
            return text
    return text
