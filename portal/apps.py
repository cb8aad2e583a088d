from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "SOA Portal"

    def ready(self) -> None:
        from django.core import checks

        from portal.audit_chain import check_audit_settings
        from portal.roles import sync_role_groups

        checks.register(check_audit_settings, checks.Tags.security, deploy=True)

        # Runs after Django has created the permissions, on migrate and after a test database flush.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="portal.sync_role_groups")
