"""The OpenAPI 3.1 document of the enabled APIs: ``GET /v1/openapi.json`` and
``manage.py write_openapi`` (both render ``openapi_document``).

Everything a caller can rely on is generated from the code that implements it,
so the document cannot drift from the server: the error statuses of each
operation and their codes from the table in ``iolinker/errors.py``
(``answers``), run statuses from ``ExecutionStatus``, run codes from
``workflows.selectors.RUN_CODES``, limits from settings (``components``). Each
API gets concrete paths (``/v1/api/shop/order/async``), its verb and its
security scheme (``document``). ``tests/reliability/test_openapi_conformance.py``
checks a live server against it with schemathesis.
"""

from triggers.openapi.answers import error_specs
from triggers.openapi.document import openapi_document, openapi_render

__all__ = ["error_specs", "openapi_document", "openapi_render"]
