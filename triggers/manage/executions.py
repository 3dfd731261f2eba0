"""``/v1/manage/executions/``: list runs (filters: status, API, workflow,
creation time; cursor pages, newest first, never a COUNT), read one with its
step runs and completion callback (what ``show_execution`` prints), re-run and
cancel it, through the services of the admin's buttons and the
``rerun_execution`` / ``cancel_execution`` commands (workflows/lifecycle.py).
"""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from iolinker import errors
from iolinker.errors import ApiError, ErrorSpec
from triggers.manage.base import ManageViewSet
from triggers.manage.filters import ExecutionFilter
from triggers.manage.serializers import ExecutionSerializer
from triggers.selectors import execution_callback
from workflows import lifecycle
from workflows.models import Execution
from workflows.selectors import execution_detail

# As the admin's re-run and cancel buttons (ExecutionAdmin.has_operate_permission).
_OPERATE = ["workflows.change_workflow"]
MAX_UID = 2**63 - 1


def _uid(text: str) -> int:
    """A uid from the URL (digits, see urls.py); one past 63 bits is no run."""
    uid = int(text)
    if uid > MAX_UID:
        raise Http404
    return uid


def _act(service, uid: str, refusal: type[Exception], spec: ErrorSpec) -> Execution:
    """Call a lifecycle service on the run ``uid``: its refusal is ``spec``, no run a 404."""
    try:
        execution = service(uid=_uid(uid))
    except refusal as exc:
        raise ApiError(spec, str(exc)) from None
    if execution is None:
        raise Http404
    return execution


@extend_schema(tags=["Executions"])
class ExecutionViewSet(mixins.ListModelMixin, ManageViewSet):
    # The list reads neither input nor output: they can be large.
    queryset = Execution.objects.select_related("workflow", "api").defer("input", "output", "error")
    serializer_class = ExecutionSerializer
    filterset_class = ExecutionFilter
    lookup_field = "uid"
    lookup_value_regex = "[0-9]{1,19}"
    cursor_ordering = "-uid"  # newest first, along the primary key
    action_permissions = {"rerun": _OPERATE, "cancel": _OPERATE}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request, uid: str):
        """The run with its input, output, step runs and completion callback."""
        detail = execution_detail(uid=_uid(uid))
        if detail is None:
            raise Http404
        detail["callback"] = execution_callback(uid=int(detail["uid"]))
        return Response(detail)

    @extend_schema(request=None, responses={201: ExecutionSerializer})
    @action(detail=True, methods=["post"])
    def rerun(self, request, uid: str):
        """A new run of the workflow's current version with the same input."""
        new = _act(lifecycle.execution_rerun, uid, lifecycle.NotRerunnable, errors.CONFLICT)
        new = self.get_queryset().get(uid=new.uid)
        return Response(self.get_serializer(new).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ExecutionSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, uid: str):
        """Queued or waiting: cancelled now; running: asked to stop at its next
        step boundary (the answer shows its status at that moment)."""
        execution = _act(
            lifecycle.execution_cancel, uid, lifecycle.NotCancellable, errors.EXECUTION_FINISHED
        )
        return Response(self.get_serializer(execution).data)
