import json
import re

from django.conf import settings
from django.urls import reverse

from iolinker import errors, responses
from iolinker.errors import ApiError
from triggers.services import TriggerCall, api_call

_LONE_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")


@responses.api_endpoint
def trigger_async(request, module: str, method: str):
    call = TriggerCall(
        http_method=request.method,
        headers=request.headers,
        query=_query(request),
        read_body=lambda: _json_body(request),
    )
    execution = api_call(module=module, method=method, call=call)
    uid = str(execution.uid)
    location = reverse("execution-status", kwargs={"module": module, "method": method, "uid": uid})
    return responses.ok({"uid": uid}, status=202, headers={"Location": location})


@responses.api_endpoint
def execution_status(request, module: str, method: str, uid: str):
    # Reserved for the status endpoint (the 202's Location header points here).
    raise ApiError(errors.NOT_IMPLEMENTED, "The execution status endpoint is not available yet")


def _query(request) -> dict:
    query = {}
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            raise ApiError(errors.INVALID_PARAMS, "Query parameters must not contain NUL")
        query[key] = values[0] if len(values) == 1 else values
    return query


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _json_body(request) -> dict:
    limit = settings.IOLINKER_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(errors.BAD_REQUEST, "Invalid Content-Length header") from None
    if declared > limit:
        raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        message = "Request body is not valid JSON"
        if isinstance(exc, json.JSONDecodeError):
            message += f": {exc.msg} at line {exc.lineno} column {exc.colno}"
        elif isinstance(exc, ValueError):
            message += f": {exc}"
        raise ApiError(errors.INVALID_JSON, message) from None
    if not isinstance(body, dict):
        raise ApiError(errors.BODY_NOT_OBJECT)
    # Text the database cannot store (JSON allows both as escapes).
    if b"\\u0000" in raw:
        raise ApiError(errors.INVALID_JSON, "Request body must not contain NUL characters")
    if _LONE_SURROGATE_HINT.search(raw) and not _encodable(body):
        raise ApiError(errors.INVALID_JSON, "Request body contains an unpaired UTF-16 surrogate")
    return body


def _encodable(value) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
