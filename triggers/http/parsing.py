"""Reading what a caller sent, for both HTTP stacks: the request body (bounded by
IOLINKER_MAX_BODY_BYTES, chunked or not), the query (bounded, no NUL), the
headers' total size, and the status URL's single parameters (``wait``, ``key``).
Each refusal is an ``ApiError`` of the error table, raised before a run exists;
the JSON check of the body itself is ``triggers.http.jsonbody``.
"""

from django.conf import settings
from django.http import QueryDict

from iolinker import errors
from iolinker.errors import ApiError


def check_header_size(headers) -> None:
    """Headers kept in a run's input are stored: bound them as the body is."""
    limit = settings.IOLINKER_MAX_HEADER_BYTES
    if sum(len(name) + len(value) for name, value in headers.items()) > limit:
        raise ApiError(errors.HEADERS_TOO_LARGE, f"Request headers are larger than {limit} bytes")


def query_dict(params: QueryDict) -> dict:
    query = {}
    size, limit = 0, settings.IOLINKER_MAX_QUERY_BYTES
    for key, values in params.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            raise ApiError(errors.INVALID_PARAMS, "Query parameters must not contain NUL")
        size += len(key) + sum(map(len, values))
        query[key] = values[0] if len(values) == 1 else values
    if size > limit:
        raise ApiError(errors.QUERY_TOO_LARGE, f"Query string is larger than {limit} bytes")
    return query


def body_reader(environ):
    """How to read a request's body from its WSGI environ.

    Without a Content-Length, read on only where the server marks the end of a
    chunked body (PEP 3333's wsgi.input_terminated; granian does); elsewhere the
    body is empty, as Django's own request stream has it.
    """
    if environ.get("CONTENT_LENGTH") or environ.get("wsgi.input_terminated"):
        return environ["wsgi.input"].read
    return lambda size: b""


def request_body(request) -> bytes:
    """The body of a Django ``HttpRequest``, read as the WSGI fast path reads it."""
    length = request.META.get("CONTENT_LENGTH")
    # Django's stream stops at Content-Length (and reads nothing without one).
    read = request.read if length else body_reader(request.environ)
    return body_read(length, read)


def body_read(content_length: str | None, read) -> bytes:
    """The request body, refused early when larger than the limit.

    Without a Content-Length (a chunked request) it is read up to the limit.
    """
    limit = settings.IOLINKER_MAX_BODY_BYTES
    declared = None
    if content_length:
        if not content_length.isdigit():
            raise ApiError(errors.BAD_REQUEST, "Invalid Content-Length header")
        declared = int(content_length)
        if declared > limit:
            raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    raw = read(limit + 1 if declared is None else declared)
    if len(raw) > limit:
        raise ApiError(errors.PAYLOAD_TOO_LARGE, f"Request body is larger than {limit} bytes")
    if declared is not None and len(raw) < declared:
        # The client stopped sending early: what arrived may parse, but it is not
        # what was sent.
        raise ApiError(errors.BAD_REQUEST, "Request body is shorter than its Content-Length")
    return raw


def single_param(query: QueryDict, name: str) -> str | None:
    """A query parameter that is one value (the status URL's `wait` and `key`): a
    repeated one is refused, not read as its last value (the document says one)."""
    values = query.getlist(name)
    if len(values) > 1:
        raise ApiError(errors.INVALID_PARAMS, f"{name} must be given at most once")
    return values[0] if values else None


def wait_seconds(text: str | None) -> float:
    """The status URL's ``wait``: 0 to IOLINKER_STATUS_MAX_WAIT seconds (absent: 0)."""
    if text is None or text == "":
        return 0.0
    limit = settings.IOLINKER_STATUS_MAX_WAIT
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= limit:  # also NaN
        raise ApiError(errors.INVALID_PARAMS, f"wait must be a number of seconds from 0 to {limit}")
    return wait
