from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "SOA Portal"

    def ready(self) -> None:
        from portal.roles import sync_role_groups

        # Runs after Django has created the permissions, on migrate and after a test database flush.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="portal.sync_role_groups")
