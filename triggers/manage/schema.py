"""The management API's OpenAPI document (drf-spectacular), served at
``/v1/manage/schema/`` (JSON; ``?format=yaml`` for YAML), with Swagger UI at
``/v1/manage/docs/`` from drf-spectacular-sidecar's bundled files (no CDN).
Only this package's URLs are in it; the per-API caller document stays
``/v1/openapi.json`` (triggers/openapi/).

The postprocessing hook writes the envelope into the document: a success body
is ``{"response": <body>}`` (an export is the document itself), every error is
the ``Error`` envelope.
"""

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.settings import patched_settings
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser

from iolinker.drf import EnvelopeRenderer
from triggers.manage.auth import StaffTokenAuthentication
from triggers.openapi.components import components

_ERRORS = {
    "400": "Invalid parameters or body",
    "401": "No or wrong credentials",
    "403": "Not staff, or without the permission this needs",
    "404": "Not found",
}


def envelope_hook(result: dict, generator, request, public) -> dict:
    """Wrap success bodies in ``{"response": ...}`` and list the error answers."""
    # The error envelope and codes of the caller document, from the same table.
    shared = components(set())["schemas"]
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["ErrorCode"] = shared["Error"], shared["ErrorCode"]
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        for operation in item.values():
            answers = operation.setdefault("responses", {})
            for code, answer in answers.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and code.startswith("2") and not path.endswith("/export/"):
                    answer["content"]["application/json"]["schema"] = {
                        "type": "object",
                        "required": ["response"],
                        "properties": {"response": schema},
                    }
            for code, description in _ERRORS.items():
                answers.setdefault(code, {"description": description, "content": error_ref})
    return result


SETTINGS = {
    "TITLE": "iolinker management API",
    "DESCRIPTION": "APIs, workflows and runs for operators and CI pipelines "
    "(README, 'Management API'). Staff only: `Authorization: Token <token>` "
    "(`manage.py manage_token USER`) or the admin's session.",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": r"/v1/manage",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "triggers.manage.schema.envelope_hook",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}


class _StaffOnly:
    """Staff only, as the API it describes; errors in the envelope."""

    authentication_classes = [StaffTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]
    custom_settings = SETTINGS
    schema = None  # not in the document it serves

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # An error is JSON, whichever format (YAML, the UI's HTML) was asked for.
        self.request.accepted_renderer = EnvelopeRenderer()
        self.request.accepted_media_type = EnvelopeRenderer.media_type
        return response


class ManageSchemaView(_StaffOnly, SpectacularAPIView):
    urlconf = "triggers.manage.urls"
    # JSON unless YAML is asked for (?format=yaml or its Accept type).
    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]


class ManageDocsView(_StaffOnly, SpectacularSwaggerView):
    title = SETTINGS["TITLE"]

    def get(self, request, *args, **kwargs):
        with patched_settings(SETTINGS):  # (this view has no custom_settings of its own)
            return super().get(request, *args, **kwargs)


class StaffTokenScheme(KnoxTokenScheme):
    """The schema's security scheme of our knox subclass (Authorization: Token …)."""

    target_class = "triggers.manage.auth.StaffTokenAuthentication"
    name = "staffToken"
