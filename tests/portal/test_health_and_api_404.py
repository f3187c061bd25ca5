"""The health probe, and unknown API paths answered in the API's error shape."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthz_answers_anonymously_without_caching():
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert Client().post("/healthz").status_code == 405


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/v1/trigger-settings/a/b/c/", "/api/v2/"])
def test_an_unknown_api_path_is_a_json_404(admin, method, path):
    browser = Client()
    browser.force_login(admin)
    response = getattr(browser, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "No such API endpoint.", "code": "not_found"}


def test_pages_keep_their_html_404(admin):
    browser = Client()
    browser.force_login(admin)
    response = browser.get("/governance/no-such-page/")
    assert response.status_code == 404 and "application/json" not in response["Content-Type"]
