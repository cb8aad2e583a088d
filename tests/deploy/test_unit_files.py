"""deploy/'s systemd units and nginx site, read by the tools that read them in production (docs/deployment.md).

**The units** go through ``systemd-analyze verify``, which loads each unit as systemd would (every directive and
value parsed, specifiers such as ``%i`` and ``%H`` expanded, the dependencies and ordering resolved into a start
transaction) and checks that each command exists and is executable. Choices, so that it runs in CI's container, where
systemd is installed but not running:

- The units are rendered into a temporary directory with the install paths replaced by this checkout's: the
  virtualenv of the running Python for ``/opt/soa-portal/venv`` and the checkout for ``/opt/soa-portal/app``, so
  the commands checked are this project's own ``python`` and ``gunicorn``. ``--root`` was tried instead (the units
  untouched, the paths made inside a fake root): systemd then looks for its own units (sysinit.target, ...) under
  that root too, and a root that links to the host's fails on their symlinks.
- ``--man=no``: the units name no man pages, and CI's machine has no man-db. ``--generators=no``: generators read
  the host's fstab and the like, nothing of ours, and some need privileges. Neither needs a running systemd (no
  ``--user`` either: the system manager's search path is the one production uses).
- systemd 252 (Debian 12) reports a misspelt directive or a value it cannot parse as a warning and still exits 0, so
  the test fails on any output at all; the control test below shows both kinds are reported.

**The nginx site** (deploy/nginx.conf, a sites-available file) goes through ``nginx -t`` (configuration test only, no
daemon) inside a minimal main configuration of the test's own: an ``events`` block, the ``http`` block including the
site, and pid, temporary paths and logs in the temporary prefix (``-p``), so it runs without root. The site is
rendered with a self-signed certificate made by ``openssl req`` and its ``listen`` ports moved to free loopback ports:
``nginx -t`` opens the listening sockets, and 80/443 are not the test's to take.

The tools come from the Debian packages ``make test-packages`` installs (systemd, nginx). Outside CI a missing one
skips these tests, naming the package; in CI (``CI`` set, as .ci/run sets it) a missing tool fails them.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.process import bind_free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("soa-portal-*.service")) + sorted(DEPLOY.glob("soa-portal-*.target"))
INSTALL_PATHS = {"/opt/soa-portal/venv/bin/": f"{Path(sys.executable).parent}/", "/opt/soa-portal/app": str(ROOT)}
CERTIFICATE = "/etc/ssl/soa-portal/fullchain.pem"
PRIVATE_KEY = "/etc/ssl/soa-portal/privkey.pem"


def _tool(name: str, package: str) -> str:
    """The tool's path; in CI a missing one fails the test, elsewhere it skips it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found:
        return found
    message = f"{name} is not installed (Debian package {package}; `make test-packages` installs it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(message)
    pytest.skip(message)


# -- systemd ----------------------------------------------------------------------------------------------------------


def _render_units(directory: Path, replace: dict[str, str]) -> list[Path]:
    directory.mkdir()
    rendered = []
    for unit in UNITS:
        text = unit.read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        target = directory / unit.name
        target.write_text(text)
        rendered.append(target)
    return rendered


def _verify(paths: list[Path]) -> subprocess.CompletedProcess:
    # A template is checked through an instance of it, as `systemctl enable soa-portal-worker@1` names it.
    names = [str(path).replace("@.service", "@1.service") for path in paths]
    return subprocess.run(
        [_tool("systemd-analyze", "systemd"), "verify", "--man=no", "--generators=no", *names],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_units_are_found():
    assert {unit.name for unit in UNITS} == {
        "soa-portal-web.service", "soa-portal-worker@.service", "soa-portal-schedule.service",
        "soa-portal-workers.target",
    }  # fmt: skip
    # Rendering replaces these paths; a unit that stopped using them would be checked against the real /opt.
    assert all(any(path in unit.read_text() for path in INSTALL_PATHS) for unit in UNITS if unit.suffix == ".service")


def test_systemd_analyze_verify_finds_nothing_to_report_in_the_units(tmp_path):
    result = _verify(_render_units(tmp_path / "units", INSTALL_PATHS))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_systemd_analyze_verify_reports_a_misspelt_directive_and_a_missing_command(tmp_path):
    """The control: what the test above would see if a unit were wrong (systemd still exits 0 for the first)."""
    broken = {**INSTALL_PATHS, "KillMode=mixed": "KilMode=mixed", "/bin/kill -s HUP": "/bin/no-such-kill -s HUP"}
    result = _verify(_render_units(tmp_path / "units", broken))
    output = result.stdout + result.stderr
    assert "Unknown key name 'KilMode'" in output or "Unknown key 'KilMode'" in output, output
    assert "/bin/no-such-kill" in output, output
    worker = {**INSTALL_PATHS, "--with-scheduler --name %H-%i": "--with-scheduler\nRestart=sometimes"}
    result = _verify(_render_units(tmp_path / "worker-units", worker))
    output = result.stdout + result.stderr
    assert "soa-portal-worker@" in output and "sometimes" in output, output


# -- nginx ------------------------------------------------------------------------------------------------------------


def _loopback_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _nginx_test(tmp_path: Path, site: str) -> subprocess.CompletedProcess:
    """``nginx -t`` of ``site`` (deploy/nginx.conf's text, or a broken copy) in a prefix of the test's own."""
    nginx = _tool("nginx", "nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    key, certificate = prefix / "privkey.pem", prefix / "fullchain.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=portal.example.com",
         "-addext", "subjectAltName=DNS:portal.example.com", "-keyout", str(key), "-out", str(certificate)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert CERTIFICATE in site and PRIVATE_KEY in site
    site = site.replace(CERTIFICATE, str(certificate)).replace(PRIVATE_KEY, str(key))
    ports = {"80": bind_free_port(), "443": bind_free_port()}
    v6 = _loopback_v6()

    def listen(match: re.Match) -> str:
        address = "[::1]" if match["v6"] else "127.0.0.1"
        if match["v6"] and not v6:
            return "# (no IPv6 loopback on this machine)"
        return f"listen {address}:{ports[match['port']]}"

    site, replaced = re.subn(r"listen (?P<v6>\[::\]:)?(?P<port>80|443)\b", listen, site)
    assert replaced >= 2, "deploy/nginx.conf no longer listens on 80 and 443: update the rendering"
    (prefix / "site.conf").write_text(site)
    (prefix / "nginx.conf").write_text(
        f"pid {prefix / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\nhttp {{\n"
        + "".join(
            f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )  # fmt: skip
        + f"    access_log off;\n    include {prefix / 'site.conf'};\n}}\n"
    )
    return subprocess.run(
        [nginx, "-e", "stderr", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-t"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# nginx 1.25.1 moved HTTP/2 from a `listen` parameter to the `http2` directive and warns about the parameter; Debian
# 12's nginx (1.22) knows only the parameter, so deploy/nginx.conf uses it. No other warning is accepted.
_ACCEPTED_WARNING = re.compile(r'the "listen \.\.\. http2" directive is deprecated')


def test_nginx_accepts_the_site(tmp_path):
    result = _nginx_test(tmp_path, (DEPLOY / "nginx.conf").read_text())
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "[warn]" in line and not _ACCEPTED_WARNING.search(line)]
    assert not warnings, result.stderr


def test_nginx_refuses_a_broken_site(tmp_path):
    """The control: a misspelt directive fails the test above."""
    site = (DEPLOY / "nginx.conf").read_text().replace("proxy_pass ", "proxy_passs ")
    result = _nginx_test(tmp_path, site)
    assert result.returncode != 0 and 'unknown directive "proxy_passs"' in result.stderr, result.stderr
