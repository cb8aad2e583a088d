"""A stand-in for Exchange Online and Entra ID, over HTTPS on loopback, for tests, benchmarks and the demo.

    with ExchangeOnlineEmulator.start(directory=directory) as exo:
        app = exo.msal_app("certificate")                       # real msal, trusting exo.ca_file
        token = app.acquire_token_for_client([exo.scope])["access_token"]
        exo.session().post(exo.exchange_url, json={"CmdletInput": {"CmdletName": "Get-Mailbox",
                           "Parameters": {"Identity": "anna.smith@corp.example.com"}}},
                           headers={"Authorization": f"Bearer {token}"})

What it plays (facts from shared/reference/exchange-facts.md; every guess is listed in GUESSES):

- Entra ID: OpenID discovery, JWKS, the token endpoint (client secret, certificate assertion, auth code
  with PKCE, refresh) and a sign-in page listing demo identities. Tokens are RS256 JWTs of the tenant key.
- Exchange Online's admin API: ``POST /adminapi/beta/{tenant}/InvokeCommand`` for Get-Mailbox, Set-Mailbox,
  Get-AcceptedDomain, Get-OrganizationConfig and Set-OrganizationConfig (the tenant default, organization.py),
  with Exchange's validation rules, error bodies, paging,
  throttling (429 + Retry-After + Rate-Limit-*), and faults switched on at run time.
- Microsoft Graph: ``GET /v1.0/users`` (app-only, User.Read.All) listing the Entra users Connect made from AD,
  with ``$select``, ``$top`` and ``@odata.nextLink`` paging; ``id`` is Exchange's ExternalDirectoryObjectId and
  ``onPremisesImmutableId`` the sourceAnchor; ``GET /v1.0/organization`` (Organization.Read.All) with the tenant's
  ``onPremisesSyncEnabled`` and ``onPremisesLastSyncDateTime`` (the last sync tick).
- Entra Connect: a sync tick reads the sandbox directory's people (sAMAccountType 805306368, never computers)
  over LDAP, joins them to cloud objects on the sourceAnchor (setting ``source_anchor``), keeps the Entra users
  and writes AD's values into the mailboxes whose Exchange attributes AD still masters (IsExchangeCloudManaged
  false). With Exchange hybrid writeback on (setting ``hybrid_writeback``) it writes ``User_<object id>`` into
  each AD user's msDS-ExternalDirectoryObjectID. Get-Mailbox's ImmutableId is msExchGenericImmutableId.

Files in the workdir: ``ready.json`` (everything a client needs), ``ca.crt`` (trust this), ``client-*.secret``,
``client.key``/``client.crt`` (the certificate client), ``admin-token``, ``tenant.json`` (ids, kept across
restarts), ``emulator.log``.
"""

from .process import ExchangeOnlineEmulator, ExchangeOnlineEmulatorError, trusting_session

# Behaviour the reference does not settle, chosen here; each is a setting or easy to change.
GUESSES = (
    "Server-side -Filter on IsExchangeCloudManaged is accepted (setting filter_cloud_managed).",
    "Get-Mailbox without -ResultSize returns at most 1000 items with the 'more results available' warning "
    "(setting default_result_size); without a Prefer header a page holds 1000 items.",
    "WhenChangedUTC/WhenCreatedUTC have one-second resolution and are shown as yyyy-MM-ddTHH:mm:ssZ.",
    "Empty CustomAttributeN is shown as an empty string.",
    "ExternalDirectoryObjectId, Guid and ExchangeGuid are UUIDv5 of the objectGUID; Identity and Id are the Name.",
    "Synced mailboxes get the MOERA alias@<tenant>.onmicrosoft.com unless they have an address in that domain.",
    "Sync copies proxyAddresses verbatim (no accepted-domain filtering, no duplicate-attribute resiliency).",
    "A dir-synced user that disappears from AD loses its mailbox at the next tick (no soft delete).",
    "Error texts and exception types for: non-accepted domain, two primaries, no primary, duplicate proxy, "
    "cool-down, removing the primary, ExtensionCustomAttribute limits, alias rules, ambiguous identity.",
    "The Ex error codes other than Ex6F9304 (not found) are made up; the write-scope error has an empty code "
    "and System.InvalidOperationException, as one field report shows.",
    "The write-scope error is 400 and names every blocked parameter, comma-separated.",
    "A call that sets IsExchangeCloudManaged true together with an Exchange attribute is judged on the flag "
    "before the call, so it is refused.",
    "Setting DisplayName/Name on a dir-synced mailbox gives the write-scope error whatever the flag.",
    "Setting IsExchangeCloudManaged on a cloud-only mailbox is refused (400).",
    "Within the cool-down the address's former holder may take it back; anyone else gets the 'in use' error.",
    "Removing an address that is not there is a no-op; an Add of a present address is a no-op.",
    "A full-list EmailAddresses write that leaves out the MOERA (@<tenant>.onmicrosoft.com) or the "
    "@<tenant>.mail.onmicrosoft.com address gets them back as secondaries (setting protected_addresses: keep, "
    "refuse, off); an Add/Remove hashtable still removes them as asked.",
    "A hashtable without '@odata.type': '#Exchange.GenericHashTable' is refused with a 400 binding error.",
    "WindowsEmailAddress makes the address primary and keeps the old primary as a secondary.",
    "ExtensionCustomAttribute values are at most 2048 characters each.",
    "Missing Exchange.ManageAsApp role gives 403; a bad, expired or missing token gives 401 with WWW-Authenticate.",
    "A revoked access token (admin endpoint tokens/revoke, by its uti) gets the same 401 as an expired one.",
    "Throttle: a token bucket per appid; Rate-Limit-Limit is the burst, Reset is when the bucket is full again; "
    "Retry-After is whole seconds (at least 1).",
    "503 faults carry no Retry-After; the 'error after apply' 500 has empty message and details.",
    "Replication lag hides a new mailbox from Identity lookups and from listings; a mailbox a cmdlet wrote within the "
    "lag is hidden from Identity lookups only (fault replication_lag_after_write, on by default), listings still "
    "show it.",
    "Get-Mailbox's unmodelled properties (payload.py, 200-odd) carry typical values of a licensed user mailbox, the "
    "same for every mailbox apart from ids, names and dates; they cannot be set or filtered on.",
    "An unknown tenant in the InvokeCommand URL gives 400.",
    "AADSTS codes for a wrong assertion audience (50027), a redirect_uri mismatch (70000) and a missing "
    "code_verifier (900144).",
    "App-only tokens are v1-shaped with iss https://sts.windows.net/{tenant_id}/ (as Entra's, and port-free); "
    "id_tokens are v2 with iss {authority}/v2.0.",
    "Entra Connect does not write objectGUID into an empty mS-DS-ConsistencyGuid (real Connect does); the "
    "sourceAnchor value is the same either way.",
    "ImmutableId (a copy of msExchGenericImmutableId) keeps flowing from AD after IsExchangeCloudManaged is set.",
    "A changed source_anchor setting re-anchors the existing mailboxes (found by their objectGUID-derived ids) "
    "instead of making new ones.",
    "Exchange hybrid writeback (setting hybrid_writeback, off by default) writes msDS-ExternalDirectoryObjectID on "
    "every synced person, with or without a mailbox, in the same tick that reads AD; a refused write is logged and "
    "counted, not retried until the next tick.",
    "Graph lists synced users in the order Connect first created them, then cloud-only users; "
    "onPremisesLastSyncDateTime moves only when a user's values changed; Entra users are rebuilt from AD by every "
    "tick, not persisted.",
    "Graph: $select names match case-insensitively; a bad $top or skip token is 400 Request_BadRequest; "
    "$filter, $search, $orderby, $count, $expand and $skip are refused (400 Request_UnsupportedQuery) because the "
    "emulator does not implement them; Graph is neither throttled nor subject to the faults.",
    "ID tokens carry every group of the identity up to groups_overage_limit (200, the documented JWT limit); past it "
    "the overage claims name Azure AD Graph's getMemberObjects URL. Graph's getMemberObjects answers a demo "
    "identity's groups whatever securityEnabledOnly says (the demo's groups are all security groups); the wording of "
    "its 400 for a missing securityEnabledOnly is made up.",
    "An app-only caller whose app holds no Entra role (setting app_directory_roles empty) is refused every cmdlet "
    "with 403; one holding roles but none of Exchange, Hybrid Identity or Global Administrator is refused "
    "Set-Mailbox -IsExchangeCloudManaged only (403); the wording of both errors is made up.",
    "Graph's organization: onPremisesLastSyncDateTime is the end of the last sync tick; onPremisesSyncEnabled is "
    "true once a tick has run; displayName, tenantType, countryLetterCode and createdDateTime are placeholders.",
    "Get-OrganizationConfig shows the tenant default as BlockExchangeProvisioningFromOnPremEnabled (one third-party "
    "source, exchange-facts §1.4); Set-OrganizationConfig with the default already as asked, or with neither switch, "
    "answers the 'no settings ... modified' warning; both switches together are a 400 parameter-set error.",
    "Under the tenant default a user counts as newly synced when the tick meets it with neither a mailbox nor an Entra "
    "user; its Entra user then shows no mail, proxyAddresses or mailNickname, and AD's msExchRecipientTypeDetails "
    "makes no mailbox. A state rebuilt from AD (start, reset) marks nobody.",
    "A licence is the admin endpoint POST /_emulator/licenses, and only users synced under the tenant default can be "
    "licensed; the mailbox made is a UserMailbox whose primary address is the UPN (plus the MOERA).",
)

__all__ = ["GUESSES", "ExchangeOnlineEmulator", "ExchangeOnlineEmulatorError", "trusting_session"]
