"""JSON as the run tables hold it: the one text a run's input is written as, the
checks that every database can store that text and read it back, and the field
that survives a row it cannot decode.

Text PostgreSQL refuses (``\\u0000``, lone surrogates) or that cannot be read
back (nesting deeper than the decoder's recursion limit) must be refused before
it reaches a batch of runs: one such value failed every run committed with it
(security issue 12). A row that is undecodable anyway (written before these
checks, or by hand) must not fail its readers: ``StoredJSONField`` turns it into
an ``Unreadable`` marker that pages and commands show, and that the worker
fails its run with.
"""

import json
import re

from django.db import models

# How JSON text escapes a NUL character and a UTF-16 surrogate (json.dumps writes
# lower case, callers may write either): only text holding one of these needs the
# precise (slower) look.
_NUL_ESCAPE = "\\u0000"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def escapes_may_be_unstorable(text: str) -> bool:
    """A cheap hint on JSON text: True when its value may hold a NUL or an unpaired
    surrogate (then ``unstorable_reason`` of the decoded value decides)."""
    return "\\u" in text and (_NUL_ESCAPE in text or _SURROGATE_ESCAPE.search(text) is not None)


class Unstorable(ValueError):
    """A value no database can store and read back (the reason is the message)."""


class Unreadable(str):
    """A stored JSON value that could not be decoded (its text says why).

    A ``str`` so that every reader that shows a value (admin pages, commands,
    status and callback bodies) shows this one instead of failing.
    """


def unstorable_reason(value) -> str | None:
    """Why ``value`` cannot be stored (a NUL character or an unpaired UTF-16
    surrogate in a key or a string), or None. Walks the whole value: call it
    only when a cheap hint says it may be needed."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts = (item,)
        elif isinstance(item, dict):
            texts = [k for k in item if isinstance(k, str)]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            if "\x00" in text:
                return "must not contain NUL characters"
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return "contains an unpaired UTF-16 surrogate"
    return None


def stored_text(value) -> str:
    """The text a run's input is written as (as JSONField writes it: json.dumps,
    no custom encoder), once it is known that every database stores it and that
    it reads back. Raises Unstorable."""
    try:
        text = json.dumps(value)
    except RecursionError:
        raise Unstorable("is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise Unstorable(f"is not JSON: {exc}") from None
    if escapes_may_be_unstorable(text):
        # (Also a literal backslash before "u0000", or a surrogate pair: look closer.)
        reason = unstorable_reason(value)
        if reason is not None:
            raise Unstorable(reason)
    return text


class StoredJSONField(models.JSONField):
    """A JSONField whose undecodable rows read as ``Unreadable`` (nested too
    deeply for this thread's stack) instead of raising (text that is not JSON
    JSONField already hands back as it is): one such row
    must not fail a worker's whole chunk, a status request or an admin page."""

    def from_db_value(self, value, expression, connection):
        try:
            return super().from_db_value(value, expression, connection)
        except RecursionError:
            return Unreadable("unreadable: the stored JSON is nested too deeply to decode")

    def deconstruct(self):
        # Stored exactly as a JSONField (same column, same writes): only reading
        # differs, so migrations see a JSONField and none is needed.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs
