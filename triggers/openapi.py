"""The OpenAPI 3.1 document of the enabled APIs: ``GET /v1/openapi.json`` and
``manage.py write_openapi`` (both render ``openapi_document``).

Everything a caller can rely on is generated from the code that implements it,
so the document cannot drift from the server: the error codes from the table in
``iolinker/errors.py``, run statuses from ``ExecutionStatus``, run codes from
``workflows.selectors.RUN_CODES``, the ``wait`` limit from settings. Each API
gets concrete paths (``/v1/api/shop/order/async``), its verb and its security
scheme.
"""

import json
from http import HTTPStatus

from django.conf import settings
from django.urls import reverse

from iolinker import errors
from iolinker.errors import ErrorSpec
from triggers.callbacks import EVENT_TYPE
from triggers.models import ApiDefinition, AuthMode, HttpMethod
from workflows.models import ExecutionStatus
from workflows.selectors import RUN_CODES

OPENAPI_VERSION = "3.1.0"
# The version of the contract (envelope, status body, headers), not of any API.
CONTRACT_VERSION = "1"

_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_PARAMETERS = "#/components/parameters/"
_HEADERS = "#/components/headers/"

# Error statuses each operation can answer. A status no spec in the error table
# has (yet) is left out, so a document never promises an error the server lacks.
_TRIGGER_ERRORS = (400, 401, 403, 404, 405, 422, 429, 500, 503)
# 403 and 429: the API's IP allowlist and the throttle on wrong credentials.
_STATUS_ERRORS = (400, 401, 403, 404, 429, 500, 503)
_CANCEL_ERRORS = (401, 403, 404, 409, 429, 500, 503)

_SECURITY = {
    AuthMode.NONE: [],
    AuthMode.TOKEN: [{"token": []}],
    # Both headers together: one requirement object with two schemes.
    AuthMode.PASSWORD: [{"user": [], "password": []}],
}


def error_specs() -> list[ErrorSpec]:
    """Every ErrorSpec of iolinker/errors.py, in the order they are defined."""
    return [value for value in vars(errors).values() if isinstance(value, ErrorSpec)]


def openapi_document(*, base_url: str | None) -> dict:
    """The OpenAPI 3.1 document of every enabled API (an API whose workflow is
    disabled is not callable, so it is left out too). ``base_url``: the server's
    URL (``servers``); None leaves it out (paths are then relative to the host
    the document came from)."""
    apis = (
        ApiDefinition.objects.select_related("workflow")
        .filter(enabled=True, workflow__enabled=True)
        .order_by("module", "method")
    )
    paths: dict[str, dict] = {}
    statuses: set[int] = set()
    for api in apis:
        for path, item in _api_paths(api):
            paths[path] = item
            for operation in item.values():
                statuses.update(int(s) for s in operation["responses"] if s.isdigit())
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "iolinker APIs",
            "version": CONTRACT_VERSION,
            "description": _INFO_DESCRIPTION,
        },
        "paths": paths,
        "webhooks": {"executionFinished": _webhook()},
        "components": _components(statuses),
        "tags": sorted(({"name": m} for m in {a.module for a in apis}), key=lambda t: t["name"]),
    }
    if base_url:
        document["servers"] = [{"url": base_url.rstrip("/")}]
    return document


def openapi_render(document: dict) -> bytes:
    """The document as served and written: indented JSON, one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


_INFO_DESCRIPTION = """\
Every enabled API of this iolinker: call it, get 202 with the run's uid and a \
`Location` header, then read the run's status there (or use `/sync` where offered).

Every success body is `{"response": {...}}`; every error is \
`{"response": {"error": {"code", "message"}}}` with the statuses listed per operation. A call with \
a verb other than the API's answers 405 `requestError.methodNotAllowed` with an \
`Allow` header; an unknown URL under `/v1/` answers 404 `requestError.notFound`.

This document is public (`IOLINKER_OPENAPI_PUBLIC`): it names the module and \
method of every enabled API, never a credential."""


def _api_paths(api: ApiDefinition) -> list[tuple[str, dict]]:
    names = {"module": api.module, "method": api.method}
    base = f"{api.module}.{api.method}"  # unique: names hold no "."
    title = api.description.strip().splitlines()[0] if api.description.strip() else str(api)
    about = _describe(api)
    security = _SECURITY[AuthMode(api.auth_mode)]
    verb = api.http_method.lower()
    trigger = {
        "tags": [api.module],
        "security": security,
        "parameters": [{"$ref": _PARAMETERS + "IdempotencyKey"}, *_input_parameters(api)],
    }
    if api.http_method == HttpMethod.POST:
        trigger["requestBody"] = _request_body(api)

    accepted = {"$ref": _RESPONSES + "Accepted"}
    async_op = {
        **trigger,
        "operationId": f"{base}.async",
        "summary": f"{title}: start a run",
        "description": about,
        "responses": {"202": accepted, **_errors(api, _TRIGGER_ERRORS)},
    }
    result = [(reverse("trigger-async", kwargs=names), {verb: async_op})]

    if api.sync_enabled:
        sync_op = {
            **trigger,
            "operationId": f"{base}.sync",
            "summary": f"{title}: run and wait for the result",
            "description": f"{about}\n\nWaits up to {api.sync_timeout} s for the run; "
            "a run that takes longer answers 202 with its uid and `Location`, as `/async` does.",
            "responses": {
                "200": {"$ref": _RESPONSES + "SyncResult"},
                "202": accepted,
                **_errors(api, _TRIGGER_ERRORS),
            },
        }
        result.append((reverse("trigger-sync", kwargs=names), {verb: sync_op}))

    uid_template = reverse("execution-status", kwargs={**names, "uid": "0"})[:-1] + "{uid}"
    read = [{"$ref": _PARAMETERS + "Uid"}]
    if api.auth_mode == AuthMode.NONE:
        read.append({"$ref": _PARAMETERS + "ReadKey"})
    status_op = {
        "tags": [api.module],
        "operationId": f"{base}.status",
        "summary": f"{title}: a run's status and result",
        "description": "The 202's `Location`. With the API's own credentials (a disabled API "
        "still answers); a uid of another API's run is 404, like an unknown one.",
        "security": security,
        "parameters": [*read, {"$ref": _PARAMETERS + "Wait"}],
        "responses": {"200": {"$ref": _RESPONSES + "Status"}, **_errors(api, _STATUS_ERRORS)},
    }
    result.append((uid_template, {"get": status_op}))

    cancel_op = {
        "tags": [api.module],
        "operationId": f"{base}.cancel",
        "summary": f"{title}: cancel a run",
        "security": security,
        "parameters": read,
        "responses": {
            "200": {
                "description": "Cancelled: the run was queued or waiting (or was "
                "cancelled already).",
                "content": _json(_SCHEMAS + "StatusResponse"),
            },
            "202": {
                "description": "Cancel requested: the run was running and stops at its "
                "next step boundary; follow `Location` for its final state.",
                "headers": {"Location": {"$ref": _HEADERS + "Location"}},
                "content": _json(_SCHEMAS + "StatusResponse"),
            },
            **_errors(api, _CANCEL_ERRORS),
        },
    }
    result.append((uid_template + "/cancel", {"post": cancel_op}))
    return result


def _describe(api: ApiDefinition) -> str:
    lines = [api.description.strip()] if api.description.strip() else []
    workflow = f"Runs the workflow `{api.workflow.name}`"
    if api.workflow.description.strip():
        workflow += f": {api.workflow.description.strip()}"
    lines.append(workflow)
    auth = {
        AuthMode.NONE: "No authentication; the status URL carries the run's read key.",
        AuthMode.TOKEN: "Authentication: header `token`.",
        AuthMode.PASSWORD: "Authentication: headers `user` and `password`.",
    }[AuthMode(api.auth_mode)]
    lines.append(auth)
    return "\n\n".join(lines)


def _input_parameters(api: ApiDefinition) -> list[dict]:
    if api.http_method != HttpMethod.GET:
        return []
    parameter = {
        # A free-form object, exploded: each of its keys is a query parameter.
        "name": "input",
        "in": "query",
        "description": "Any query parameters: the workflow sees them as `query` "
        "(a repeated key becomes a list).",
        "style": "form",
        "explode": True,
        "schema": {
            "type": "object",
            "additionalProperties": {
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
        },
    }
    if isinstance(api.debug_payload, dict) and api.debug_payload:
        parameter["example"] = api.debug_payload
    return [parameter]


def _request_body(api: ApiDefinition) -> dict:
    media = {"schema": {"type": "object"}}
    if isinstance(api.debug_payload, dict) and api.debug_payload:
        media["example"] = api.debug_payload
    return {
        "description": "A JSON object, whatever the `Content-Type` (an empty body is `{}`); "
        f"at most {settings.IOLINKER_MAX_BODY_BYTES} bytes. The workflow sees it as `body`.",
        "required": False,
        "content": {"application/json": media},
    }


def _errors(api: ApiDefinition, statuses: tuple[int, ...]) -> dict:
    known = {spec.status for spec in error_specs()}
    if api.auth_mode == AuthMode.NONE:
        statuses = tuple(s for s in statuses if s != 401)
    if api.http_method == HttpMethod.POST and 400 in statuses:
        statuses = (*statuses, 413)  # only a body can be too large
    return {str(s): {"$ref": _RESPONSES + f"Error{s}"} for s in sorted(statuses) if s in known}


def _json(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": ref}}}


def _components(statuses: set[int]) -> dict:
    return {
        "securitySchemes": {
            "token": {
                "type": "apiKey",
                "in": "header",
                "name": "token",
                "description": "The API's token (shown once when generated).",
            },
            "user": {"type": "apiKey", "in": "header", "name": "user"},
            "password": {
                "type": "apiKey",
                "in": "header",
                "name": "password",
                "description": "Sent with `user`: both are required together.",
            },
        },
        "schemas": _schemas(),
        "parameters": _parameters(),
        "headers": {
            "Location": {
                "description": "The run's status URL (for an API without authentication "
                "it carries the run's read key, `?key=`).",
                "required": True,
                "schema": {"type": "string", "format": "uri-reference"},
            },
            "IdempotentReplayed": {
                "description": "`true` when an `Idempotency-Key` named an earlier run: "
                "nothing was started, this is that run.",
                "schema": {"type": "string", "enum": ["true"]},
            },
        },
        "responses": {
            "Accepted": {
                "description": "Accepted: the run is recorded and queued.",
                "headers": {
                    "Location": {"$ref": _HEADERS + "Location"},
                    "Idempotent-Replayed": {"$ref": _HEADERS + "IdempotentReplayed"},
                },
                "content": _json(_SCHEMAS + "Accepted"),
            },
            "SyncResult": {
                "description": "The run finished within the sync timeout: its result "
                "(a failed run answers its non-zero `code` and `msg`).",
                "headers": {"Idempotent-Replayed": {"$ref": _HEADERS + "IdempotentReplayed"}},
                "content": _json(_SCHEMAS + "SyncResult"),
            },
            "Status": {
                "description": "The run's status (its result once final).",
                "content": _json(_SCHEMAS + "StatusResponse"),
            },
            **{f"Error{s}": _error_response(s) for s in sorted(statuses) if s >= 400},
        },
    }


def _error_response(status: int) -> dict:
    specs = [spec for spec in error_specs() if spec.status == status]
    lines = [f"* `{spec.code}`: {spec.message}" for spec in specs]
    description = HTTPStatus(status).phrase + ("\n\n" + "\n".join(lines) if lines else "")
    response = {"description": description, "content": _json(_SCHEMAS + "Error")}
    if status == 405:
        response["headers"] = {
            "Allow": {"description": "The API's verb.", "schema": {"type": "string"}}
        }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if specs:
        example = {"response": {"error": {"code": specs[0].code, "message": specs[0].message}}}
        response["content"]["application/json"]["example"] = example
    return response


def _schemas() -> dict:
    codes = sorted({spec.code for spec in error_specs()})
    run_codes = sorted(set(RUN_CODES.values()))
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        "Uid": {
            "type": "string",
            "pattern": "^[0-9]{1,19}$",
            "description": "A run's uid: a 64-bit time-ordered id, always a string.",
            "examples": ["118028532135161857"],
        },
        "Accepted": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["uid"],
                    "properties": {"uid": {"$ref": _SCHEMAS + "Uid"}},
                }
            },
        },
        "RunCode": {
            "type": "integer",
            "enum": run_codes,
            "description": "0 unless the run ended without succeeding: "
            + ", ".join(f"{code} {status.value}" for status, code in RUN_CODES.items() if code != 0)
            + ".",
        },
        "ExecutionStatus": {
            "type": "object",
            "required": ["uid", "status", "data", "code", "msg", "createdAt"],
            "properties": {
                "uid": {"$ref": _SCHEMAS + "Uid"},
                "status": {"type": "string", "enum": [s.value for s in ExecutionStatus]},
                "data": {"description": "The workflow's output once the run is final, else null."},
                "code": {"$ref": _SCHEMAS + "RunCode"},
                "msg": {"type": "string", "description": "Why the run did not succeed."},
                "createdAt": {"type": "string", "format": "date-time"},
                "startedAt": nullable_time,
                "finishedAt": nullable_time,
            },
        },
        "StatusResponse": {
            "type": "object",
            "required": ["response"],
            "properties": {"response": {"$ref": _SCHEMAS + "ExecutionStatus"}},
        },
        "SyncResult": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["data", "code", "msg", "uid"],
                    "properties": {
                        "data": {"description": "The workflow's output."},
                        "code": {"$ref": _SCHEMAS + "RunCode"},
                        "msg": {"type": "string"},
                        "uid": {"$ref": _SCHEMAS + "Uid"},
                    },
                }
            },
        },
        "ErrorCode": {"type": "string", "enum": codes},
        "Error": {
            "type": "object",
            "required": ["response"],
            "properties": {
                "response": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"$ref": _SCHEMAS + "ErrorCode"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "CallbackPayload": {
            "allOf": [
                {"$ref": _SCHEMAS + "ExecutionStatus"},
                {
                    "type": "object",
                    "required": ["type", "api"],
                    "properties": {
                        "type": {"const": EVENT_TYPE},
                        "api": {
                            "type": "object",
                            "required": ["module", "method"],
                            "properties": {
                                "module": {"type": "string"},
                                "method": {"type": "string"},
                            },
                        },
                    },
                },
            ],
        },
    }


def _parameters() -> dict:
    max_wait = settings.IOLINKER_STATUS_MAX_WAIT
    return {
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "Retry safely: the same key with the same request within "
            f"{settings.IOLINKER_IDEMPOTENCY_SECONDS} s answers the first call's run "
            "(`Idempotent-Replayed: true`) and starts nothing; with a different request, "
            "422 `requestError.idempotencyKeyReused`.",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
        },
        "Uid": {
            "name": "uid",
            "in": "path",
            "required": True,
            "schema": {"$ref": _SCHEMAS + "Uid"},
        },
        "ReadKey": {
            "name": "key",
            "in": "query",
            "required": True,
            "description": "The run's read key, as given in the 202's `Location` "
            "(APIs without authentication only).",
            "schema": {"type": "string"},
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": f"Hold the answer until the run is final or this many seconds "
            f"pass (0 to {max_wait}).",
            "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
        },
    }


def _webhook() -> dict:
    def header(name: str, description: str, example: str) -> dict:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "description": description,
            "schema": {"type": "string"},
            "example": example,
        }

    return {
        "post": {
            "summary": "A run finished (completion callback)",
            "description": "POSTed to the API's callback URL when one of its runs finishes, "
            "signed in the Standard Webhooks style (https://www.standardwebhooks.com/). "
            "Any 2xx answer is a delivery; anything else is retried with back-off.",
            "parameters": [
                header(
                    "webhook-id",
                    "The same on every attempt of one run's callback: drop duplicates by it.",
                    "exec_118028532135161857",
                ),
                header("webhook-timestamp", "The attempt's time, unix seconds.", "1795378492"),
                header(
                    "webhook-signature",
                    "`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, "
                    "keyed with the base64-decoded part of the API's `whsec_` secret.",
                    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                ),
            ],
            "requestBody": {"required": True, "content": _json(_SCHEMAS + "CallbackPayload")},
            "responses": {
                "2XX": {"description": "Delivered."},
                "default": {"description": "Not delivered: the attempt is retried later."},
            },
        }
    }
