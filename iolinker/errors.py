"""Every error a caller can get, in one table.

App code raises ``ApiError(SPEC)`` (optionally with a more precise message);
the workflows domain raises its own errors (workflows/errors.py), each mapped
here once (``DOMAIN_ERRORS``, ``ApiError.from_domain``); ``iolinker.responses``
turns an ``ApiError`` into the envelope
``{"response": {"error": {"code": ..., "message": ...}}}`` with the status.
The same table is in README.md ("Errors").
"""

from dataclasses import dataclass

# Where an error can be answered, so the OpenAPI document lists each status on the
# operations that can answer it (triggers/openapi/): a trigger call (/async,
# /sync), a trigger call with a body (POST), a run's status, a cancel.
TRIGGER, BODY, STATUS, CANCEL = "trigger", "body", "status", "cancel"
ANYWHERE = frozenset({TRIGGER, BODY, STATUS, CANCEL})
CALLER = frozenset({TRIGGER, STATUS, CANCEL})  # every operation with caller checks


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    status: int
    message: str
    # Where it can be answered (above); a new error is documented everywhere
    # until it says where. Empty: on no documented operation.
    on: frozenset[str] = ANYWHERE


TOKEN_REQUIRED = ErrorSpec("requestError.invalidParams", 401, "Token is required", CALLER)
CREDENTIALS_REQUIRED = ErrorSpec(
    "requestError.invalidParams", 401, "User/Password is required", CALLER
)
UNAUTHORIZED = ErrorSpec("requestError.unauthorized", 401, "Invalid credentials", CALLER)
INVALID_PARAMS = ErrorSpec("requestError.invalidParams", 400, "Invalid request parameters")
INVALID_JSON = ErrorSpec(
    "requestError.invalidParams", 400, "Request body is not valid JSON", frozenset({BODY})
)
BODY_NOT_OBJECT = ErrorSpec(
    "requestError.invalidParams", 400, "Request body must be a JSON object", frozenset({BODY})
)
# Django's handler403 under /v1/ (PermissionDenied): no public operation raises it.
FORBIDDEN = ErrorSpec("requestError.forbidden", 403, "Forbidden", frozenset())
# Status and cancel still answer for a disabled API.
API_DISABLED = ErrorSpec(
    "requestError.apiDisabled", 403, "API is not enabled", frozenset({TRIGGER})
)
IP_NOT_ALLOWED = ErrorSpec(
    "requestError.ipNotAllowed", 403, "This API does not accept calls from your address", CALLER
)
NOT_FOUND = ErrorSpec("requestError.notFound", 404, "API not found")
METHOD_NOT_ALLOWED = ErrorSpec("requestError.methodNotAllowed", 405, "Method not allowed")
REQUEST_TIMEOUT = ErrorSpec(
    "requestError.requestTimeout", 408, "The request body did not arrive in time", frozenset({BODY})
)
PAYLOAD_TOO_LARGE = ErrorSpec(
    "requestError.payloadTooLarge", 413, "Request body is too large", frozenset({BODY})
)
BAD_REQUEST = ErrorSpec("requestError.badRequest", 400, "Bad request")
# Headers and query are bounded where they are stored: in a trigger's run input.
QUERY_TOO_LARGE = ErrorSpec(
    "requestError.queryTooLarge", 414, "Query string is too large", frozenset({TRIGGER})
)
HEADERS_TOO_LARGE = ErrorSpec(
    "requestError.headersTooLarge", 431, "Request headers are too large", frozenset({TRIGGER})
)
EXECUTION_FINISHED = ErrorSpec(
    "requestError.executionFinished", 409, "The run already ended", frozenset({CANCEL})
)
# The management API (/v1/manage/): a request its target's state refuses (a run
# whose stored input cannot be read back cannot be re-run).
CONFLICT = ErrorSpec("requestError.conflict", 409, "Conflict with the current state", frozenset())
IDEMPOTENCY_KEY_INVALID = ErrorSpec(
    "requestError.invalidParams",
    400,
    "Idempotency-Key must be 1 to 255 printable ASCII characters",
    frozenset({TRIGGER}),
)
IDEMPOTENCY_KEY_REUSED = ErrorSpec(
    "requestError.idempotencyKeyReused",
    422,
    "This Idempotency-Key was already used with a different request",
    frozenset({TRIGGER}),
)
# The wrong-credential throttle (every caller operation) and the rate limit (triggers).
TOO_MANY_REQUESTS = ErrorSpec(
    "requestError.tooManyRequests",
    429,
    "Too many requests, retry after the Retry-After seconds",
    CALLER,
)
UNAVAILABLE = ErrorSpec(
    "serverError.unavailable", 503, "Service temporarily unavailable, try again later"
)
INTERNAL = ErrorSpec("serverError.internal", 500, "Internal server error")


class ApiError(Exception):
    """A caller-visible error: one of the specs above, optionally reworded."""

    def __init__(self, spec: ErrorSpec, message: str | None = None, *, headers=None):
        self.spec = spec
        self.message = message or spec.message
        self.headers = headers or {}
        super().__init__(f"{spec.code}: {self.message}")

    @classmethod
    def from_domain(cls, exc: Exception) -> "ApiError":
        """The caller-visible form of a workflows domain error (``DOMAIN_ERRORS``,
        the closest base class wins), with the domain's message."""
        return domain_api_error(exc) or cls(INTERNAL)


def domain_api_error(exc: BaseException) -> ApiError | None:
    """The ``ApiError`` of a workflows domain error (workflows/errors.py), None for
    any other exception."""
    for kind in type(exc).__mro__:
        if kind.__module__ == "workflows.errors":
            spec = DOMAIN_ERRORS.get(kind.__name__)
            if spec is not None:
                return ApiError(spec, str(exc) or None)
    return None


# The workflows domain's errors (workflows/errors.py) by class name (this module
# imports no app): each one's row of the table above.
DOMAIN_ERRORS: dict[str, ErrorSpec] = {
    "QueueUnavailable": UNAVAILABLE,
    "UidUnavailable": UNAVAILABLE,
    "Unavailable": UNAVAILABLE,
    "InputUnstorable": INVALID_PARAMS,
    "WorkflowDisabled": API_DISABLED,
    "NotCancellable": EXECUTION_FINISHED,
    "NotRerunnable": CONFLICT,
}
