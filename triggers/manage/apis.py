"""``/v1/manage/apis/``: list, read, create and change APIs, switch them on and
off, rotate their token or callback signing secret.

The same services as the admin's API pages and the ``rotate_token`` command
(triggers/services/apis.py, triggers/callbacks.py). A new secret (the first token of
a token API, a callback signing secret, a rotated one) is in the answer that
made it, under ``token`` or ``callbackSecret``, and never again: it is stored
hashed (the token) or only used to sign (the callback secret).
"""

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from iolinker import errors
from iolinker.errors import ApiError
from triggers import callbacks, services
from triggers.manage.base import ManageViewSet
from triggers.manage.filters import ApiFilter
from triggers.manage.serializers import ApiSerializer
from triggers.models import ApiDefinition, AuthMode

_CHANGE = ["triggers.change_apidefinition"]
_TOKEN = inline_serializer("NewToken", {"token": serializers.CharField()})
_CALLBACK_SECRET = inline_serializer(
    "NewCallbackSecret", {"callbackSecret": serializers.CharField()}
)


@extend_schema(tags=["APIs"])
class ApiViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    ManageViewSet,
):
    queryset = ApiDefinition.objects.select_related("workflow")
    serializer_class = ApiSerializer
    filterset_class = ApiFilter
    action_permissions = {
        "enable": _CHANGE,
        "disable": _CHANGE,
        "rotate_token": _CHANGE,
        "rotate_callback_secret": _CHANGE,
    }

    def _saved(self, serializer, *, created: bool) -> Response:
        """Save, then issue the secrets the saved API lacks (as the admin does)."""
        password = serializer.validated_data.pop("password", None)
        with transaction.atomic():
            api = serializer.save()
            issued = services.api_secrets_issue(api=api, password=password)
        body = {**self.get_serializer(api).data, **issued}
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._saved(serializer, created=True)

    def update(self, request, *args, partial: bool = False, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        return self._saved(serializer, created=False)

    def _switch(self, enabled: bool) -> Response:
        api = self.get_object()
        services.api_set_enabled(apis=ApiDefinition.objects.filter(pk=api.pk), enabled=enabled)
        api.refresh_from_db()
        return Response(self.get_serializer(api).data)

    @extend_schema(request=None, responses=ApiSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        return self._switch(True)

    @extend_schema(request=None, responses=ApiSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        return self._switch(False)

    @extend_schema(request=None, responses=_TOKEN)
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request, pk=None):
        """A new token (the old one stops working): answered once."""
        api = self.get_object()
        if api.auth_mode != AuthMode.TOKEN:
            raise ApiError(errors.INVALID_PARAMS, f"API {api} does not use token authentication")
        return Response({"token": services.api_set_token(api=api)})

    @extend_schema(request=None, responses=_CALLBACK_SECRET)
    @action(detail=True, methods=["post"], url_path="rotate-callback-secret")
    def rotate_callback_secret(self, request, pk=None):
        """A new callback signing secret (later attempts are signed with it): answered once."""
        api = self.get_object()
        return Response({"callbackSecret": callbacks.api_rotate_callback_secret(api=api)})
