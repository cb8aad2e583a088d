"""Smoke test of `make demo`'s stack on SQLite: it starts, every demo account signs in, Ctrl-C stops it all."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandbox.process import bind_free_port

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"SOA Portal is ready at (http://\S+)")
PORTS = re.compile(r"Directory: ldap://127\.0\.0\.1:(\d+).*Redis: redis://127\.0\.0\.1:(\d+)")
EXCHANGE = re.compile(r"Exchange Online emulator: https://127\.0\.0\.1:(\d+)")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _login(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.get(base + "login/", timeout=10)
    response = session.post(
        base + "login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": base + "login/"},
        timeout=10,
    )
    assert response.status_code == 200 and response.url == base, f"{username} could not sign in"
    return session


def _entra_login(base: str, var_dir: Path, login: str) -> requests.Response:
    """Sign in as one of the emulator's demo people, as a browser does: the portal's button, the emulator's page."""
    ready = json.loads((var_dir / "exchange-online" / "ready.json").read_text())
    person = next(p for p in ready["identities"] if p["preferred_username"].startswith(f"{login}@"))
    session = requests.Session()
    session.trust_env = False
    session.verify = ready["ca_file"]
    start = session.get(base + "login/entra/", allow_redirects=False, timeout=10)
    assert start.status_code == 302 and start.headers["Location"].startswith(ready["authority"])
    authorize = urlsplit(start.headers["Location"])
    params = {key: values[0] for key, values in parse_qs(authorize.query).items()}
    picked = session.post(authorize._replace(query="").geturl(), data={**params, "identity": person["oid"]},
                          allow_redirects=False, timeout=10)  # fmt: skip
    assert picked.status_code == 302, picked.text[:300]
    return session.get(picked.headers["Location"], timeout=10)


@pytest.fixture
def demo(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DJANGO_DEBUG")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"  # the embedded default, even in CI
    port = bind_free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.demo", "--users", "100", "--port", str(port),
         "--exchange-port", str(bind_free_port()), "--var-dir", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()

    def wait_for(pattern: re.Pattern, timeout: float = 90) -> re.Match:
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("demo output stalled:\n" + "".join(output[-40:])) from None
            output.append(line)
            if match := pattern.search(line):
                return match

    yield process, wait_for, tmp_path, output
    if process.poll() is None:
        process.kill()
        process.wait()


def test_demo_serves_every_role_and_stops_everything_on_ctrl_c(demo):
    process, wait_for, var_dir, output = demo
    base = wait_for(READY).group(1)
    ldap_port, redis_port = map(int, wait_for(PORTS).groups())
    exchange_port = int(wait_for(EXCHANGE).group(1))

    health = requests.get(base + "healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["components"].keys() == {
        "database",
        "redis",
        "directory",
        "periodic",
        "waves",
        "exchange budget",
    }

    logins = json.loads((var_dir / "demo-logins.json").read_text())
    assert set(logins) >= {"helpdesk", "operator", "approver", "auditor", "admin"}
    assert oct((var_dir / "demo-logins.json").stat().st_mode & 0o777) == "0o600"
    for username, password in logins.items():
        session = _login(base, username, password)
        dashboard = session.get(base, timeout=10)
        assert "<h1>Dashboard</h1>" in dashboard.text
        assert ("Background jobs" in dashboard.text) is (username == "admin")
    # The readiness page draws a trend from the seeded weeks of snapshots and today's measured one.
    readiness = _login(base, "admin", logins["admin"]).get(base + "mailboxes/readiness/", timeout=10)
    assert readiness.status_code == 200 and 'data-testid="rd-chart-cloud"' in readiness.text
    assert readiness.text.count('<th scope="row">20') >= 30  # a row per snapshot day in the trend's table
    # Entra ID through the emulator by default: the help desk group gives its scoped role, "All Staff" gives none.
    signed_in = _entra_login(base, var_dir, "helpdesk")
    assert signed_in.url == base and "<h1>Dashboard</h1>" in signed_in.text and "helpdesk@" in signed_in.text
    refused = _entra_login(base, var_dir, "visitor")
    assert refused.status_code == 403 and "No access to the SOA Portal" in refused.text
    # Debug is off, as users see the portal: its own 404 page, its collected stylesheet, cookies usable over http.
    missing = session.get(base + "no/such/page/", timeout=10)
    assert missing.status_code == 404 and 'id="error-title"' in missing.text and "URLconf" not in missing.text
    stylesheet = re.search(r'<link rel="stylesheet" href="(/static/portal/portal\.[0-9a-f]+\.css)">', missing.text)
    assert stylesheet, "the stylesheet is not served from collectstatic's manifest"
    css = session.get(base + stylesheet.group(1).lstrip("/"), timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert not any(cookie.secure for cookie in session.cookies)
    assert oct((var_dir / "secret-key").stat().st_mode & 0o777) == "0o600"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    wait_for(re.compile("Demo stopped"))
    for port in (ldap_port, redis_port, exchange_port, int(base.rsplit(":", 1)[1].strip("/"))):
        assert not _port_open(port), f"port {port} still answers after the demo stopped"
