"""Writes at a single sign-on login: find or create the user, then make their SSO-managed team
memberships follow the identity provider's groups (through portal.services, which keeps a team's
last admin and records the change history)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal import services
from portal.choices import MembershipSource, TeamRole
from portal.models import Membership, SsoIdentity, Team
from portal.sso.conf import ClaimSettings, claim_settings

logger = logging.getLogger(__name__)

# When several groups map to one team, the strongest role wins.
ROLE_RANK = {TeamRole.VIEWER: 1, TeamRole.REQUESTER: 2, TeamRole.REVIEWER: 3, TeamRole.ADMIN: 4}


class SsoLoginRefused(Exception):
    """The identity provider vouched for someone the portal will not log in; the message says why."""


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # changes refused to keep a team's last admin
    unknown_teams: list[str] = field(default_factory=list)


def groups_from_claims(claims: dict, groups_claim: str) -> list[str]:
    value = claims.get(groups_claim)
    if value is None:
        return []
    if isinstance(value, str):  # some providers send a single group as a string
        return [value]
    return [str(group) for group in value]


def team_roles_from_groups(groups: list[str], team_role_map: dict[str, tuple[str, str]]) -> dict[str, str]:
    """{team slug: role} the groups grant; groups not in the map grant nothing."""
    wanted: dict[str, str] = {}
    for group in groups:
        if group not in team_role_map:
            continue
        team, role = team_role_map[group]
        if team not in wanted or ROLE_RANK[role] > ROLE_RANK[wanted[team]]:
            wanted[team] = role
    return wanted


def _label(issuer: str) -> str:
    return f"single sign-on ({urlsplit(issuer).netloc or issuer})"[:200]


@transaction.atomic
def sso_memberships_sync(*, user, team_roles: dict[str, str], issuer: str = "") -> SyncResult:
    """Make `user`'s SSO-managed memberships exactly `team_roles` ({team slug: role}).

    - A team the IdP names that does not exist is ignored: a claim never creates a team.
    - A local membership (granted by a team admin) in a team the IdP names is taken over:
      its role follows the IdP from now on. Local memberships in other teams are left alone.
    - An SSO membership the IdP no longer grants is removed, unless that would leave its team
      without an admin; then it is kept (and demotions of a last admin likewise) and reported.
    The auditor flag stays a local decision. Site-admin rights (is_staff, is_superuser) are never touched.
    """
    result = SyncResult()
    label = _label(issuer)
    teams = {team.slug: team for team in Team.objects.filter(slug__in=team_roles)}
    current = {
        m.team.slug: m
        for m in Membership.objects.select_for_update().filter(user=user).select_related("team")
    }
    for slug, role in sorted(team_roles.items()):
        team = teams.get(slug)
        if team is None:
            result.unknown_teams.append(slug)
            logger.warning("SSO: %s's groups name team %r, which does not exist.", user, slug)
            continue
        membership = current.get(slug)
        if membership and membership.role == role and membership.source == MembershipSource.SSO:
            continue
        try:
            services.membership_set(
                team=team,
                user=user,
                role=role,
                is_auditor=membership.is_auditor if membership else False,
                source=MembershipSource.SSO,
                actor_label=label,
            )
        except ValidationError:
            result.kept.append(f"{slug}:{membership.role}")
            logger.warning("SSO: %s stays admin of %s, its last admin (the IdP says %s).", user, slug, role)
            continue
        (result.changed if membership else result.added).append(f"{slug}:{role}")
    for slug, membership in sorted(current.items()):
        if membership.source != MembershipSource.SSO or slug in team_roles:
            continue
        try:
            services.membership_remove(membership=membership, actor_label=label)
        except ValidationError:
            result.kept.append(f"{slug}:{membership.role}")
            logger.warning(
                "SSO: %s stays in %s, whose last admin they are (no longer in the IdP group).", user, slug
            )
            continue
        result.removed.append(slug)
    return result


def _valid_username(username: str) -> bool:
    user_model = get_user_model()
    field_ = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        field_.run_validators(username)
    except ValidationError:
        return False
    return 0 < len(username) <= (field_.max_length or 150)


def _link_or_create(*, claims: dict, issuer: str, subject: str, conf: ClaimSettings):
    user_model = get_user_model()
    username = str(claims.get(conf.username_claim) or "").strip()
    if not username or not _valid_username(username):
        raise SsoLoginRefused(
            f"The identity provider sent no usable '{conf.username_claim}' claim; ask an administrator."
        )
    email = str(claims.get("email") or "")
    existing = user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__iexact": username}).first()
    if existing is not None:
        verified_same_email = (
            claims.get("email_verified") is True
            and existing.email
            and existing.email.lower() == email.lower()
        )
        if (
            conf.link_by_email
            and verified_same_email
            and not (existing.is_staff or existing.is_superuser)
            and not existing.sso_identities.filter(issuer=issuer).exists()
        ):
            logger.info("SSO: linking existing account %s to %s (verified email match).", existing, subject)
            user = existing
        else:
            raise SsoLoginRefused(
                f"An account named {username!r} already exists in the portal and is not linked to your "
                "single sign-on identity; ask an administrator to link it."
            )
    elif not conf.create_users:
        raise SsoLoginRefused("Your single sign-on identity has no portal account; ask an administrator.")
    else:
        user = user_model(**{user_model.USERNAME_FIELD: username}, email=email)
        user.set_unusable_password()  # SSO accounts have no local password
        user.save()
        logger.info("SSO: created account %s for %s.", user, subject)
    SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    return user


@transaction.atomic
def sso_login(*, claims: dict) -> tuple[object, SyncResult]:
    """The portal user for verified OIDC `claims` (with `iss` and `sub`), memberships synced.

    Users are matched on (issuer, subject) only. A new subject gets a new account named by the
    username claim, unless a local account has that name: then it is linked only if
    OIDC_LINK_BY_EMAIL is on, the provider says the email is verified, it equals the account's,
    and the account is not a site admin; otherwise the login is refused.
    """
    conf = claim_settings()
    issuer, subject = str(claims.get("iss") or ""), str(claims.get("sub") or "")
    if not issuer or not subject:
        raise SsoLoginRefused("The identity provider's answer has no issuer or subject.")
    identity = (
        SsoIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is not None:
        user = identity.user
    else:
        user = _link_or_create(claims=claims, issuer=issuer, subject=subject, conf=conf)
        identity = SsoIdentity.objects.get(issuer=issuer, subject=subject)
    if not user.is_active:
        raise SsoLoginRefused("Your portal account is disabled.")
    email = str(claims.get("email") or "")
    if email and claims.get("email_verified") is True and user.email != email:
        user.email = email
        user.save(update_fields=["email"])
    SsoIdentity.objects.filter(pk=identity.pk).update(last_login_at=timezone.now())
    team_roles = team_roles_from_groups(groups_from_claims(claims, conf.groups_claim), conf.team_role_map)
    result = sso_memberships_sync(user=user, team_roles=team_roles, issuer=issuer)
    return user, result
