from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance (policy)"

    def ready(self) -> None:
        from django.core import checks

        from governance.checks import discovery_settings
        from governance.services import bundles, clients, flag_updates, flags
        from portal import realtime

        checks.register(discovery_settings)
        # The long polls' fallback sources (portal/realtime.py): one per channel family.
        realtime.register_source(bundles.CHANNEL_PREFIX, bundles.bundle_channel_versions)
        realtime.register_source(flags.FLAG_CHANNEL_PREFIX, flags.flag_channel_versions)
        realtime.register_source(
            flag_updates.FLAGS_UPDATE_CHANNEL_PREFIX, flag_updates.flags_update_channel_revisions
        )
        realtime.register_source(clients.CLIENT_CHANNEL_PREFIX, clients.client_channel_states)
        # The bundle route's in-process caches drop what a change on those channels made stale.
        from governance.api import bundle as bundle_route

        realtime.add_listener(bundles.CHANNEL_PREFIX, bundle_route.drop_cached_bundle)
        realtime.add_listener(flag_updates.FLAGS_UPDATE_CHANNEL_PREFIX, bundle_route.drop_cached_update)
        realtime.add_listener(clients.CLIENT_CHANNEL_PREFIX, bundle_route.drop_cached_client)
        realtime.add_gap_listener(bundle_route.drop_caches)
