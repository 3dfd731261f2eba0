"""What a management call needs: an active staff user (as for the admin) who
holds the Django model permission of the call.

Reads need ``view_<model>``, creating ``add_<model>``, changes
``change_<model>``. A view names other needs per action in
``action_permissions`` (enable, disable and rotate change an API; re-run and
cancel need ``workflows.change_workflow``, as the admin's run buttons do).
"""

from rest_framework.permissions import DjangoModelPermissions

_VIEW = ["%(app_label)s.view_%(model_name)s"]


class StaffModelPermissions(DjangoModelPermissions):
    perms_map = {**DjangoModelPermissions.perms_map, "GET": _VIEW, "HEAD": _VIEW}

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        needed = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if needed is not None:
            return user.has_perms(needed)
        return super().has_permission(request, view)
