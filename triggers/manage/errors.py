"""The management API's body parser. Its answers are the project's: the DRF
exception handler, renderer and negotiation of ``iolinker/drf.py`` turn every
error into ``{"response": {"error": {"code", "message"}}}`` from the one error
table (``iolinker/errors.py``) and wrap a success as ``{"response": ...}``.
Views translate domain exceptions into ``ApiError`` themselves.
"""

from rest_framework.parsers import JSONParser


class AnyJSONParser(JSONParser):
    """A body is JSON whatever its Content-Type says (as for the trigger API):
    ``curl -d`` without a content-type header works, and no answer is a 415."""

    media_type = "*/*"
