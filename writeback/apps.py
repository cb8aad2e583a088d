from django.apps import AppConfig
from django.core import checks


class WritebackConfig(AppConfig):
    name = "writeback"
    verbose_name = "Writeback to Microsoft systems"

    def ready(self) -> None:
        from writeback.exchange.auth import check_https_settings

        # Not tagged: deploy-only checks would let a development server send a token over http.
        checks.register(check_https_settings)
