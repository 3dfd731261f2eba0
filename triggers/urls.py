from django.urls import path

from triggers import views

urlpatterns = [
    path("v1/openapi.json", views.openapi_json, name="openapi"),
    path("v1/api/<str:module>/<str:method>/async", views.trigger_async, name="trigger-async"),
    path("v1/api/<str:module>/<str:method>/sync", views.trigger_sync, name="trigger-sync"),
    path(
        "v1/api/<str:module>/<str:method>/executions/<str:uid>",
        views.execution_status,
        name="execution-status",
    ),
    path(
        "v1/api/<str:module>/<str:method>/executions/<str:uid>/cancel",
        views.execution_cancel,
        name="execution-cancel",
    ),
]
