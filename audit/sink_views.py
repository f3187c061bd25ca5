"""SIEM sink pages: reviewers see each sink's status and backlog; admins (manage_clients) create,
edit, disable and test-send. Writes go through audit/services/streaming.py."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from audit.choices import SinkFormat, SinkKind
from audit.models import AuditSink
from audit.services.streaming import sink_backlog, sink_create, sink_delete, sink_test_send, sink_update
from portal.pages import get_team_object, require_perm, submit, team_view
from portal.permissions import ACKNOWLEDGE_SESSION, MANAGE_CLIENTS, has_team_perm


class SinkForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=SinkKind.choices)
    format = forms.ChoiceField(choices=SinkFormat.choices, initial=SinkFormat.JSON)
    enabled = forms.BooleanField(required=False, initial=True)
    host = forms.CharField(max_length=255, required=False, help_text="Syslog: the receiver's host name.")
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, help_text="Syslog: TCP port.")
    tls = forms.BooleanField(required=False, label="TLS", help_text="Syslog over TLS (RFC 5425).")
    ca_file = forms.CharField(
        max_length=500,
        required=False,
        label="CA file",
        help_text="PEM file on the portal host; empty: system CAs.",
    )
    url = forms.URLField(
        max_length=1000,
        required=False,
        label="URL",
        assume_scheme="https",
        help_text="Webhook: where batches are POSTed.",
    )
    hec = forms.BooleanField(
        required=False, label="Splunk HEC", help_text="HEC envelopes and Authorization: Splunk <secret>."
    )
    secret_header = forms.CharField(
        max_length=100,
        required=False,
        initial="X-Mcpgov-Token",
        help_text="Webhook: header carrying the secret.",
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook secret or HEC token. Stored encrypted, never shown; leave empty to keep the current one.",
    )


class SinkCreateForm(SinkForm):
    from_start = forms.BooleanField(
        required=False, label="Send the stored trail too", help_text="Otherwise only events from now on."
    )


class SinkEditForm(SinkForm):
    clear_secret = forms.BooleanField(required=False, label="Remove the secret")


def _sinks(request):
    return AuditSink.objects.restrict(request.user).for_team(request.team)


@team_view
def sink_list(request):
    require_perm(request, ACKNOWLEDGE_SESSION)
    rows = [{"sink": sink, "backlog": sink_backlog(sink)} for sink in _sinks(request).order_by("name")]
    return render(
        request,
        "audit/sinks/list.html",
        {
            "rows": rows,
            "can_manage": has_team_perm(request.user, MANAGE_CLIENTS, request.team),
        },
    )


@team_view
def sink_create_view(request):
    require_perm(request, MANAGE_CLIENTS)
    form = SinkCreateForm(request.POST or None)
    if request.method == "POST":
        ok, sink = submit(form, sink_create, team=request.team, actor=request.user)
        if ok:
            messages.success(request, f"Sink {sink.name} created.")
            return redirect("audit:sink-list")
    return render(request, "audit/sinks/form.html", {"form": form, "sink": None})


@team_view
def sink_edit_view(request, pk: int):
    sink = get_team_object(request, _sinks(request), perm=MANAGE_CLIENTS, pk=pk)
    initial = {f: getattr(sink, f) for f in SinkForm.base_fields if f != "secret"}
    form = SinkEditForm(request.POST or None, initial=initial)
    if request.method == "POST":
        ok, sink = submit(form, sink_update, sink=sink, actor=request.user)
        if ok:
            messages.success(request, f"Sink {sink.name} saved.")
            return redirect("audit:sink-list")
    return render(request, "audit/sinks/form.html", {"form": form, "sink": sink})


@team_view
@require_POST
def sink_toggle_view(request, pk: int):
    sink = get_team_object(request, _sinks(request), perm=MANAGE_CLIENTS, pk=pk)
    sink = sink_update(sink=sink, actor=request.user, enabled=not sink.enabled)
    messages.success(request, f"Sink {sink.name} {'enabled' if sink.enabled else 'disabled'}.")
    return redirect("audit:sink-list")


@team_view
@require_POST
def sink_test_view(request, pk: int):
    sink = get_team_object(request, _sinks(request), perm=MANAGE_CLIENTS, pk=pk)
    error = sink_test_send(sink=sink, actor=request.user)
    if error:
        messages.error(request, f"Test event not accepted by {sink.name}: {error}")
    else:
        messages.success(request, f"{sink.name} accepted a test event.")
    return redirect("audit:sink-list")


@team_view
@require_POST
def sink_delete_view(request, pk: int):
    sink = get_team_object(request, _sinks(request), perm=MANAGE_CLIENTS, pk=pk)
    sink_delete(sink=sink, actor=request.user)
    messages.success(request, f"Sink {sink.name} deleted.")
    return redirect("audit:sink-list")
