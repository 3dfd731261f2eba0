import json

from django.conf import settings
from django.urls import reverse

from iolinker import errors, responses
from iolinker.errors import ApiError
from triggers import services


@responses.api_endpoint
def trigger_async(request, module: str, method: str):
    api = services.api_get(module=module, method=method)
    services.api_check_callable(api=api, http_method=request.method)
    services.api_authenticate(api=api, headers=request.headers)
    trigger_input = services.trigger_input_build(
        http_method=request.method,
        body=_json_body(request) if request.method == "POST" else {},
        query={k: v[0] if len(v) == 1 else v for k, v in request.GET.lists()},
        headers=request.headers,
    )
    execution = services.api_trigger(api=api, trigger_input=trigger_input)
    uid = str(execution.uid)
    location = reverse("execution-status", kwargs={"module": module, "method": method, "uid": uid})
    return responses.ok({"uid": uid}, status=202, headers={"Location": location})


@responses.api_endpoint
def execution_status(request, module: str, method: str, uid: str):
    # Reserved for the status endpoint (the 202's Location header points here).
    raise ApiError(errors.NOT_IMPLEMENTED, "The execution status endpoint is not available yet")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


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
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        message = "Request body is not valid JSON"
        if isinstance(exc, json.JSONDecodeError):
            message += f": {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ApiError(errors.INVALID_JSON, message) from None
    if not isinstance(body, dict):
        raise ApiError(errors.BODY_NOT_OBJECT)
    return body
