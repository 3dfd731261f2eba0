"""A trigger's JSON body: what the platform accepts, checked in one cheap pass.

Accepted: strict UTF-8 (an optional UTF-8 byte-order mark), one JSON object,
nested at most IOLINKER_MAX_JSON_DEPTH levels, finite numbers, no text a
database cannot store (NUL characters, unpaired UTF-16 surrogates). Anything
else is 400 ``requestError.invalidParams``, before a run exists.

Why each: ``json.loads(bytes)`` also decodes UTF-16/UTF-32 and surrogates
encoded as UTF-8 (CESU-8), which slipped NUL and lone surrogates past checks of
the raw bytes; and a body nested ~960 levels deep parsed here but could not be
written or read back deeper in a worker's stack (security issue 12).
"""

import json
import re

from django.conf import settings

from iolinker import errors
from iolinker.errors import ApiError
from workflows.storedjson import escapes_may_be_unstorable, unstorable_reason

_UTF8_BOM = "\ufeff"
# Raw NULs and surrogates are refused by the strict UTF-8 decoding and the JSON
# parser; escaped ones are found by the hint of workflows/storedjson.py.
# For the depth: brackets become ( and ), quotes stay, every other byte goes.
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')


def json_body(raw: bytes, top: type | tuple = dict) -> dict:
    """The JSON object of a request body (an empty body is ``{}``); ApiError 400
    for anything the platform does not accept (module docstring). ``top``: what
    the outermost value may be (the management API's import also takes a list)."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")  # strict: no surrogates, no UTF-16/32
    except UnicodeDecodeError as exc:
        raise ApiError(
            errors.INVALID_JSON, f"Request body is not valid UTF-8 (byte {exc.start})"
        ) from None
    if text.startswith(_UTF8_BOM):
        text = text[1:]
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ApiError(errors.INVALID_JSON, _parse_error(exc, text)) from None
    if not isinstance(body, top):
        raise ApiError(errors.BODY_NOT_OBJECT)
    limit = settings.IOLINKER_MAX_JSON_DEPTH
    if json_too_deep(raw, limit):
        raise ApiError(errors.INVALID_JSON, f"Request body is nested deeper than {limit} levels")
    if escapes_may_be_unstorable(text):
        reason = unstorable_reason(body)
        if reason is not None:
            raise ApiError(errors.INVALID_JSON, f"Request body {reason}")
    return body


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Whether valid JSON (UTF-8) nests arrays and objects deeper than ``limit``.

    On the text, with bytes methods only (no Python loop per character or per
    value): fewer opening brackets than the limit cannot nest deeper; otherwise
    escapes go, then all but quotes and brackets, then brackets inside strings
    with their strings, and each pass removes the innermost level.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # too few to nest deeper (most bodies)
        return False
    if b"\\" in raw:
        # An escaped backslash, then an escaped quote: neither delimits a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Left: quotes (in pairs around strings) and brackets.
    structure = raw.translate(_BRACKETS, _NOT_STRUCTURE)
    # Two quotes in a row end one string and start the next (or are an empty
    # one): dropping them keeps the brackets outside strings as they were.
    structure = structure.replace(b'""', b"")
    if b'"' in structure:
        structure = _STRING.sub(b"", structure)
    for _level in range(limit):
        structure = structure.replace(b"()", b"")
        if not structure:
            return False
    return True


def _parse_error(exc: Exception, text: str) -> str:
    message = "Request body is not valid JSON"
    if "\x00" in text:
        return message + " (it must be UTF-8; NUL bytes suggest UTF-16 or UTF-32)"
    if isinstance(exc, json.JSONDecodeError):
        return message + f": {exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, ValueError):
        return message + f": {exc}"
    return message + f": nested deeper than {settings.IOLINKER_MAX_JSON_DEPTH} levels"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value
