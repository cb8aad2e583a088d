from django.apps import AppConfig


class SoaConfig(AppConfig):
    name = "soa"
    verbose_name = "Source of authority"
