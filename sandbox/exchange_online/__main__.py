"""Run the Exchange Online + Entra ID emulator: ``python -m sandbox.exchange_online --workdir DIR [...]``.

Writes DIR/ready.json once it serves (base_url, tenant_id, authority, ca_file, clients, admin token
file...), then runs until SIGTERM or SIGINT. Without --ldap-url it starts empty (or from --seed-file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import SOURCE_ANCHORS, LdapSource, Options, Settings
from .server import run


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m sandbox.exchange_online", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for keys, secrets and ready.json")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    ldap = parser.add_argument_group("directory (Entra Connect source)")
    ldap.add_argument("--ldap-url", help="e.g. ldap://127.0.0.1:38999")
    ldap.add_argument("--ldap-bind-dn")
    ldap.add_argument("--ldap-password-file", type=Path)
    ldap.add_argument("--ldap-base-dn")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s per client id; 0 turns throttling off")
    parser.add_argument("--burst", type=int, default=30000, help="token bucket size (Rate-Limit-Limit)")
    parser.add_argument("--sync-interval", type=float, default=0.0, help="seconds between sync ticks (0: on demand)")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="access token lifetime in seconds")
    parser.add_argument(
        "--proxy-cooldown", type=float, default=0.0, help="seconds before a removed address is reusable"
    )
    parser.add_argument("--state-file", type=Path, help="persist mailboxes here and reload them on start")
    parser.add_argument("--seed-file", type=Path, help="JSON list of mailboxes to create at start and on reset")
    parser.add_argument("--identities-file", type=Path, help="JSON list of sign-in identities (oid, name...)")
    parser.add_argument("--mail-domain", help="default accepted domain (default: the directory's DNS domain)")
    parser.add_argument(
        "--accepted-domain",
        action="append",
        default=None,
        help="extra accepted domain (repeatable; default example.org)",
    )
    parser.add_argument(
        "--no-filter-cloud-managed",
        action="store_true",
        help="refuse IsExchangeCloudManaged in -Filter (server-side support is UNCONFIRMED)",
    )
    parser.add_argument(
        "--hybrid-writeback",
        action="store_true",
        help="Entra Connect's Exchange hybrid writeback: write User_<object id> into msDS-ExternalDirectoryObjectID",
    )
    parser.add_argument(
        "--source-anchor",
        choices=SOURCE_ANCHORS,
        default=SOURCE_ANCHORS[0],
        help="the AD attribute Entra Connect anchors users on (default: mS-DS-ConsistencyGuid, else objectGUID)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    given = [args.ldap_url, args.ldap_bind_dn, args.ldap_password_file, args.ldap_base_dn]
    if any(given) and not all(given):
        parser.error("--ldap-url, --ldap-bind-dn, --ldap-password-file and --ldap-base-dn go together")
    source = (
        LdapSource(args.ldap_url, args.ldap_bind_dn, args.ldap_password_file, args.ldap_base_dn) if all(given) else None
    )
    settings = Settings(
        token_lifetime=args.token_lifetime,
        proxy_cooldown=args.proxy_cooldown,
        filter_cloud_managed=not args.no_filter_cloud_managed,
        hybrid_writeback=args.hybrid_writeback,
        source_anchor=args.source_anchor,
    )
    options = Options(
        workdir=args.workdir,
        port=args.port,
        ldap=source,
        rate=args.rate if args.rate > 0 else None,
        burst=args.burst,
        sync_interval=args.sync_interval,
        state_file=args.state_file,
        seed_file=args.seed_file,
        identities_file=args.identities_file,
        mail_domain=args.mail_domain,
        settings=settings,
    )
    if args.accepted_domain is not None:
        options.accepted_domains = args.accepted_domain
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return options


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
