"""Single sign-on logins through the service: accounts matched on issuer + subject, team roles
following the groups claim, local memberships and a team's last admin kept."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from portal.choices import TeamRole
from portal.models import ChangeRecord, Membership, SsoIdentity, Team
from portal.permissions import CHANGE_POLICY, REVIEW_ACCESS, has_team_perm
from portal.sso.conf import parse_team_role_map
from portal.sso.services import SsoLoginRefused, sso_login
from tests.factories import UserFactory, make_member, make_team

ISSUER = "https://idp.example.com"
MAP = "mcp-acme-admins=acme:admin,mcp-acme-reviewers=acme:reviewer,mcp-acme-viewers=acme:viewer,mcp-globex=globex:requester,mcp-ghost=ghost:admin"


@pytest.fixture(autouse=True)
def sso_settings(settings):
    settings.OIDC_TEAM_ROLE_MAP = MAP
    settings.OIDC_USERNAME_CLAIM = "preferred_username"
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_CREATE_USER = True
    settings.OIDC_LINK_BY_EMAIL = False


@pytest.fixture
def teams(db):
    acme, globex = make_team("acme"), make_team("globex")
    make_member(acme, TeamRole.ADMIN, username="acme-owner")
    make_member(globex, TeamRole.ADMIN, username="globex-owner")
    return acme, globex


def claims(sub="u-1", username="alice", groups=(), **extra):
    return {
        "iss": ISSUER,
        "sub": sub,
        "preferred_username": username,
        "email": f"{username}@corp.example",
        "email_verified": True,
        "groups": list(groups),
        **extra,
    }


def roles(user) -> dict[str, tuple[str, str]]:
    return {
        m.team.slug: (m.role, m.source) for m in Membership.objects.filter(user=user).select_related("team")
    }


def test_first_login_creates_the_account_and_memberships_from_groups(teams):
    acme, _ = teams
    user, result = sso_login(claims=claims(groups=["mcp-acme-reviewers", "mcp-globex", "unrelated"]))
    assert user.username == "alice" and not user.has_usable_password()
    assert not user.is_staff and not user.is_superuser
    assert roles(user) == {"acme": ("reviewer", "sso"), "globex": ("requester", "sso")}
    assert has_team_perm(user, REVIEW_ACCESS, acme) and not has_team_perm(user, CHANGE_POLICY, acme)
    assert SsoIdentity.objects.get(user=user).subject == "u-1"
    record = ChangeRecord.objects.filter(team=acme, object_type="membership").latest("id")
    assert record.who.startswith("single sign-on (idp.example.com)")
    assert sorted(result.added) == ["acme:reviewer", "globex:requester"]


def test_roles_follow_the_groups_at_each_login_and_leave_when_the_group_goes(teams):
    acme, _ = teams
    user, _ = sso_login(claims=claims(groups=["mcp-acme-viewers"]))
    assert roles(user) == {"acme": ("viewer", "sso")}
    # several groups for one team: the strongest role wins
    sso_login(claims=claims(groups=["mcp-acme-viewers", "mcp-acme-admins"]))
    assert roles(user) == {"acme": ("admin", "sso")}
    assert has_team_perm(user, CHANGE_POLICY, acme)
    sso_login(claims=claims(groups=["mcp-globex"]))
    assert roles(user) == {"globex": ("requester", "sso")}
    # the next request's user object: grants are cached per user object, as Django's own are
    user = type(user).objects.get(pk=user.pk)
    assert not has_team_perm(user, CHANGE_POLICY, acme)
    sso_login(claims=claims(groups=[]))
    assert roles(user) == {}


def test_a_renamed_idp_account_keeps_its_user(teams):
    user, _ = sso_login(claims=claims(username="alice", groups=["mcp-acme-viewers"]))
    again, _ = sso_login(claims=claims(username="alice.smith", groups=["mcp-acme-viewers"]))
    assert again.pk == user.pk
    assert get_user_model().objects.filter(username="alice.smith").count() == 0


def test_a_claim_never_creates_a_team_nor_grants_site_admin(teams):
    user, result = sso_login(claims=claims(groups=["mcp-ghost"], is_superuser=True, is_staff=True))
    assert not Team.objects.filter(slug="ghost").exists()
    assert result.unknown_teams == ["ghost"]
    user.refresh_from_db()
    assert not user.is_staff and not user.is_superuser and roles(user) == {}


def test_an_existing_local_account_is_not_taken_over(teams):
    local = UserFactory(username="alice", email="alice@corp.example")
    with pytest.raises(SsoLoginRefused, match="already exists"):
        sso_login(claims=claims(groups=["mcp-acme-admins"]))
    assert not SsoIdentity.objects.exists() and roles(local) == {}
    # case variants are the same name
    with pytest.raises(SsoLoginRefused):
        sso_login(claims=claims(username="Alice"))


def test_linking_by_verified_email_when_configured(settings, teams):
    settings.OIDC_LINK_BY_EMAIL = True
    local = UserFactory(username="alice", email="Alice@Corp.example")
    with pytest.raises(SsoLoginRefused):  # the provider does not vouch for the address
        sso_login(claims=claims(email_verified=False))
    with pytest.raises(SsoLoginRefused):  # another address
        sso_login(claims=claims(email="mallory@corp.example"))
    user, _ = sso_login(claims=claims(groups=["mcp-acme-viewers"]))
    assert user.pk == local.pk and roles(local) == {"acme": ("viewer", "sso")}
    # a second subject with the same name and email cannot take the linked account
    with pytest.raises(SsoLoginRefused):
        sso_login(claims=claims(sub="u-2"))


def test_site_admin_accounts_are_never_linked(settings, teams):
    settings.OIDC_LINK_BY_EMAIL = True
    UserFactory(username="alice", email="alice@corp.example", is_staff=True)
    with pytest.raises(SsoLoginRefused):
        sso_login(claims=claims())


def test_no_account_without_a_username_claim_or_when_creation_is_off(settings, teams):
    with pytest.raises(SsoLoginRefused, match="preferred_username"):
        sso_login(claims=claims(username=""))
    with pytest.raises(SsoLoginRefused, match="preferred_username"):
        sso_login(claims=claims(username="has spaces"))
    settings.OIDC_CREATE_USER = False
    with pytest.raises(SsoLoginRefused, match="no portal account"):
        sso_login(claims=claims())
    assert not get_user_model().objects.filter(username="alice").exists()


def test_username_from_the_email_claim(settings, teams):
    settings.OIDC_USERNAME_CLAIM = "email"
    user, _ = sso_login(claims=claims(username="bob"))
    assert user.username == "bob@corp.example"


def test_local_memberships_stay_unless_the_idp_names_their_team(teams):
    acme, globex = teams
    user, _ = sso_login(claims=claims(groups=[]))
    from portal.services import membership_set

    membership_set(team=acme, user=user, role=TeamRole.REQUESTER, is_auditor=True)
    membership_set(team=globex, user=user, role=TeamRole.VIEWER)
    sso_login(claims=claims(groups=[]))
    assert roles(user) == {"acme": ("requester", "local"), "globex": ("viewer", "local")}
    # the IdP names acme: it takes that membership over (the auditor flag stays local)
    sso_login(claims=claims(groups=["mcp-acme-reviewers"]))
    assert roles(user) == {"acme": ("reviewer", "sso"), "globex": ("viewer", "local")}
    assert Membership.objects.get(user=user, team=acme).is_auditor
    sso_login(claims=claims(groups=[]))
    assert roles(user) == {"globex": ("viewer", "local")}


def test_the_last_admin_of_a_team_is_kept(teams):
    acme, _ = teams
    user, _ = sso_login(claims=claims(groups=["mcp-acme-admins"]))
    Membership.objects.get(team=acme, user__username="acme-owner").delete()
    _, result = sso_login(claims=claims(groups=["mcp-acme-viewers"]))  # demotion refused
    assert roles(user) == {"acme": ("admin", "sso")} and result.kept == ["acme:admin"]
    _, result = sso_login(claims=claims(groups=[]))  # removal refused
    assert roles(user) == {"acme": ("admin", "sso")} and result.kept == ["acme:admin"]
    make_member(acme, TeamRole.ADMIN, username="new-owner")
    _, result = sso_login(claims=claims(groups=[]))
    assert roles(user) == {} and result.removed == ["acme"]


def test_a_disabled_account_cannot_log_in(teams):
    user, _ = sso_login(claims=claims())
    user.is_active = False
    user.save()
    with pytest.raises(SsoLoginRefused, match="disabled"):
        sso_login(claims=claims())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("acme:admin", "not 'group=team:role'"),
        ("g=acme:boss", "role must be"),
        ("g=acme:admin,g=acme:viewer", "twice"),
    ],
)
def test_malformed_team_role_maps_are_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_team_role_map(raw)


def test_team_role_map_parses():
    # '=' may appear in a group name (the last one separates it); commas separate entries
    assert parse_team_role_map(" a=acme:admin , cn=ops=globex:viewer ,") == {
        "a": ("acme", "admin"),
        "cn=ops": ("globex", "viewer"),
    }
