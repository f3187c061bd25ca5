"""Template context: the current team, the user's teams and their permissions in it."""

from __future__ import annotations

from portal import permissions


def team(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    current = request.team if getattr(request, "team", None) else None
    perms = set()
    if current is not None:
        from guardian.shortcuts import get_perms

        perms = set(get_perms(user, current))
    return {
        "current_team": current,
        "user_teams": permissions.teams_for_user(user).order_by("name"),
        "team_perms": perms,
    }
