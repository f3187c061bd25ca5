"""Policy drafts: edits collect in a per-team draft, are previewed as the diff of the next bundles,
optionally approved by a second admin, and published as one new version per changed environment.

A draft is an ordered list of service calls (operation + arguments, objects named by natural key),
not a copy of the policy: the live rows stay as they are until the publish, so the bundle compiler,
flag toggles, grants and the periodic re-issue keep compiling the live policy. Previewing replays
the calls in a savepoint, compiles every environment and rolls back; publishing replays them for
real, through the same services, in one transaction. See docs/policy-lifecycle.md.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone

from governance.choices import DraftStatus
from governance.models import (
    AgentRole,
    Environment,
    McpServer,
    McpTool,
    PolicyBundle,
    PolicyDraft,
    PolicyDraftChange,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
    ShadowBundle,
)
from governance.services.common import check_policy_perm
from portal.choices import ChangeEventType
from portal.models import ChangeRecord, Team
from portal.pages import ChangeDeferred
from portal.services import change_record, real_user

# operation name -> the undecorated service
OPERATIONS: dict[str, Callable[..., Any]] = {}
# Set while a draft's calls are applied (preview or publish), and while a drafted call runs its own
# nested service calls (the YAML import calls the role services): those run, they are not drafted.
_applying: ContextVar[bool] = ContextVar("policy_draft_applying", default=False)


class DraftChangeRecorded(ChangeDeferred):
    def __init__(self, draft: PolicyDraft, change: PolicyDraftChange):
        self.draft, self.change = draft, change
        super().__init__(
            f"Kept in the policy draft (change {change.position}): {change.summary}. "
            "It reaches the gateways when the draft is published.",
            reverse("governance:draft-detail"),
        )


@contextmanager
def _applying_calls() -> Iterator[None]:
    token = _applying.set(True)
    try:
        yield
    finally:
        _applying.reset(token)


# --- natural keys: a draft names objects the way the policy does, so later calls can refer to
# objects that earlier calls in the same draft create or rename --------------------------------

_KEYS: dict[type[models.Model], tuple[Callable[[Any], dict[str, str]], Callable[[Team, dict], Any]]] = {
    McpServer: (
        lambda o: {"slug": o.slug},
        lambda t, k: McpServer.objects.filter(team=t, slug=k["slug"]).first(),
    ),
    AgentRole: (
        lambda o: {"name": o.name},
        lambda t, k: AgentRole.objects.filter(team=t, name=k["name"]).first(),
    ),
    Environment: (
        lambda o: {"name": o.name},
        lambda t, k: Environment.objects.filter(team=t, name=k["name"]).first(),
    ),
    RoleServerRule: (
        lambda o: {"role": o.role.name, "server": o.server.slug},
        lambda t, k: RoleServerRule.objects.filter(
            role__team=t, role__name=k["role"], server__slug=k["server"]
        ).first(),
    ),
    ServerBinding: (
        lambda o: {"environment": o.environment.name, "server": o.server.slug},
        lambda t, k: ServerBinding.objects.filter(
            environment__team=t, environment__name=k["environment"], server__slug=k["server"]
        ).first(),
    ),
    ServerRateLimit: (
        lambda o: {"server": o.server.slug},
        lambda t, k: ServerRateLimit.objects.filter(team=t, server__slug=k["server"]).first(),
    ),
    McpTool: (
        lambda o: {"server": o.server.slug, "name": o.name},
        lambda t, k: McpTool.objects.filter(server__team=t, server__slug=k["server"], name=k["name"]).first(),
    ),
}
_BY_LABEL = {model._meta.label_lower: model for model in _KEYS}


def _encode(value: Any, team: Team) -> Any:
    if isinstance(value, Team):
        if value.pk != team.pk:
            raise ValidationError("A draft only holds changes to its own team.")
        return {"$team": True}
    if isinstance(value, models.Model):
        if type(value) not in _KEYS:
            raise ValidationError(f"A {value._meta.verbose_name} cannot be changed through a draft.")
        return {"$model": value._meta.label_lower, "key": _KEYS[type(value)][0](value)}
    if isinstance(value, dict):
        return {str(k): _encode(v, team) for k, v in value.items()}
    if isinstance(value, list | tuple | models.QuerySet):
        return [_encode(v, team) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValidationError(f"A draft cannot hold a value of type {type(value).__name__}.")


def _decode(value: Any, team: Team) -> Any:
    if isinstance(value, dict):
        if value.get("$team") is True and len(value) == 1:
            return team
        if "$model" in value and set(value) == {"$model", "key"}:
            model = _BY_LABEL[value["$model"]]
            obj = _KEYS[model][1](team, value["key"])
            if obj is None:
                what = ", ".join(f"{k} {v}" for k, v in value["key"].items())
                raise ValidationError(f"The {model._meta.verbose_name} ({what}) no longer exists.")
            return obj
        return {k: _decode(v, team) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, team) for v in value]
    return value


def _team_of(kwargs: dict[str, Any]) -> Team | None:
    for value in kwargs.values():
        if isinstance(value, Team):
            return value
        if isinstance(value, McpTool):
            return value.server.team
        if isinstance(value, RoleServerRule):
            return value.role.team
        if isinstance(value, ServerBinding):
            return value.environment.team
        if isinstance(value, models.Model) and hasattr(value, "team"):
            return value.team
    return None


def draftable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Policy services wear this: for a team whose edits go through drafts, a person's call is
    validated and appended to the team's open draft (raising DraftChangeRecorded) instead of applied.

    Calls by the system (`actor=None`: seeding, tasks), dry runs, and calls made while a draft is
    applied run at once as before.
    """
    OPERATIONS[fn.__name__] = fn

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        if kwargs.get("actor") is None or _applying.get():
            return fn(**kwargs)
        team = _team_of(kwargs)
        if (
            kwargs.get("dry_run")
            or team is None
            or Team.objects.filter(pk=team.pk, policy_edits_immediate=True).exists()
        ):
            with _applying_calls():  # its nested service calls are part of it, never drafted
                return fn(**kwargs)
        draft, change = draft_change_add(
            team=team, actor=kwargs["actor"], operation=fn.__name__, kwargs=kwargs
        )
        raise DraftChangeRecorded(draft, change)

    wrapper.undrafted = fn  # type: ignore[attr-defined]
    return wrapper


# --- applying a draft -----------------------------------------------------------------------


def _actor_of(change: PolicyDraftChange):
    return change.author if change.author_id else None


def _load_operations() -> None:
    # The decorated services register themselves when imported; a task or command may not have yet.
    from governance.services import environments, limits, policy_yaml, roles, servers  # noqa: F401


def _apply(team: Team, change: PolicyDraftChange, *, actor=None) -> None:
    if change.operation not in OPERATIONS:
        _load_operations()
    fn = OPERATIONS.get(change.operation)
    if fn is None:
        raise ValidationError(f"Change {change.position}: unknown operation {change.operation}.")
    kwargs = _decode(change.arguments, team)
    kwargs["actor"] = actor if actor is not None else _actor_of(change)
    try:
        fn(**kwargs)
    except ValidationError as exc:
        raise ValidationError(
            f"Change {change.position} ({change.summary}): {'; '.join(exc.messages)}"
        ) from exc


def _summary_since(team: Team, after_id: int, fallback: str) -> str:
    rows = ChangeRecord.objects.filter(team=team, pk__gt=after_id).order_by("pk")
    parts = [r.summary or f"{r.object_type} {r.object_repr} {r.get_action_display().lower()}" for r in rows]
    return ("; ".join(p for p in parts if p) or fallback)[:500]


def _last_record_id(team: Team) -> int:
    return ChangeRecord.objects.filter(team=team).order_by("-pk").values_list("pk", flat=True).first() or 0


def _in_draft(value: Any) -> Any:
    """`value` with each model instance read again (inside the trial: as the draft has it)."""
    if isinstance(value, models.Model) and type(value) in _KEYS:
        fresh = type(value).objects.filter(pk=value.pk).first()
        if fresh is None:
            raise ValidationError(f"The {value._meta.verbose_name} {value} is removed in the draft.")
        return fresh
    if isinstance(value, dict):
        return {k: _in_draft(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_in_draft(v) for v in value]
    return value


def draft_open(*, team: Team) -> PolicyDraft | None:
    return PolicyDraft.objects.open_for(team)


def draft_change_add(
    *, team: Team, actor, operation: str, kwargs: dict[str, Any]
) -> tuple[PolicyDraft, PolicyDraftChange]:
    """Validate the call against the draft so far (replayed in a savepoint) and append it."""
    check_policy_perm(actor, team)
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).first()  # one writer per team's draft
        draft = PolicyDraft.objects.open_for(team) or PolicyDraft.objects.create(
            team=team, created_by=real_user(actor)
        )
        changes = list(draft.changes.select_related("author").order_by("position"))
        change = PolicyDraftChange(
            draft=draft, position=len(changes) + 1, operation=operation, author=real_user(actor)
        )
        # The trial: the draft so far, then this call; its change records name what it does.
        with transaction.atomic():
            with _applying_calls():
                for earlier in changes:
                    _apply(team, earlier)
                # The caller holds live objects; name them as they are in the draft (an earlier change
                # may have renamed one), and apply the call to the draft's rows, not the stale objects.
                change.arguments = _encode(_in_draft({k: v for k, v in kwargs.items() if k != "actor"}), team)
                before = _last_record_id(team)
                _apply(team, change, actor=actor)
                summary = _summary_since(team, before, operation.replace("_", " "))
            transaction.set_rollback(True)
        if summary == operation.replace("_", " "):  # the service recorded nothing: it changed nothing
            raise ValidationError("This changes nothing: the draft already says so.")
        change.summary = summary
        change.save()
        if draft.approved_by_id:  # an approval covers the draft as it was
            draft.approved_by, draft.approved_at = None, None
            draft.save(update_fields=["approved_by", "approved_at"])
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.DRAFT_CHANGE_ADDED,
            obj=draft,
            object_type="policy draft",
            summary=f"Draft change {change.position}: {summary}"[:500],
        )
    return draft, change


# --- the preview: the diff of the next bundle, per environment, in people's terms ------------


@dataclass
class EnvironmentPreview:
    environment: Environment
    live_version: int | None
    lines: list[str]
    live_content: dict[str, Any] | None
    draft_content: dict[str, Any] | None
    draft_bundle: Any = None  # mcpgov.bundle.Bundle compiled from the draft (None: the draft breaks it)
    draft_compiled: Any = None  # its CompiledPolicy (what a shadow bundle signs)

    @property
    def changed(self) -> bool:
        return bool(self.lines)


@dataclass
class DraftPreview:
    draft: PolicyDraft
    environments: list[EnvironmentPreview] = field(default_factory=list)
    error: str = ""

    @property
    def affects_production(self) -> bool:
        return any(p.changed and p.environment.is_production for p in self.environments)

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.environments)


def _live_content(env: Environment) -> tuple[int | None, dict[str, Any] | None]:
    latest = (
        PolicyBundle.objects.filter(environment=env).order_by("-version").only("version", "content").first()
    )
    return (latest.version, latest.content) if latest else (None, None)


def draft_preview(*, draft: PolicyDraft) -> DraftPreview:
    """Compile every environment with the draft applied (in a savepoint, rolled back) and compare
    each with its live bundle."""
    from governance.services.bundles import bundle_compile
    from governance.services.policy_changes import describe_bundle_changes

    team = draft.team
    preview = DraftPreview(draft=draft)
    envs = list(Environment.objects.filter(team=team).select_related("team").order_by("order", "pk"))
    live = {env.pk: _live_content(env) for env in envs}
    compiled: dict[str, Any] = {}
    with transaction.atomic():
        try:
            with _applying_calls():
                for change in draft.changes.select_related("author").order_by("position"):
                    _apply(team, change)
            now = timezone.now()
            for env in Environment.objects.filter(team=team).select_related("team"):
                compiled[env.name] = bundle_compile(environment=env, now=now)
        except (ValidationError, PermissionDenied) as exc:
            preview.error = "; ".join(getattr(exc, "messages", [str(exc)]))
        transaction.set_rollback(True)
    for env in envs:
        version, live_content = live[env.pk]
        result = compiled.get(env.name)
        draft_content = result.content if result else None
        lines = (
            describe_bundle_changes(env.name, live_content or {}, draft_content)
            if draft_content is not None
            else []
        )
        preview.environments.append(
            EnvironmentPreview(
                environment=env,
                live_version=version,
                lines=lines,
                live_content=live_content,
                draft_content=draft_content,
                draft_bundle=result.bundle if result else None,
                draft_compiled=result,
            )
        )
    # Environments the draft adds have no live bundle: everything in them is new.
    known = {env.name for env in envs}
    for name, result in compiled.items():
        if name not in known:
            preview.environments.append(
                EnvironmentPreview(
                    environment=Environment(team=team, name=name, is_production=False),
                    live_version=None,
                    lines=[f"environment {name} added"],
                    live_content=None,
                    draft_content=result.content,
                    draft_bundle=result.bundle,
                )
            )
    return preview


# --- the workflow ------------------------------------------------------------------------------


def _locked(draft: PolicyDraft) -> PolicyDraft:
    draft = PolicyDraft.objects.select_for_update().select_related("team").get(pk=draft.pk)
    if draft.status != DraftStatus.OPEN:
        raise ValidationError(
            f"This draft is {draft.get_status_display().lower()}; it cannot change any more."
        )
    return draft


def _authors(draft: PolicyDraft) -> set[int]:
    ids = set(draft.changes.exclude(author=None).values_list("author_id", flat=True))
    if draft.created_by_id:
        ids.add(draft.created_by_id)
    return ids


@transaction.atomic
def draft_change_remove(*, draft: PolicyDraft, position: int, actor) -> PolicyDraft:
    """Take one change out of the draft (the later ones must still apply without it)."""
    check_policy_perm(actor, draft.team)
    draft = _locked(draft)
    change = draft.changes.filter(position=position).first()
    if change is None:
        raise ValidationError({"position": f"The draft has no change {position}."})
    change.delete()
    for later in draft.changes.filter(position__gt=position).order_by("position"):
        later.position -= 1
        later.save(update_fields=["position"])
    draft.approved_by, draft.approved_at = None, None
    draft.save(update_fields=["approved_by", "approved_at"])
    change_record(
        team=draft.team,
        actor=actor,
        event_type=ChangeEventType.DRAFT_CHANGE_REMOVED,
        obj=draft,
        object_type="policy draft",
        summary=f"Draft change {position} taken out: {change.summary}"[:500],
    )
    return draft


@transaction.atomic
def draft_approve(*, draft: PolicyDraft, actor) -> PolicyDraft:
    """A second admin's approval; never one of the draft's authors."""
    check_policy_perm(actor, draft.team)
    draft = _locked(draft)
    if not draft.changes.exists():
        raise ValidationError("The draft is empty: there is nothing to approve.")
    if actor.pk in _authors(draft):
        raise PermissionDenied("You made changes in this draft: another admin must approve it.")
    draft.approved_by, draft.approved_at = actor, timezone.now()
    draft.save(update_fields=["approved_by", "approved_at"])
    change_record(
        team=draft.team,
        actor=actor,
        event_type=ChangeEventType.DRAFT_APPROVED,
        obj=draft,
        object_type="policy draft",
        summary="Policy draft approved",
    )
    return draft


@transaction.atomic
def draft_discard(*, draft: PolicyDraft, actor, reason: str = "") -> PolicyDraft:
    check_policy_perm(actor, draft.team)
    draft = _locked(draft)
    draft.status, draft.closed_by, draft.closed_at = DraftStatus.DISCARDED, real_user(actor), timezone.now()
    draft.close_reason = (reason or "").strip()[:500]
    draft.save()
    ShadowBundle.objects.filter(draft=draft).delete()  # a shadow of a discarded draft is dropped with it
    change_record(
        team=draft.team,
        actor=actor,
        event_type=ChangeEventType.DRAFT_DISCARDED,
        obj=draft,
        object_type="policy draft",
        summary=f"Policy draft discarded ({draft.changes.count()} changes)"
        + (f": {draft.close_reason}" if draft.close_reason else ""),
    )
    return draft


def draft_publish(*, draft: PolicyDraft, actor) -> PolicyDraft:
    """Apply every change in order and publish each environment whose bundle changed, as one version.

    When the team requires it and the draft changes a production bundle, a second admin (not an
    author) must have approved this exact draft first.
    """
    from governance.services.bundles import bundle_publish

    check_policy_perm(actor, draft.team)
    with transaction.atomic():
        draft = _locked(draft)
        team = draft.team
        changes = list(draft.changes.select_related("author").order_by("position"))
        if not changes:
            raise ValidationError("The draft is empty: there is nothing to publish.")
        if team.policy_drafts_require_second_approver:
            preview = draft_preview(draft=draft)
            if preview.affects_production:
                if draft.approved_by_id is None:
                    raise PermissionDenied(
                        "This draft changes the production bundle: another admin must approve it before it is "
                        "published."
                    )
                if draft.approved_by_id in _authors(draft):
                    raise PermissionDenied(
                        "The approval must come from an admin who did not author the draft."
                    )
        with _applying_calls():
            for change in changes:
                _apply(team, change)
        reason = f"policy draft {draft.pk} published ({len(changes)} changes)"
        versions = {}
        for env in Environment.objects.filter(team=team).select_related("team").order_by("order", "pk"):
            result = bundle_publish(environment=env, reason=reason, actor=actor)
            if result.created:
                versions[env.name] = result.bundle.version
        draft.status, draft.closed_by, draft.closed_at = (
            DraftStatus.PUBLISHED,
            real_user(actor),
            timezone.now(),
        )
        draft.published_versions = versions
        draft.save()
        ShadowBundle.objects.filter(draft=draft).delete()  # promoted: the live bundle now says what it said
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.DRAFT_PUBLISHED,
            obj=draft,
            object_type="policy draft",
            summary=f"Policy draft published: {len(changes)} changes, "
            + (", ".join(f"{name} v{v}" for name, v in versions.items()) or "no bundle changed"),
        )
    return draft


# --- shadow mode: the draft decided beside the live bundle by the gateways, never enforced ------------

SHADOW_LIFETIME = timedelta(days=7)  # a shadow is evaluated for a week unless shadowed again or promoted


def draft_shadow_publish(*, draft: PolicyDraft, actor, now=None) -> list[ShadowBundle]:
    """Sign the draft's bundle of every existing environment as a shadow (same team key, the shadow JWS
    type) and serve it beside the live one; any earlier shadow of the team is replaced."""
    from governance.services.signing import active_signer
    from mcpgov.verify import SHADOW_JWS_TYPE

    check_policy_perm(actor, draft.team)
    with transaction.atomic():
        draft = _locked(draft)
        team = draft.team
        changes = draft.changes.count()
        if not changes:
            raise ValidationError("The draft is empty: there is nothing to evaluate in shadow.")
        preview = draft_preview(draft=draft)
        if preview.error:
            raise ValidationError(f"The draft no longer applies: {preview.error}")
        now = now or timezone.now()
        signer = active_signer(team=team)
        ShadowBundle.objects.filter(team=team).delete()
        made = []
        for env_preview in preview.environments:
            env, compiled = env_preview.environment, env_preview.draft_compiled
            if env.pk is None or compiled is None:
                continue  # an environment the draft adds has no gateways yet
            version = env_preview.live_version or 0
            payload = compiled.payload(
                version=max(version, 1), issued_at=now, expires_at=now + SHADOW_LIFETIME
            )
            jws = signer.sign(payload, typ=SHADOW_JWS_TYPE)
            made.append(
                ShadowBundle.objects.create(
                    team=team,
                    environment=env,
                    draft=draft,
                    draft_changes=changes,
                    version=version,
                    content=compiled.content,
                    jws=jws,
                    etag=hashlib.sha256(jws.encode("ascii")).hexdigest(),
                    kid=signer.kid,
                    issued_at=now,
                    expires_at=now + SHADOW_LIFETIME,
                    created_by=real_user(actor),
                )
            )
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.SHADOW_PUBLISHED,
            obj=draft,
            object_type="policy draft",
            summary=f"Policy draft published as a shadow ({changes} changes, "
            f"{', '.join(s.environment.name for s in made)}): decided beside the live bundle, not enforced",
        )
    return made


@transaction.atomic
def shadow_drop(*, team: Team, actor) -> int:
    """Stop the team's shadow evaluation (gateways notice at their next shadow poll)."""
    check_policy_perm(actor, team)
    dropped, _ = ShadowBundle.objects.filter(team=team).delete()
    if not dropped:
        raise ValidationError("There is no shadow to drop.")
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.SHADOW_DROPPED,
        object_type="policy draft",
        summary="Shadow bundle dropped: gateways stop evaluating it",
    )
    return dropped
