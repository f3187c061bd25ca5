"""Response hardening: the Content-Security-Policy header, and X-Forwarded-Proto trusted only when configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]


def test_every_page_carries_a_strict_csp(client, admin):
    client.force_login(admin)
    for url in (reverse("login"), reverse("dashboard"), reverse("members"), reverse("api-docs")):
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_no_template_has_inline_script_or_style():
    import re

    offenders = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\son[a-z]+=|\bstyle=\"", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.django_db
def test_a_clients_x_forwarded_proto_is_ignored_by_default(client, settings):
    assert not hasattr(settings, "SECURE_PROXY_SSL_HEADER") or settings.SECURE_PROXY_SSL_HEADER is None
    response = client.get(reverse("login"), HTTP_X_FORWARDED_PROTO="https")
    assert response.wsgi_request.is_secure() is False


def proxy_header(env: dict[str, str]) -> str:
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup();"
        "from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MCPGOV_"))}
    prod = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "x7Yq0v3LrN9mB2kP5tW8zC1dF4gH6jK0lM3nQ5rS7uV9wX2yZ4aB6cD8eF0gH2iJ",
        "MCPGOV_KEY_ENCRYPTION_KEY": "ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTAwMDA=",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **prod, **env}, capture_output=True, text=True
    )
    return (out.stdout or out.stderr).strip()


def test_production_trusts_the_proxy_header_only_when_configured():
    assert proxy_header({}) == "None"
    assert proxy_header({"DJANGO_TRUST_X_FORWARDED_PROTO": "1"}) == "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert proxy_header({"DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_SSL,on"}) == (
        "('HTTP_X_FORWARDED_SSL', 'on')"
    )
    assert "must be" in proxy_header({"DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"})


@pytest.mark.django_db
def test_with_the_setting_a_proxys_header_marks_the_request_secure(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = client.get(reverse("login"), HTTP_X_FORWARDED_PROTO="https")
    assert response.wsgi_request.is_secure() is True
