from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "iolinker"
admin.site.site_title = "iolinker"
admin.site.index_title = "APIs and workflows"

urlpatterns = [
    path("", include("triggers.urls")),
    path("", include("triggers.manage.urls")),  # /v1/manage/: the management API
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

handler400 = "iolinker.responses.handler400"
handler403 = "iolinker.responses.handler403"
handler404 = "iolinker.responses.handler404"
handler500 = "iolinker.responses.handler500"
