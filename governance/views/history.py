"""The team's change history: who changed what, when, field by field; filtered by event type."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import render

from governance import selectors
from governance.forms.history import ChangeHistoryFilterForm
from portal.pages import team_view

PAGE_SIZE = 50


@team_view
def history(request):
    form = ChangeHistoryFilterForm(request.GET)
    valid = form.is_valid()  # an unknown event type: the form says so, and the page answers 400
    event_types = form.cleaned_data["event_type"] if valid else None
    changes = selectors.change_history(team=request.team, event_types=event_types)
    page = Paginator(changes, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "changes": page.object_list, "form": form}
    return render(request, "governance/history.html", context, status=200 if valid else 400)
