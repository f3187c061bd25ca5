"""The signed flags update: on a toggle, every flag of the environment is signed once (JWS `typ`
`mcpgov-flags+jws`) and announced to the bundle long polls, so gateways switch at once without a
new bundle. The bundle is still rebuilt (debounced) and carries the same flags. See docs/flags.md.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from governance.models import Environment, FlagsUpdate, PolicyBundle
from governance.services.bundles import flags_section
from governance.services.signing import active_signer
from mcpgov.bundle import FLAGS_SCHEMA_ID
from mcpgov.bundle import FlagsUpdate as FlagsUpdateDocument
from mcpgov.verify import FLAGS_JWS_TYPE
from portal import realtime

FLAGS_UPDATE_CHANNEL_PREFIX = "flags-update:"
KEEP_DEFAULT = 20  # settings.MCPGOV_FLAGS_UPDATES_KEEP overrides it


def flags_update_channel(environment_id: int) -> str:
    """The realtime channel woken when a flags update of this environment is issued (token: its revision)."""
    return f"{FLAGS_UPDATE_CHANNEL_PREFIX}{environment_id}"


def flags_update_issue(
    *, environment: Environment, reason: str = "", now: datetime | None = None
) -> FlagsUpdate | None:
    """Sign the environment's flags as they stand in this transaction; call it inside the toggle's transaction.

    Holds the environment's row lock, as `bundle_publish` does, so updates and bundles of one
    environment are ordered: the update names the latest bundle version, and a bundle with a
    higher version is built after it commits and carries these flags (or newer ones). Returns
    None, issuing nothing, when the environment has no live bundle yet (its first bundle carries
    the flags). The waiting long polls are woken on commit.
    """
    env = Environment.objects.select_for_update().select_related("team").get(pk=environment.pk)
    now = now or timezone.now()
    latest = (
        PolicyBundle.objects.filter(environment=env)
        .order_by("-version")
        .values("version", "expires_at")
        .first()
    )
    if latest is None or latest["expires_at"] <= now:
        return None
    previous = FlagsUpdate.objects.filter(environment=env).aggregate(r=Max("revision"))["r"] or 0
    team = env.team
    document = FlagsUpdateDocument.model_validate(
        {
            "schema": FLAGS_SCHEMA_ID,
            "team": team.slug,
            "environment": env.name,
            "bundle_version": latest["version"],
            "revision": previous + 1,
            "issued_at": now,
            "expires_at": latest["expires_at"],  # never outlives the bundle it applies to
            "flags": flags_section(team.pk, env),
        }
    )
    signer = active_signer(team=team)
    update = FlagsUpdate.objects.create(
        team=team,
        environment=env,
        revision=document.revision,
        bundle_version=document.bundle_version,
        jws=signer.sign(document.canonical_bytes(), typ=FLAGS_JWS_TYPE),
        kid=signer.kid,
        issued_at=now,
        expires_at=document.expires_at,
        reason=reason[:500],
    )
    realtime.notify_on_commit(flags_update_channel(env.pk), update.revision)
    return update


def latest_revisions(environment_ids: list[int]) -> dict[int, int]:
    """{environment id: latest flags update revision, 0 for none} in one query (the realtime fallback poll)."""
    found = dict(
        FlagsUpdate.objects.filter(environment_id__in=environment_ids)
        .values("environment_id")
        .annotate(r=Max("revision"))
        .values_list("environment_id", "r")
    )
    return {env_id: found.get(env_id, 0) for env_id in environment_ids}


def flags_update_channel_revisions(channels: list[str]) -> dict[str, int]:
    ids = realtime.channel_ids(channels, FLAGS_UPDATE_CHANNEL_PREFIX)
    return {ids[env_id]: revision for env_id, revision in latest_revisions(list(ids)).items()}


def flags_updates_prune(*, keep: int | None = None) -> int:
    """Delete the flags updates no gateway can still be given; returns how many were deleted.

    Per environment the latest `keep` revisions stay (settings.MCPGOV_FLAGS_UPDATES_KEEP, at least 1:
    the latest revision is what the next one counts from), and so does every update that names the
    environment's latest bundle or a newer one (still applicable, `_update_for`). What goes is older
    than both: superseded by a bundle that carries its flags or newer ones. The change history
    (`ChangeRecord`) keeps who switched what; these rows are only the signed deliveries.
    """
    keep = max(1, int(getattr(settings, "MCPGOV_FLAGS_UPDATES_KEEP", KEEP_DEFAULT) if keep is None else keep))
    deleted = 0
    env_ids = list(FlagsUpdate.objects.order_by().values_list("environment_id", flat=True).distinct())
    latest_bundles = dict(
        PolicyBundle.objects.filter(environment_id__in=env_ids)
        .order_by()
        .values("environment_id")
        .annotate(v=Max("version"))
        .values_list("environment_id", "v")
    )
    for env_id in env_ids:
        cutoff = (
            FlagsUpdate.objects.filter(environment_id=env_id)
            .order_by("-revision")
            .values_list("revision", flat=True)[keep - 1 : keep]
            .first()
        )
        if cutoff is None or env_id not in latest_bundles:  # fewer than `keep` updates
            continue
        count, _ = FlagsUpdate.objects.filter(
            environment_id=env_id, revision__lt=cutoff, bundle_version__lt=latest_bundles[env_id]
        ).delete()
        deleted += count
    return deleted
