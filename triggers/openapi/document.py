"""The document and each API's operations: its ``/async`` (and ``/sync``) path
with its verb, input and security, its status and cancel paths, and the error
statuses each can answer (``triggers.openapi.answers``)."""

import json

from django.conf import settings
from django.urls import reverse

from iolinker import errors
from triggers.models import ApiDefinition, AuthMode, HttpMethod
from triggers.openapi.answers import error_responses
from triggers.openapi.components import (
    HEADERS,
    PARAMETERS,
    RESPONSES,
    SCHEMAS,
    STORABLE_TEXT,
    components,
    json_media,
    webhook,
)

OPENAPI_VERSION = "3.1.0"
# The version of the contract (envelope, status body, headers), not of any API.
CONTRACT_VERSION = "1"

_SECURITY = {
    AuthMode.NONE: [],
    AuthMode.TOKEN: [{"token": []}],
    # Both headers together: one requirement object with two schemes.
    AuthMode.PASSWORD: [{"user": [], "password": []}],
}


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
            "description": _info_description(),
        },
        "paths": paths,
        "webhooks": {"executionFinished": webhook()},
        "components": components(statuses),
        "tags": sorted(({"name": m} for m in {a.module for a in apis}), key=lambda t: t["name"]),
    }
    if base_url:
        document["servers"] = [{"url": base_url.rstrip("/")}]
    return document


def openapi_render(document: dict) -> bytes:
    """The document as served and written: indented JSON, one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def _info_description() -> str:
    return f"""\
Every enabled API of this iolinker: call it, get 202 with the run's uid and a \
`Location` header, then read the run's status there (or use `/sync` where offered).

Every success body is `{{"response": {{...}}}}`; every error is \
`{{"response": {{"error": {{"code", "message"}}}}}}` with the statuses listed per operation. \
A call with a verb other than the API's answers 405 `requestError.methodNotAllowed` with an \
`Allow` header; an unknown URL under `/v1/` answers 404 `requestError.notFound`.

Limits: a body of at most {settings.IOLINKER_MAX_BODY_BYTES} bytes (413), headers of at \
most {settings.IOLINKER_MAX_HEADER_BYTES} bytes (431) and a query of at most \
{settings.IOLINKER_MAX_QUERY_BYTES} bytes (414) on a trigger. Far larger requests (about \
3 MB of headers, a 300 KB URL) or a malformed `Content-Length` are refused by the web \
server itself, before the application: a bare 431, 414 or 400 without a body.

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
        "parameters": [{"$ref": PARAMETERS + "IdempotencyKey"}, *_input_parameters(api)],
    }
    if api.http_method == HttpMethod.POST:
        trigger["requestBody"] = _request_body(api)
    trigger_errors = error_responses(api, errors.TRIGGER)

    accepted = {"$ref": RESPONSES + "Accepted"}
    async_op = {
        **trigger,
        "operationId": f"{base}.async",
        "summary": f"{title}: start a run",
        "description": about,
        "responses": {"202": accepted, **trigger_errors},
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
                "200": {"$ref": RESPONSES + "SyncResult"},
                "202": accepted,
                **trigger_errors,
            },
        }
        result.append((reverse("trigger-sync", kwargs=names), {verb: sync_op}))

    uid_template = reverse("execution-status", kwargs={**names, "uid": "0"})[:-1] + "{uid}"
    read = [{"$ref": PARAMETERS + "Uid"}]
    if api.auth_mode == AuthMode.NONE:
        read.append({"$ref": PARAMETERS + "ReadKey"})
    status_op = {
        "tags": [api.module],
        "operationId": f"{base}.status",
        "summary": f"{title}: a run's status and result",
        "description": "The 202's `Location`. With the API's own credentials (a disabled API "
        "still answers); a uid of another API's run is 404, like an unknown one.",
        "security": security,
        "parameters": [*read, {"$ref": PARAMETERS + "Wait"}],
        "responses": {
            "200": {"$ref": RESPONSES + "Status"},
            **error_responses(api, errors.STATUS),
        },
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
                "content": json_media(SCHEMAS + "StatusResponse"),
            },
            "202": {
                "description": "Cancel requested: the run was running and stops at its "
                "next step boundary; follow `Location` for its final state.",
                "headers": {"Location": {"$ref": HEADERS + "Location"}},
                "content": json_media(SCHEMAS + "StatusResponse"),
            },
            **error_responses(api, errors.CANCEL),
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


def _example(api: ApiDefinition) -> dict | None:
    """The debug payload, only where the API publishes it (`publish_example`):
    it may hold data meant for operators only."""
    if api.publish_example and isinstance(api.debug_payload, dict) and api.debug_payload:
        return api.debug_payload
    return None


def _input_parameters(api: ApiDefinition) -> list[dict]:
    if api.http_method != HttpMethod.GET:
        return []
    # Any text without NUL. On the wire every value is text whatever its JSON type,
    # and nested values are more keys (`a[b]=1`): the schema of a body says what
    # is refused, NUL in a key or a value at any depth.
    parameter = {
        # A free-form object, exploded: each of its keys is a query parameter.
        "name": "input",
        "in": "query",
        "description": "Any query parameters without NUL characters: the workflow sees "
        "them as `query` (a repeated key becomes a list).",
        "style": "form",
        "explode": True,
        "schema": {
            "type": "object",
            "propertyNames": STORABLE_TEXT,
            "additionalProperties": {"$ref": SCHEMAS + "JsonValue"},
        },
    }
    example = _example(api)
    if example is not None:
        parameter["example"] = example
    return [parameter]


def _request_body(api: ApiDefinition) -> dict:
    media: dict = {"schema": {"$ref": SCHEMAS + "TriggerBody"}}
    example = _example(api)
    if example is not None:
        media["example"] = example
    return {
        "description": "A JSON object, whatever the `Content-Type` (an empty body is `{}`); "
        f"at most {settings.IOLINKER_MAX_BODY_BYTES} bytes. The workflow sees it as `body`. "
        "Text holding NUL (`\\u0000`) or an unpaired surrogate is refused (400): no "
        "database can store it.",
        "required": False,
        "content": {"application/json": media},
    }
