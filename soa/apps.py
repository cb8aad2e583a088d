from django.apps import AppConfig


class SoaConfig(AppConfig):
    name = "soa"
    verbose_name = "Source of authority"

    def ready(self) -> None:
        from django.core import checks

        from soa.services.changes import check_settings

        checks.register(check_settings)
