"""Template context every page needs from above the apps: the nav's "needs you" badges and the live
poll's token. Lazy: computed once, and only when a template uses them (fragments never do)."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject


def needs(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not getattr(request, "team", None):
        return {}
    from config.views import needs_context

    computed: dict = {}

    def get(key: str):
        if not computed:
            computed.update(needs_context(request))
        return computed[key]

    return {key: SimpleLazyObject(lambda key=key: get(key)) for key in ("needs", "needs_token", "nav_badges")}
