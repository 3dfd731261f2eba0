"""``/v1/manage/workflows/``: list and read workflows, import them and export
them, in the format of the ``import_workflow`` / ``export_workflow`` commands
and the admin's Import / Export (``iolinker.workflow``, README "Export and
import"), through the same services (workflows/definition.py).

An import's body is an export document, or a list of them (all or none);
``?name=`` imports under another name, ``?replace=true`` replaces the workflow
of that name (a new version). Adding or changing a code step needs the
code-step permission, checked by the service (``code_step_guard``). An export
answers the document itself, outside the envelope, so that an exported file
imports as it is.
"""

import json

from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from iolinker import errors, responses
from iolinker.errors import ApiError
from triggers.manage.base import ManageViewSet
from triggers.manage.filters import WorkflowFilter
from triggers.manage.serializers import WorkflowSerializer
from workflows.definition import (
    CodeStepRefused,
    DefinitionError,
    workflow_export,
    workflows_import,
)
from workflows.models import Step, Workflow, WorkflowVersion

_IMPORTED = inline_serializer("Imported", {"imported": WorkflowSerializer(many=True)})
_TRUE = ("1", "true", "yes", "on")


def _summaries():
    """Workflows with their step count and current version number, one query."""
    steps = Step.objects.filter(workflow=OuterRef("pk")).values("workflow")
    versions = WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number")
    return Workflow.objects.annotate(
        step_count=Coalesce(
            Subquery(steps.annotate(n=Count("pk")).values("n")[:1], output_field=IntegerField()),
            0,
        ),
        version_number=Subquery(versions.values("number")[:1]),
    )


@extend_schema(tags=["Workflows"])
class WorkflowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManageViewSet):
    serializer_class = WorkflowSerializer
    filterset_class = WorkflowFilter
    action_permissions = {"export": ["workflows.view_workflow"]}

    def get_queryset(self):
        return _summaries()

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The workflow as an ``iolinker.workflow`` document (not enveloped)."""
        document = workflow_export(workflow=self.get_object())
        return responses.document(json.dumps(document, indent=2, ensure_ascii=False).encode())

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={201: _IMPORTED},
        parameters=[
            OpenApiParameter("name", str, description="Import under this name instead"),
            OpenApiParameter(
                "replace", bool, description="Replace the workflow of that name (a new version)"
            ),
        ],
    )
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_(self, request):
        replace = request.query_params.get("replace", "").lower() in _TRUE
        if replace and not request.user.has_perm("workflows.change_workflow"):
            raise ApiError(errors.FORBIDDEN, "Replacing a workflow needs its change permission")
        documents = request.data if isinstance(request.data, list) else [request.data]
        if not documents:
            raise ApiError(errors.INVALID_PARAMS, "The body holds no workflow document")
        try:
            imported = workflows_import(
                documents=documents,
                name=request.query_params.get("name") or None,
                replace=replace,
                user=request.user,
            )
        except CodeStepRefused as exc:
            raise ApiError(errors.FORBIDDEN, str(exc)) from None
        except DefinitionError as exc:
            raise ApiError(errors.INVALID_PARAMS, str(exc)) from None
        rows = _summaries().filter(pk__in=[w.pk for w in imported]).order_by("pk")
        body = {"imported": self.get_serializer(rows, many=True).data}
        return Response(body, status=status.HTTP_201_CREATED)
