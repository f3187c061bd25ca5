"""Selects the team a signed-in user is working in (chosen with the team switcher)."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.http import HttpResponseBadRequest, JsonResponse
from django.utils.functional import SimpleLazyObject
from whitenoise.middleware import WhiteNoiseMiddleware

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


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _lists_have_nul(data) -> bool:
    return any("\x00" in key or any("\x00" in str(v) for v in values) for key, values in data.lists())


def _nul_in(request) -> str | None:
    """Where a NUL byte is (\"URL\" or \"form\"), or None."""
    if "\x00" in request.path or _lists_have_nul(request.GET):
        return "URL"
    # Reading POST here is what CSRF checking does anyway; DRF reuses the parsed form.
    has_form = request.method not in ("GET", "HEAD", "OPTIONS") and request.content_type in FORM_TYPES
    if has_form and (
        _lists_have_nul(request.POST) or any("\x00" in (f.name or "") for f in request.FILES.values())
    ):
        return "form"
    return None


class RejectNulMiddleware:
    """A NUL byte in the path, a query parameter or a form field is answered 400 before any view runs.

    PostgreSQL text cannot hold NUL, so a slug, a choice or a lookup value carrying one would reach
    the database driver and fail there (a 500): CharFields prohibit NUL, but a related-object or
    choice field looks its value up first. JSON bodies are checked by `portal.parsers`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def refusal(request, where: str):
        detail = f"The {'URL' if where == 'URL' else 'form'} contains a NUL character."
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": detail, "code": "invalid"}, status=400)
        return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if where := _nul_in(request):
            return self.refusal(request, where)
        return self.get_response(request)

    async def __acall__(self, request):
        # the form is read in a thread: parsing a large multipart body must not block the loop
        if where := await sync_to_async(_nul_in, thread_sensitive=False)(request):
            return self.refusal(request, where)
        return await self.get_response(request)


class CurrentTeamMiddleware:
    # Sync and async: under ASGI a sync-only middleware would hold a thread for the whole
    # request, including every long poll. The team is lazy, so nothing here touches the DB.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        request.team = SimpleLazyObject(lambda: current_team(request))
        return self.get_response(request)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, usable in an async middleware chain: only static-file requests take a thread.

    (WhiteNoise itself is sync-only, which under ASGI would pin a thread to every request.)
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, settings=django_settings):
        super().__init__(get_response, settings)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        path = request.path_info
        if self.autorefresh:
            static_file = (
                await sync_to_async(self.find_file)(path) if path.startswith(self.static_prefix) else None
            )
        else:
            static_file = self.files.get(path)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


class DeferredChangeMiddleware:
    """A page whose write was kept in a draft (`ChangeDeferred`) redirects to the draft with a notice.

    Async-capable like the rest of the stack (only `process_exception` does anything; Django adapts it)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request):
        return await self.get_response(request)

    def process_exception(self, request, exception):
        from django.contrib import messages
        from django.http import HttpResponse
        from django.shortcuts import redirect

        from portal.pages import ChangeDeferred

        if not isinstance(exception, ChangeDeferred):
            return None
        messages.info(request, exception.message)
        if request.headers.get("HX-Request"):
            return HttpResponse(status=204, headers={"HX-Redirect": exception.url})
        return redirect(exception.url)
