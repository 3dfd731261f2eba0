"""The error statuses each documented operation can answer, derived from the
error table (``iolinker/errors.py``): each ``ErrorSpec`` says where it can be
answered (``on``), so a new error is one line there and appears on its
operations, in the ``ErrorCode`` enum and in its status's response here.

Headers that go with a status (``Allow`` with 405, ``Retry-After`` with 429) are
in ``STATUS_HEADERS``: a status that gains one is one line there.
"""

from http import HTTPStatus

from iolinker import errors
from iolinker.errors import ErrorSpec
from triggers.models import ApiDefinition, AuthMode, HttpMethod

RESPONSES = "#/components/responses/"
_ERROR_SCHEMA = "#/components/schemas/Error"

# Headers sent with every answer of a status (they are part of its contract).
STATUS_HEADERS = {
    405: {
        "Allow": {
            "description": "The verb this URL takes.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def error_specs() -> list[ErrorSpec]:
    """Every ErrorSpec of iolinker/errors.py, in the order they are defined."""
    return [value for value in vars(errors).values() if isinstance(value, ErrorSpec)]


def operation_scopes(api: ApiDefinition, operation: str) -> frozenset[str]:
    """Where (errors.TRIGGER, …) an operation of ``api`` is: ``operation`` is
    "trigger", "status" or "cancel"; a trigger of a POST API also reads a body."""
    if operation == errors.TRIGGER and api.http_method == HttpMethod.POST:
        return frozenset({errors.TRIGGER, errors.BODY})
    return frozenset({operation})


def answerable_specs(api: ApiDefinition, operation: str) -> list[ErrorSpec]:
    """The errors this operation of this API can answer."""
    scopes = operation_scopes(api, operation)
    return [
        spec
        for spec in error_specs()
        if spec.on & scopes
        # Nothing to authenticate: no credential error.
        and not (spec.status == 401 and api.auth_mode == AuthMode.NONE)
    ]


def error_responses(api: ApiDefinition, operation: str) -> dict[str, dict]:
    """The operation's error responses: a reference per status it can answer."""
    statuses = sorted({spec.status for spec in answerable_specs(api, operation)})
    return {str(status): {"$ref": f"{RESPONSES}Error{status}"} for status in statuses}


def error_response(status: int) -> dict:
    """The shared response of an error status: its codes and their messages."""
    specs = [spec for spec in error_specs() if spec.status == status and spec.on]
    lines = [f"* `{spec.code}`: {spec.message}" for spec in specs]
    description = HTTPStatus(status).phrase + ("\n\n" + "\n".join(lines) if lines else "")
    media = {"schema": {"$ref": _ERROR_SCHEMA}}
    if specs:
        media["example"] = {
            "response": {"error": {"code": specs[0].code, "message": specs[0].message}}
        }
    response = {"description": description, "content": {"application/json": media}}
    if status in STATUS_HEADERS:
        response["headers"] = STATUS_HEADERS[status]
    return response
