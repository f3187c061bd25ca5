"""Selects the team a signed-in user is working in (chosen with the team switcher)."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from portal.permissions import teams_for_user

SESSION_KEY = "current_team_id"


def current_team(request):
    """The user's chosen team, or their first team; None for anonymous users or users with no team."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    teams = teams_for_user(user)
    team_id = request.session.get(SESSION_KEY)
    team = teams.filter(pk=team_id).first() if team_id else None
    return team or teams.order_by("name").first()


class CurrentTeamMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.team = SimpleLazyObject(lambda: current_team(request))
        return self.get_response(request)
