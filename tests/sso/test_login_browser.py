"""Single sign-on in a real browser through a real OpenID Connect provider (oidc-provider's own
login and consent pages): a user lands in the team and role their groups grant, loses the access
when the group goes, and password login can be turned off."""

from __future__ import annotations

import re

import pytest
import requests
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from portal.choices import TeamRole
from portal.models import Membership, SsoIdentity
from tests.factories import PASSWORD, UserFactory, make_member, make_team

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def teams(transactional_db):
    acme, globex = make_team("acme", "Acme"), make_team("globex", "Globex")
    make_member(acme, TeamRole.ADMIN, username="acme-owner")
    make_member(globex, TeamRole.ADMIN, username="globex-owner")
    return acme, globex


@pytest.fixture
def sso_page(page):
    # The provider's built-in pages import a web font: nothing may leave the machine.
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    return page


def sso_login(page, base: str, login: str) -> None:
    """From the portal's login page, through the provider's login (and consent) pages, back home."""
    page.goto(f"{base}/login/")
    page.get_by_role("link", name="Sign in with Corp IdP").click()
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the provider's development login accepts all")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(lambda url: url.startswith(base) or "/interaction/" in url)
    if "/interaction/" in page.url:  # consent, asked the first time for this client
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/")


def logout(page, base: str) -> None:
    page.get_by_role("button", name="Log out").click()
    # RP-initiated logout: the provider asks, then sends the browser back to the portal
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{base}/login/")


def memberships(username: str) -> dict[str, tuple[str, str]]:
    return {
        m.team.slug: (m.role, m.source)
        for m in Membership.objects.filter(user__username=username).select_related("team")
    }


def test_sso_login_lands_in_the_groups_teams_and_follows_the_idp(sso_world, sso_page, teams):
    page = sso_page
    base, provider = sso_world()
    provider.set_user("alice", groups=["mcp-acme-reviewers", "unmapped-group"])

    sso_login(page, base, "alice")
    expect(page.locator("body")).to_contain_text("Acme")
    assert memberships("alice") == {"acme": ("reviewer", "sso")}
    alice = get_user_model().objects.get(username="alice")
    assert not alice.has_usable_password() and not alice.is_staff
    assert SsoIdentity.objects.get(user=alice).issuer == provider.issuer
    # a reviewer, not an admin: the members page shows the role, policy editing is refused
    page.goto(f"{base}/team/members/")
    expect(page.locator("tr", has_text="alice")).to_contain_text("Reviewer")
    expect(page.locator("tr", has_text="alice")).to_contain_text("SSO")
    assert page.request.get(f"{base}/governance/servers/add/").status == 403

    logout(page, base)
    assert page.request.get(f"{base}/", max_redirects=0).status == 302  # the portal session is gone

    # promoted in the IdP and added to another team: the next login follows
    provider.set_user("alice", groups=["mcp-acme-admins", "mcp-globex-viewers"])
    sso_login(page, base, "alice")
    assert memberships("alice") == {"acme": ("admin", "sso"), "globex": ("viewer", "sso")}
    assert page.request.get(f"{base}/governance/servers/add/").status == 200
    logout(page, base)

    # removed from the acme groups: acme's access is gone at the next login
    provider.set_user("alice", groups=["mcp-globex-viewers"])
    sso_login(page, base, "alice")
    assert memberships("alice") == {"globex": ("viewer", "sso")}
    expect(page.locator("body")).to_contain_text("Globex")
    expect(page.locator("body")).not_to_contain_text("Acme")
    page.goto(f"{base}/team/members/")
    expect(page.locator("h1")).to_contain_text("Members of Globex")


def test_an_existing_local_account_is_not_taken_over_through_sso(sso_world, sso_page, teams):
    acme, _ = teams
    make_member(acme, TeamRole.VIEWER, username="bob")
    base, provider = sso_world()
    provider.set_user("bob-at-idp", username="bob", groups=["mcp-acme-admins"])
    page = sso_page
    page.goto(f"{base}/login/")
    page.get_by_role("link", name="Sign in with Corp IdP").click()
    page.fill("input[name=login]", "bob-at-idp")
    page.fill("input[name=password]", "x")
    page.get_by_role("button", name="Sign-in").click()
    if "/interaction/" in page.url:
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/login/")
    expect(page.locator("#messages")).to_contain_text("An account named 'bob' already exists")
    assert memberships("bob") == {"acme": ("viewer", "local")}
    assert not SsoIdentity.objects.exists()


def test_an_id_token_not_signed_by_the_trusted_keys_is_refused(sso_world, sso_page, teams):
    base, provider = sso_world(foreign_jwks=True)
    provider.set_user("mallory", groups=["mcp-acme-admins"])
    page = sso_page
    page.goto(f"{base}/login/")
    page.get_by_role("link", name="Sign in with Corp IdP").click()
    page.fill("input[name=login]", "mallory")
    page.fill("input[name=password]", "x")
    page.get_by_role("button", name="Sign-in").click()
    if "/interaction/" in page.url:
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/login/")
    expect(page.locator("#messages")).to_contain_text("could not be verified; you are not logged in")
    assert page.request.get(f"{base}/", max_redirects=0).status == 302
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_local_login_off_leaves_only_sso(sso_world, sso_page, teams):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    base, provider = sso_world(MCPGOV_LOCAL_LOGIN="0")
    page = sso_page
    page.goto(f"{base}/login/")
    expect(page.get_by_role("link", name="Sign in with Corp IdP")).to_be_visible()
    expect(page.locator("#id_password")).to_have_count(0)

    # A password POST with a valid CSRF token and a correct password is refused, here and in the admin.
    http = requests.Session()
    admin_login = http.get(f"{base}/admin/login/", timeout=60).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', admin_login).group(1)
    form = {"csrfmiddlewaretoken": token, "username": "root", "password": PASSWORD}
    refused = http.post(f"{base}/login/", data=form, headers={"Referer": f"{base}/login/"}, timeout=60)
    assert refused.status_code == 403 and "Password login is turned off" in refused.text
    http.post(f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"}, timeout=60)
    assert "sessionid" not in http.cookies
    assert http.get(f"{base}/", allow_redirects=False, timeout=60).status_code == 302

    # SSO still works
    provider.set_user("carol", groups=["mcp-globex-viewers"])
    sso_login(page, base, "carol")
    assert memberships("carol") == {"globex": ("viewer", "sso")}


def test_a_callback_with_a_state_this_browser_did_not_start_is_refused(sso_world, teams):
    base, _ = sso_world()
    http = requests.Session()
    start = http.get(f"{base}/sso/authenticate/", allow_redirects=False, timeout=60)
    assert start.status_code == 302
    to_provider = requests.utils.urlparse(start.headers["Location"])
    params = dict(p.split("=", 1) for p in to_provider.query.split("&"))
    assert params["code_challenge_method"] == "S256" and params["nonce"] and params["state"]
    forged = http.get(f"{base}/sso/callback/?code=stolen&state=forged", allow_redirects=False, timeout=60)
    assert forged.status_code == 400
    assert http.get(f"{base}/", allow_redirects=False, timeout=60).status_code == 302  # not logged in
