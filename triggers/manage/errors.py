"""The management API's body parser. Its answers are the project's: the DRF
exception handler, renderer and negotiation of ``iolinker/drf.py`` turn every
error into ``{"response": {"error": {"code", "message"}}}`` from the one error
table (``iolinker/errors.py``) and wrap a success as ``{"response": ...}``.
Views translate domain exceptions into ``ApiError`` themselves.
"""

from rest_framework.parsers import BaseParser

from triggers.http.jsonbody import json_body


class AnyJSONParser(BaseParser):
    """A body is JSON whatever its Content-Type says (as for the trigger API):
    ``curl -d`` without a content-type header works, and no answer is a 415. It
    is checked as a trigger's body is (strict UTF-8, IOLINKER_MAX_JSON_DEPTH, no
    text the database cannot store: 400, never a RecursionError's 500), except
    that its outermost value may be a list (an import of several workflows)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return json_body(stream.read() if stream is not None else b"", top=(dict, list))
