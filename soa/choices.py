"""Choice sets of the domain."""

from django.db import models


class Authority(models.TextChoices):
    """Who masters a mailbox's Exchange attributes (IsExchangeCloudManaged false / true)."""

    ON_PREM = "ON_PREM", "Active Directory"
    CLOUD = "CLOUD", "Exchange Online"
