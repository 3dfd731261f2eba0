from django.contrib.admin.apps import AdminConfig


class IolinkerAdminConfig(AdminConfig):
    """django.contrib.admin with our site (iolinker/admin_site.py) as admin.site."""

    default_site = "iolinker.admin_site.IolinkerAdminSite"

    def ready(self) -> None:
        super().ready()
        from iolinker import checks  # noqa: F401  (registers the project's checks)
