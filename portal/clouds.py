"""Endpoints of Microsoft's clouds: which hosts the Exchange admin API, Microsoft Graph and Entra ID sign-in use.

``EXO_CLOUD`` names one row; portal/settings.py derives ``EXO_BASE_URL``, ``EXO_SCOPE``, ``GRAPH_BASE_URL``,
``GRAPH_SCOPE`` and ``ENTRA_AUTHORITY`` from it, and each of those can still be set on its own. The table sits in
``portal`` (plain data, no Django) because the settings import it and settings sit below every layer;
``writeback.exchange.auth`` reads it from here.

Sources, checked for this table:
- Exchange: the ExchangeOnlineManagement module's ``Connect-ExchangeOnline -ExchangeEnvironmentName`` maps
  O365Default to outlook.office365.com, O365USGovGCCHigh to outlook.office365.us, O365USGovDoD to webmail.apps.mil
  and O365China to partner.outlook.cn (module help and Microsoft's app-only auth article; Microsoft's Office 365
  endpoint list for USGovDoD also lists webmail.apps.mil under Exchange Online). That the ``/adminapi`` REST route
  answers on the three national hosts, and that each host is also the token resource (``<host>/.default``), is
  what the module implies but UNCONFIRMED by any document (exchange-facts §4.1 leaves sovereign hosts open):
  override ``EXO_BASE_URL`` / ``EXO_SCOPE`` if a tenant answers elsewhere.
- Graph and Entra ID: Microsoft Learn "Microsoft Graph national cloud deployments" (graph.microsoft.us for US
  Government L4/GCC High, dod-graph.microsoft.us for L5/DoD, microsoftgraph.chinacloudapi.cn for 21Vianet; token
  service login.microsoftonline.us for both US clouds and login.chinacloudapi.cn for China) and "Access national
  cloud deployments with the Microsoft Graph SDKs" (a ``.default`` scope must use the national Graph host).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    """The hosts of one Microsoft cloud, as origins (scheme and host, no path)."""

    exchange: str
    graph: str
    login: str

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange}/.default"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    def authority(self, tenant: str) -> str:
        return f"{self.login}/{tenant}"


CLOUDS: dict[str, Cloud] = {
    "Global": Cloud(
        exchange="https://outlook.office365.com",
        graph="https://graph.microsoft.com",
        login="https://login.microsoftonline.com",
    ),
    "GCCHigh": Cloud(
        exchange="https://outlook.office365.us",
        graph="https://graph.microsoft.us",
        login="https://login.microsoftonline.us",
    ),
    "DoD": Cloud(
        exchange="https://webmail.apps.mil",
        graph="https://dod-graph.microsoft.us",
        login="https://login.microsoftonline.us",
    ),
    "China": Cloud(
        exchange="https://partner.outlook.cn",
        graph="https://microsoftgraph.chinacloudapi.cn",
        login="https://login.chinacloudapi.cn",
    ),
}


def cloud_named(name: str) -> Cloud:
    """The cloud called ``name`` (case-insensitive); a clear error naming the choices otherwise."""
    for key, cloud in CLOUDS.items():
        if key.lower() == name.strip().lower():
            return cloud
    raise ValueError(f"EXO_CLOUD={name!r} is not one of {', '.join(CLOUDS)}.")
