"""The web shell: team switcher, team members and invitations, the login lockout page (login and
logout are Django's auth views; the site admin's team page is in config.views, as creating a team
bootstraps its policy)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from portal import selectors, services
from portal.forms import InvitationForm, InvitationSignupForm, MemberForm
from portal.middleware import SESSION_KEY
from portal.models import Invitation, Membership
from portal.pages import apply_service_errors, get_team_object, may, require_perm, team_view
from portal.permissions import MANAGE_MEMBERS, teams_for_user


@login_required
@require_POST
def team_switch(request):
    team = teams_for_user(request.user).filter(slug=request.POST.get("team", "")).first()
    if team is None:
        raise Http404("No such team.")
    request.session[SESSION_KEY] = team.pk
    messages.info(request, f"Now working in {team.name}.")
    next_url = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    return redirect(next_url or "dashboard")


def _memberships(request):
    return Membership.objects.filter(team=request.team).select_related("user")


def _members_page(request, *, invite_form=None, status=200):
    members = _memberships(request).order_by("user__username")
    may_manage = may(request, MANAGE_MEMBERS)
    return render(
        request,
        "portal/members.html",
        {
            "members": [(m, MemberForm(membership=m)) for m in members],
            "invite_form": invite_form or InvitationForm(),
            "invitations": selectors.invitations_pending(team=request.team) if may_manage else [],
        },
        status=status,
    )


@team_view
def member_list(request):
    return _members_page(request)


@team_view
@require_POST
def member_invite(request):
    """Invite by email. The same answer whether or not the email (or a username) belongs to anyone."""
    require_perm(request, MANAGE_MEMBERS)
    form = InvitationForm(request.POST)
    if not form.is_valid():
        return _members_page(request, invite_form=form)
    data = form.cleaned_data
    try:
        invitation, token = services.invitation_create(
            team=request.team,
            email=data["email"],
            role=data["role"],
            is_auditor=data["is_auditor"],
            actor=request.user,
        )
    except ValidationError as exc:
        apply_service_errors(form, exc)
        return _members_page(request, invite_form=form)
    link = services.invitation_url(token, request=request)
    services.invitation_send(invitation=invitation, link=link)
    messages.success(request, f"Invitation sent to {invitation.email} as {invitation.role}.")
    return render(request, "portal/invitation_created.html", {"invitation": invitation, "link": link})


@team_view
@require_POST
def invitation_revoke(request, pk: int):
    invitation = get_team_object(
        request, Invitation.objects.filter(team=request.team), perm=MANAGE_MEMBERS, pk=pk
    )
    try:
        services.invitation_revoke(invitation=invitation, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Invitation of {invitation.email} revoked.")
    return redirect("members")


@team_view
@require_POST
def member_edit(request, pk: int):
    membership = get_team_object(request, _memberships(request), perm=MANAGE_MEMBERS, pk=pk)
    form = MemberForm(request.POST, membership=membership)
    if form.is_valid():
        try:
            services.membership_set(
                team=request.team,
                user=membership.user,
                role=form.cleaned_data["role"],
                is_auditor=form.cleaned_data["is_auditor"],
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, f"{membership.user.get_username()} not changed: {' '.join(exc.messages)}")
            return redirect("members")
        messages.success(
            request,
            f"{membership.user.get_username()} is now {form.cleaned_data['role']}"
            f"{' (auditor)' if form.cleaned_data['is_auditor'] else ''}.",
        )
    else:
        messages.error(
            request,
            f"{membership.user.get_username()} not changed: "
            f"{' '.join(e for errors in form.errors.values() for e in errors)}",
        )
    return redirect("members")


@team_view
@require_POST
def member_remove(request, pk: int):
    membership = get_team_object(request, _memberships(request), perm=MANAGE_MEMBERS, pk=pk)
    username = membership.user.get_username()
    try:
        services.membership_remove(membership=membership, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{username} removed from {request.team.name}.")
    return redirect("members")


# --- accepting an invitation (the invited person) -------------------------------------------------


def invitation(request, token: str):
    """The link in the invitation email: sign in (or create an account) and accept.

    Bound to the invited email: a signed-in user with another email is refused, so a forwarded
    or leaked link cannot add someone else. Unknown, used, revoked and expired links look alike.
    """
    found = services.invitation_for_token(token)
    if found is None:
        return render(request, "portal/invitation.html", {"invalid": True}, status=404)
    context = {"invitation": found, "signup_form": InvitationSignupForm()}
    if request.method == "POST" and request.user.is_authenticated:
        try:
            services.invitation_accept(token=token, user=request.user)
        except ValidationError as exc:
            context["error"] = " ".join(exc.messages)
            return render(request, "portal/invitation.html", context, status=403)
        request.session[SESSION_KEY] = found.team_id
        messages.success(request, f"Welcome to {found.team.name}.")
        return redirect("dashboard")
    if request.method == "POST":
        form = InvitationSignupForm(request.POST)
        if form.is_valid():
            try:
                user = services.invitation_signup(
                    token=token,
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password"],
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                request.session[SESSION_KEY] = found.team_id
                messages.success(request, f"Account created. Welcome to {found.team.name}.")
                return redirect("dashboard")
        context["signup_form"] = form
        return render(request, "portal/invitation.html", context, status=400)
    if request.user.is_authenticated and not services.invitation_email_matches(found, request.user):
        context["error"] = (
            "This invitation was sent to another email address: sign in as the person it was sent to."
        )
    return render(request, "portal/invitation.html", context)


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes' lockout answer: the login page's look, saying why and for how long (429)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    return render(
        request,
        "registration/locked_out.html",
        {"username": username, "cooloff_minutes": minutes},
        status=429,
    )


@never_cache
@require_GET
def healthz(request):
    """Liveness and readiness: 200 when the database answers, 503 otherwise (no details for strangers)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "down"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})
