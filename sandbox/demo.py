"""`make demo`: the whole portal on one machine, with demo data. Ctrl-C stops everything it started.

Starts the sandbox directory with generated users, the Exchange Online + Entra ID emulator synced from it, a
private Redis (unless REDIS_URL is given), migrates the SQLite database, creates one account per role, imports
the inventory (and with it the accepted domains), builds the demo's pilot waves (sandbox.demo_waves: one completed,
one awaiting approval, one draft) and five weeks of readiness snapshots (sandbox.demo_readiness), schedules the
periodic wave sweep, inventory imports and accepted domains refresh,
then runs an RQ worker (with its scheduler) and the web server (gunicorn) as children and prints the URL and logins.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.exchange_online.config import group_id
from sandbox.process import child_dies_with_parent
from sandbox.redis_server import RedisServer
from sandbox.seed import seed_tenant

ROOT = Path(__file__).resolve().parent.parent


def _secret_file(path: Path) -> Path:
    """A random secret kept in ``path`` (made on the first run, readable by this user only)."""
    path = path.resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def _portal_env(
    directory: SandboxDirectory, exchange: ExchangeOnlineEmulator, redis_url: str, var_dir: Path, host: str
) -> dict[str, str]:
    env = dict(os.environ)
    # Debug off, as in production, so the demo shows what users see (the portal's error pages, not Django's). What
    # production gets from its TLS proxy the demo's plain http on this machine cannot have: no redirect to https, no
    # Secure-only cookies (a browser would not send them back over http) and no HSTS. The secret key lives with the
    # demo's state, and the stylesheets are collected into the var dir and served by WhiteNoise, as in production.
    env.setdefault("DJANGO_DEBUG", "false")
    env.setdefault("DJANGO_SECRET_KEY_FILE", str(_secret_file(var_dir / "secret-key")))
    env.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    env.setdefault("DJANGO_SECURE_COOKIES", "false")
    env.setdefault("DJANGO_HSTS_SECONDS", "0")
    env.setdefault("DJANGO_ALLOWED_HOSTS", ",".join(dict.fromkeys([host, "localhost", "127.0.0.1", "[::1]"])))
    env.setdefault("DJANGO_STATIC_ROOT", str((var_dir / "static").resolve()))
    # The database lives with the rest of the demo's state, so another DEMO_VAR_DIR is another demo altogether.
    env.setdefault("DATABASE_URL", f"sqlite:///{(var_dir / 'portal.sqlite3').resolve()}")
    # The demo tenant is minutes old, so the real quiet period (a day) would block every wave to the cloud; a
    # quarter of an hour still shows the check right after a start, and lets visitors submit soon after.
    env.setdefault("WAVE_QUIET_PERIOD_HOURS", "0.25")
    # The audit chain's key and published heads live with the demo's database; the key is made on the first run.
    env.setdefault("AUDIT_CHAIN_KEY_FILE", str(_secret_file(var_dir / "audit-chain.key")))
    env.setdefault("AUDIT_HEAD_FILE", str((var_dir / "audit-heads.jsonl").resolve()))
    certificate = exchange.clients["certificate"]
    env.update(
        {
            "LDAP_URL": directory.url,
            "LDAP_BIND_DN": directory.bind_dn,
            "LDAP_PASSWORD_FILE": str(directory.password_file),
            "LDAP_BASE_DN": directory.base_dn,
            "EXO_BASE_URL": exchange.base_url,
            # The emulator serves Graph's /v1.0/users on the same host (for pairing; see inventory_pairing).
            "GRAPH_BASE_URL": exchange.base_url,
            "EXO_TENANT": exchange.tenant_id,
            "EXO_CA_FILE": str(exchange.ca_file),
            "ENTRA_AUTHORITY": exchange.authority,
            "ENTRA_CLIENT_ID": certificate["client_id"],
            "ENTRA_CERTIFICATE_KEY_FILE": certificate["private_key_file"],
            "ENTRA_CERTIFICATE_THUMBPRINT": certificate["thumbprint"],
            "REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# Which of the emulator's demo groups (sandbox.exchange_online.config.default_identities) gives which portal role; the
# help desk's is limited to the Sales OU like the local helpdesk account's, and "All Staff" is left unmapped so the
# demo shows the no-access page too.
DEMO_GROUP_ROLES = (
    ("SOA Admins", "admin"),
    ("SOA Help Desk", "helpdesk"),
    ("SOA Wave Operators", "wave_operator"),
    ("SOA Approvers", "approver"),
    ("SOA Auditors", "auditor"),
)


def _map_demo_groups(env: dict[str, str], helpdesk_scope: str, var_dir: Path) -> None:
    mappings = [
        {"group_id": group_id(name), "name": name, "role": role, "tenant_wide": role != "helpdesk",
         "scopes": [helpdesk_scope] if role == "helpdesk" else []}
        for name, role in DEMO_GROUP_ROLES
    ]  # fmt: skip
    path = var_dir / "demo-group-mappings.json"
    path.write_text(json.dumps(mappings, indent=2))
    print("Entra ID groups mapped to roles (sign in with Entra ID and pick a person; Vera Visitor has no access):")
    _manage(env, "entra_group_map", "--file", str(path), "--reason", "demo group mapping")


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def _wait_healthy(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:  # noqa: S310 (loopback only)
                return json.load(response)
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"The portal did not become healthy within {timeout:.0f} s: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=int(os.environ.get("DEMO_USERS", "3000")))
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    # A fixed port keeps the emulator's issuer URL, and so signed-in sessions, valid across demo restarts.
    parser.add_argument("--exchange-port", type=int, default=int(os.environ.get("DEMO_EXCHANGE_PORT", "8443")))
    parser.add_argument("--var-dir", type=Path, default=Path(os.environ.get("DEMO_VAR_DIR", ROOT / "var")))
    parser.add_argument("--exit-when-ready", action="store_true", help="start everything, check health, stop")
    args = parser.parse_args(argv)
    logins_file = args.var_dir / "demo-logins.json"

    started: list[subprocess.Popen] = []
    stoppers = []
    stop_requested = False

    def request_stop(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        # Kept in var/ like the emulator's state and the database, so a restart finds the tenant as it was left
        # (seeded edits, and whatever the portal wrote into AD) instead of a new directory behind a kept tenant.
        directory = SandboxDirectory.start(users=args.users, workdir=args.var_dir / "directory", keep=True)
        stoppers.append(directory.stop)
        # Its Entra Connect copies AD's Exchange attributes every two minutes (the real one: every 30), and with
        # Exchange hybrid writeback on it stamps msDS-ExternalDirectoryObjectID on every AD user, which is how the
        # portal pairs the demo's AD users with their mailboxes.
        exchange = ExchangeOnlineEmulator.start(
            directory=directory,
            port=args.exchange_port,
            workdir=args.var_dir / "exchange-online",
            state_file=args.var_dir / "exchange-online-state.json",
            sync_interval=120,
            hybrid_writeback=True,
        )
        stoppers.append(exchange.stop)
        if os.environ.get("REDIS_URL"):
            redis_url = os.environ["REDIS_URL"]
        else:
            redis_server = RedisServer.start()
            stoppers.append(redis_server.stop)
            redis_url = redis_server.url
        env = _portal_env(directory, exchange, redis_url, args.var_dir, args.host)
        if not any(m.get("IsExchangeCloudManaged") for m in exchange.mailboxes()):
            report = seed_tenant(directory, exchange)
            print(
                f"Seeded the tenant: {report.cloud_managed} mailboxes already cloud-managed, "
                f"{report.cloud_edits + report.ad_edits} with drift, {report.cloud_only} cloud-only."
            )
        _manage(env, "migrate", "--noinput", "-v", "0")
        _manage(env, "collectstatic", "--noinput", "-v", "0")  # WhiteNoise serves them (debug is off)
        print("Demo accounts (username, password, role):")
        helpdesk_scope = f"OU=Sales,{directory.users_dn}"
        _manage(env, "demo_accounts", "--logins-file", str(logins_file), "--helpdesk-scope", helpdesk_scope)
        _map_demo_groups(env, helpdesk_scope, args.var_dir)
        _manage(env, "inventory_import")
        # The demo's pilot waves (first run only). The tenant was created moments ago, so even the demo's short
        # quiet period (_portal_env) would refuse every member now; the waves are built as if it had passed, and
        # their frozen pre-flight reports say so (quiet period 0 hours).
        subprocess.run(
            [sys.executable, "-m", "sandbox.demo_waves"], env={**env, "WAVE_QUIET_PERIOD_HOURS": "0"}, cwd=ROOT,
            check=True,
        )  # fmt: skip
        # Five weeks of readiness snapshots before today's measured one, so the readiness page draws a trend.
        subprocess.run([sys.executable, "-m", "sandbox.demo_readiness"], env=env, cwd=ROOT, check=True)
        _manage(env, "readiness_snapshot_schedule")  # today's and every later day's snapshot
        _manage(env, "wave_sweep_schedule")  # the worker's scheduler runs it every WAVE_SWEEP_INTERVAL seconds
        _manage(env, "inventory_schedule")  # incremental imports hourly and a weekly full one, as in production
        # The import above read the accepted domains (editing needs them); this keeps them fresh.
        _manage(env, "accepted_domains_schedule")
        _manage(env, "drift_scan_schedule")  # Exchange against AD for cloud-managed mailboxes, hourly
        _manage(env, "audit_head_schedule")  # the audit chain's head, published to the var dir's audit-heads.jsonl
        children = [
            [sys.executable, str(ROOT / "manage.py"), "rqworker", "default", "writeback", "--with-scheduler"],
            [sys.executable, "-m", "gunicorn", "portal.wsgi", "--bind", f"{args.host}:{args.port}",
             "--workers", "2", "--access-logfile", "-", "--no-control-socket"],
        ]  # fmt: skip
        for command in children:
            started.append(subprocess.Popen(command, env=env, cwd=ROOT, preexec_fn=child_dies_with_parent))
        url = f"http://{args.host}:{args.port}/"
        health = _wait_healthy(url, timeout=30)
        print(f"\nSOA Portal is ready at {url}  (health: {health['status']})")
        kept = "kept from the last run" if directory.reopened else "new"
        print(f"Directory: {directory.url} ({args.users} users under {directory.users_dn}, {kept})  Redis: {redis_url}")
        print(f"Exchange Online emulator: {exchange.base_url} (tenant {exchange.tenant_domain})")
        print(f"Helpdesk is limited to {helpdesk_scope}. Logins are kept in {logins_file}.")
        print("Sign in with Entra ID (the emulator's page lists the demo people), or with a local account above.")
        print("Press Ctrl-C to stop everything.")
        while not stop_requested and not args.exit_when_ready:
            for process in started:
                if process.poll() is not None:
                    print(f"{process.args[2]} exited with status {process.returncode}; stopping.", file=sys.stderr)
                    stop_requested = True
            time.sleep(0.5)
        return 0
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for stop in reversed(stoppers):
            stop()
        print("Demo stopped.")


if __name__ == "__main__":
    sys.exit(main())
