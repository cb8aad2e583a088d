"""The production entry points with production settings, end to end over HTTP (docs/deployment.md).

gunicorn (deploy/gunicorn.conf.py) serves portal.wsgi on a loopback port with DJANGO_DEBUG off, the secret key and
the audit chain key from files, DJANGO_ALLOWED_HOSTS set, Secure cookies, HSTS and the https redirect on; the test
speaks plain HTTP to it as the TLS proxy would (deploy/nginx.conf), sending X-Forwarded-Proto: https
(DJANGO_BEHIND_TLS_PROXY). Two separate `manage.py rqworker` processes (as deploy/soa-portal-worker@.service runs
them) work on a PostgreSQL database of the test's own, made by `manage.py migrate`, and a Redis database of their
own on the test Redis. Through the pages, an admin imports the inventory from a private slapd and the HTTPS emulator;
an operator builds a wave, an approver approves it, the operator starts it; the test then reads the emulator (the
mailboxes are cloud-managed) and AD (it holds the cloud's addresses).
"""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import ldap3
import psycopg
import pytest
import redis
import requests

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.process import bind_free_port, child_dies_with_parent
from sandbox.seed import seed_tenant

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("DATABASE_URL", "")
HOST = "portal.example.test"  # the name the proxy forwards; loopback addresses are not in ALLOWED_HOSTS
MEMBERS = 6
PASSWORD = "deploy test password 7f3c"

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith(("postgres://", "postgresql://")),
    reason="the production stack runs on PostgreSQL: set DATABASE_URL=postgres://… (CI does)",
)


def _database_url(name: str) -> tuple[str, str]:
    """The URL of database ``name`` on DATABASE_URL's server, and a URL of that server's maintenance database."""
    parts = urlsplit(DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}")), urlunsplit(parts._replace(path="/postgres"))


def _admin_sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)


def _rows(url: str, query: str, *params):
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()


def _secret(path: Path, value: str | None = None) -> str:
    path.write_text(value or secrets.token_hex(32))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def tenant(tmp_path):
    with (
        SandboxDirectory.start(users=30, seed=11) as directory,
        ExchangeOnlineEmulator.start(directory=directory, workdir=tmp_path / "exo") as exchange,
    ):
        seed_tenant(directory, exchange, seed=11)
        yield directory, exchange


@pytest.fixture
def stack(tmp_path, tenant, redis_url):
    directory, exchange = tenant
    name = f"soa_deploy_e2e_{os.getpid()}_{secrets.token_hex(3)}"
    database, maintenance = _database_url(name)
    _admin_sql(maintenance, f'CREATE DATABASE "{name}"')
    queues_url = urlunsplit(urlsplit(redis_url)._replace(path="/9"))  # a keyspace no other test uses
    redis.Redis.from_url(queues_url).flushdb()
    client = exchange.clients["secret"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "REDIS_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY_FILE": _secret(tmp_path / "secret-key"),
        "AUDIT_CHAIN_KEY_FILE": _secret(tmp_path / "audit-chain-key"),
        "AUDIT_HEAD_FILE": str(tmp_path / "audit-heads.jsonl"),
        "DJANGO_ALLOWED_HOSTS": HOST, "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "DJANGO_BEHIND_TLS_PROXY": "true", "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": database, "REDIS_URL": queues_url,
        "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn,
        "LDAP_PASSWORD_FILE": str(directory.password_file), "LDAP_BASE_DN": directory.base_dn,
        "EXO_BASE_URL": exchange.base_url, "GRAPH_BASE_URL": exchange.base_url, "EXO_TENANT": exchange.tenant_id,
        "ENTRA_AUTHORITY": exchange.authority, "EXO_CA_FILE": str(exchange.ca_file),
        "ENTRA_CLIENT_ID": client["client_id"], "ENTRA_CLIENT_SECRET_FILE": client["client_secret_file"],
        # The seed wrote every mailbox moments ago: no quiet period, or no member could move.
        "WAVE_QUIET_PERIOD_HOURS": "0",
        # Only the import this test asks for: no scheduled one may hold the single import slot meanwhile.
        "INVENTORY_FULL_INTERVAL_DAYS": "0", "INVENTORY_INCREMENTAL_INTERVAL_MINUTES": "0",
        "GUNICORN_WORKERS": "2", "DEPLOY_TEST_PASSWORD": PASSWORD,
    })  # fmt: skip
    started: list[subprocess.Popen] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def manage(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def start(label: str, *command: str) -> None:
        log = (logs / f"{label}.log").open("w")
        started.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=child_dies_with_parent))  # fmt: skip

    try:
        manage("migrate", "--noinput", "-v", "0")
        manage("collectstatic", "--noinput", "-v", "0")
        manage("shell", "-c", CREATE_PEOPLE)
        port = bind_free_port()
        start("web", sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
              "portal.wsgi")  # fmt: skip
        # Two hosts' worth of workers, as deploy/soa-portal-worker@.service starts them.
        start("worker-1", sys.executable, "manage.py", "rqworker", "writeback", "default", "--with-scheduler")
        start("worker-2", sys.executable, "manage.py", "rqworker", "writeback", "default", "--with-scheduler")
        yield {"base": f"http://127.0.0.1:{port}", "database": database, "manage": manage, "redis": queues_url,
               "logs": logs, "exchange": exchange, "directory": directory, "processes": started}  # fmt: skip
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        redis.Redis.from_url(queues_url).flushdb()
        _admin_sql(maintenance, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CREATE_PEOPLE = """
import os
from portal.models import User
from portal.roles import Role
from portal.services import role_assign
for username, role in (("ada", Role.ADMIN), ("otto", Role.WAVE_OPERATOR), ("april", Role.APPROVER)):
    user = User.objects.create_user(username=username, password=os.environ["DEPLOY_TEST_PASSWORD"])
    role_assign(actor=None, user=user, role=role, tenant_wide=True, scopes=())
"""


class Portal:
    """One person's browser, as the proxy forwards it: Host and X-Forwarded-Proto set, and its cookies (all Secure, so
    a client would keep them off an http URL) sent back over the loopback hop as the browser sends them over https."""

    def __init__(self, base: str):
        self.base = base
        self.cookies: dict[str, str] = {}
        self.secure_cookies: list[bool] = []

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.10",
                   **kwargs.pop("headers", {})}  # fmt: skip
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = requests.request(method, self.base + path, headers=headers, allow_redirects=False, timeout=60,
                                    **kwargs)  # fmt: skip
        for cookie in response.cookies:
            self.cookies[cookie.name] = cookie.value
            self.secure_cookies.append(cookie.secure)
        return response

    def get(self, path: str) -> requests.Response:
        return self._send("GET", path)

    def post(self, path: str, data: dict, *, referer: str | None = None) -> requests.Response:
        headers = {"Referer": f"https://{HOST}{referer or path}", "Origin": f"https://{HOST}"}
        return self._send("POST", path, data={**data, "csrfmiddlewaretoken": self.cookies["csrftoken"]},
                          headers=headers)  # fmt: skip

    def sign_in(self, username: str) -> "Portal":
        assert self.get("/login/").status_code == 200
        response = self.post("/login/", {"username": username, "password": PASSWORD})
        assert response.status_code == 302 and response.headers["Location"] == "/", response.text[:500]
        return self


def _wait(what: str, check, timeout: float, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(logs.iterdir()))
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{tails}")


def test_production_stack_imports_and_runs_a_wave_end_to_end(stack):
    base, database, logs = stack["base"], stack["database"], stack["logs"]
    exchange, directory = stack["exchange"], stack["directory"]

    def healthy():
        try:
            return requests.get(base + "/healthz", headers={"Host": HOST, "X-Forwarded-Proto": "https"}, timeout=5)
        except requests.ConnectionError:
            return None

    health = _wait("gunicorn answering /healthz", healthy, 30, logs)
    assert health.status_code == 200 and health.json()["status"] in ("ok", "degraded"), health.text
    # Production security settings are in force: plain http is sent to https, and https answers carry HSTS.
    insecure = requests.get(base + "/login/", headers={"Host": HOST}, allow_redirects=False, timeout=10)
    assert insecure.status_code == 301 and insecure.headers["Location"] == f"https://{HOST}/login/"
    assert requests.get(base + "/", headers={"Host": "127.0.0.1"}, timeout=10).status_code == 400  # ALLOWED_HOSTS
    check = stack["manage"]("check", "--deploy", "--fail-level", "ERROR")
    assert "System check identified no issues" in check.stdout or "0 silenced" in check.stdout, check.stdout

    admin = Portal(base).sign_in("ada")
    login_page = admin.get("/")
    assert login_page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert admin.secure_cookies and all(admin.secure_cookies)
    _wait("both workers registered", lambda: len(redis.Redis.from_url(stack["redis"]).smembers("rq:workers")) >= 2,
          30, logs)  # fmt: skip

    # The inventory import, queued from its page and run by a worker.
    started = admin.post("/inventory/start/", {"mode": "FULL"}, referer="/inventory/")
    assert started.status_code == 302 and started.headers["Location"] == "/inventory/"
    assert "is queued" in admin.get("/inventory/").text
    state = _wait("the import finishing", lambda: _rows(database, "SELECT state FROM writeback_inventoryrun "
                  "WHERE state NOT IN ('QUEUED', 'RUNNING')"), 60, logs)  # fmt: skip
    assert state == [("DONE",)], state

    movable = _rows(database, "SELECT upn, exo_object_id::text, ad_guid::text FROM soa_mailbox WHERE authority = "
                    "'ON_PREM' AND in_exo AND in_ad ORDER BY upn LIMIT %s", MEMBERS)  # fmt: skip
    assert len(movable) == MEMBERS, movable

    # The wave: built and submitted by an operator, approved by someone else, started by the operator.
    operator = Portal(base).sign_in("otto")
    operator.get("/waves/new/")
    created = operator.post("/waves/new/", {"name": "Deployment pilot", "direction": "TO_CLOUD",
                            "required_approvals": "1", "batch_size": "2", "max_rate": "20"})  # fmt: skip
    assert created.status_code == 302, created.text[:2000]
    wave = created.headers["Location"]  # /waves/<pk>/
    operator.get(wave)
    added = operator.post(wave + "members/csv/", {"text": "\n".join(upn for upn, _, _ in movable)}, referer=wave)
    assert added.status_code == 302, added.text[:2000]
    assert operator.get(wave + "submit/").status_code == 200
    submitted = operator.post(wave + "submit/", {}, referer=wave + "submit/")
    assert submitted.status_code == 302, submitted.text[:2000]

    approver = Portal(base).sign_in("april")
    approver.get(wave)
    approved = approver.post(wave + "approve/", {"acknowledge_warnings": "on", "reason": "Pilot agreed"}, referer=wave)
    assert approved.status_code == 302, approved.text[:2000]

    assert operator.get(wave + "start/").status_code == 200
    started = operator.post(wave + "start/", {}, referer=wave + "start/")
    assert started.status_code == 302, started.text[:2000]
    wave_id = int(wave.strip("/").rsplit("/", 1)[1])
    _wait("the wave completing", lambda: _rows(database, "SELECT 1 FROM soa_pilotwave WHERE id = %s AND state = "
          "'COMPLETED'", wave_id), 60, logs)  # fmt: skip
    members = _rows(database, "SELECT state, count(*) FROM soa_wavemember WHERE wave_id = %s GROUP BY state", wave_id)
    assert members == [("DONE", MEMBERS)], members
    assert "Completed" in operator.get(wave).text

    # The emulator: each member is cloud-managed now. AD: each member's addresses are the cloud's.
    connection = ldap3.Connection(ldap3.Server(directory.url), directory.bind_dn,
                                  Path(directory.password_file).read_text().strip(), auto_bind=True)  # fmt: skip
    try:
        for upn, exo_id, _ad_guid in movable:
            mailbox = exchange.get_mailbox(exo_id)
            assert mailbox["IsExchangeCloudManaged"] is True, upn
            connection.search(directory.base_dn, f"(userPrincipalName={upn})", attributes=["proxyAddresses"])
            (entry,) = connection.entries

            # The addresses on the organisation's own domains agree (the *.onmicrosoft.com routing addresses differ
            # by design between the two sides), and so does the primary one.
            def own(values):
                return {value for value in values if not value.lower().endswith(".onmicrosoft.com")}

            assert {v.lower() for v in own(entry.proxyAddresses.values)} == {
                v.lower() for v in own(mailbox["EmailAddresses"])
            }, upn
            primary = [v for v in own(entry.proxyAddresses.values) if v.startswith("SMTP:")]
            assert primary == [v for v in own(mailbox["EmailAddresses"]) if v.startswith("SMTP:")], upn
    finally:
        connection.unbind()
