from django.apps import AppConfig
from django.core import checks


class WritebackConfig(AppConfig):
    name = "writeback"
    verbose_name = "Writeback to Microsoft systems"

    def ready(self) -> None:
        from writeback.directory.connection import check_cleartext_bind
        from writeback.exchange.auth import check_https_settings
        from writeback.inventory_shards import check_spread_database

        # Not tagged: deploy-only checks would let a development server send a token over http.
        checks.register(check_https_settings)
        # Deploy-only: the sandbox and development directories run on this machine, where plain LDAP stays allowed.
        checks.register(check_cleartext_bind, deploy=True)
        checks.register(check_spread_database)
