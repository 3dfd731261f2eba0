"""The management API's URLs, all under ``/v1/manage/`` (iolinker/urls.py
includes this module; the schema view reads it as its urlconf)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from triggers.manage.apis import ApiViewSet
from triggers.manage.executions import ExecutionViewSet
from triggers.manage.schema import ManageDocsView, ManageSchemaView
from triggers.manage.workflows import WorkflowViewSet

# "/?": `/v1/manage/apis` is the same as `apis/`, never APPEND_SLASH's HTML 301 (a
# POST would lose its body on the redirect).
router = SimpleRouter()
router.trailing_slash = "/?"  # (the constructor takes only True or False)
router.register("apis", ApiViewSet, basename="manage-api")
router.register("workflows", WorkflowViewSet, basename="manage-workflow")
router.register("executions", ExecutionViewSet, basename="manage-execution")

urlpatterns = [
    path(
        "v1/manage/",
        include(
            [
                *router.urls,
                path("schema/", ManageSchemaView.as_view(), name="manage-schema"),
                path("docs/", ManageDocsView.as_view(url_name="manage-schema"), name="manage-docs"),
            ]
        ),
    ),
]
