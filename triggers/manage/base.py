"""What every management view shares, set on the views rather than in
``REST_FRAMEWORK`` so that the trigger views' DRF settings stay their own:
staff authentication (token, then session), model permissions, the JSON
envelope both ways, cursor pagination and django-filter filters. (Global
settings: the project's exception handler, ``iolinker/drf.py``, and the
schema inspector: drf-spectacular reads ``DEFAULT_SCHEMA_CLASS`` for viewset
actions, whatever the view says.)
"""

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets
from rest_framework.authentication import SessionAuthentication

from iolinker.drf import EnvelopeNegotiation, EnvelopeRenderer
from triggers.manage.auth import StaffTokenAuthentication
from triggers.manage.errors import AnyJSONParser
from triggers.manage.pagination import ManageCursorPagination
from triggers.manage.permissions import StaffModelPermissions


class ManageViewSet(viewsets.GenericViewSet):
    # Token first: its scheme names the 401's WWW-Authenticate header.
    authentication_classes = [StaffTokenAuthentication, SessionAuthentication]
    permission_classes = [StaffModelPermissions]
    renderer_classes = [EnvelopeRenderer]
    parser_classes = [AnyJSONParser]
    content_negotiation_class = EnvelopeNegotiation
    pagination_class = ManageCursorPagination
    filter_backends = [DjangoFilterBackend]
    throttle_classes = []
    # The indexed, unique order lists page along (pagination.py).
    cursor_ordering = "pk"
    # Permissions an action needs instead of its verb's model permission.
    action_permissions: dict[str, list[str]] = {}
