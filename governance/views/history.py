"""The team's change history: who changed what, when, field by field."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import render

from governance import selectors
from portal.pages import team_view

PAGE_SIZE = 50


@team_view
def history(request):
    page = Paginator(selectors.change_history(team=request.team), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "governance/history.html", {"page": page, "changes": page.object_list})
