"""Lists of the management API page by cursor: ``?cursor=`` from the previous
page's ``next``, ``?limit=`` rows (1 to 500, 50 by default). A page is one query
of ``limit + 1`` rows along an indexed unique order (the view's
``cursor_ordering``, newest run first for executions), never a COUNT: a
million runs page as fast as ten, and rows written meanwhile neither repeat nor
shift a page.
"""

from rest_framework.pagination import CursorPagination


class ManageCursorPagination(CursorPagination):
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500

    def get_ordering(self, request, queryset, view):
        return (view.cursor_ordering,)
