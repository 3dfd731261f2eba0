"""The URLs of the caller API: the OpenAPI document, a trigger call (/async, /sync),
a run's status and its cancel (views in triggers/http/views.py)."""

from django.urls import path

from triggers.http import views

urlpatterns = [
    path("v1/openapi.json", views.openapi_json, name="openapi"),
    path(
        "v1/api/<str:module>/<str:method>/async",
        views.TriggerAsyncView.as_view(),
        name="trigger-async",
    ),
    path(
        "v1/api/<str:module>/<str:method>/sync",
        views.TriggerSyncView.as_view(),
        name="trigger-sync",
    ),
    path(
        "v1/api/<str:module>/<str:method>/executions/<str:uid>",
        views.ExecutionStatusView.as_view(),
        name="execution-status",
    ),
    path(
        "v1/api/<str:module>/<str:method>/executions/<str:uid>/cancel",
        views.ExecutionCancelView.as_view(),
        name="execution-cancel",
    ),
]
