"""Start and stop a private slapd that looks like Active Directory to SOA Portal.

Each instance lives in its own folder (slapd.conf, the schema, the database, the log and the
password file), listens on one loopback port and is a child of the Python process that started it.
The data is loaded with slapadd before slapd starts, which is far faster than adding the same
entries over LDAP (bench/bench_directory.py measures by how much). With ``keep=True`` and a folder of its own,
a directory started again with the same base DN, users and seed reopens the database it left, with every change
made to it over LDAP (the demo's restarts).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ldap3.utils.dn import escape_rdn

from .ldif import write_ldif
from .users import DEFAULT_BASE_DN, base_entries, dns_domain, generate_users, users_dn

SCHEMA_FILE = Path(__file__).with_name("ad.schema")
SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
# Debian installs the slap* tools in sbin, which is not on every user's PATH.
SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_MARKER = ".sandbox-directory"
_LOADED = "loaded.json"  # what the database in data/ was loaded with; written once slapadd succeeded
_ROOT_DSE = "rootdse.ldif"
DEFAULT_SERVER_NAME = "DC1"
_PORT_ATTEMPTS = 5

# Attributes SOA Portal looks entries up by. entryCSN and modifyTimestamp get an equality index
# because back-mdb also answers >= and <= from it for these ordered syntaxes (change tracking).
# Substring indexes are costly to build (proxyAddresses' alone doubles the slapadd time of 10,000
# users), so only proxyAddresses has one: alias prefix search is the one substring query AD serves.
_INDEXES = (
    ("objectClass", "eq"),
    ("objectGUID,mS-DS-ConsistencyGuid", "eq"),
    ("sAMAccountName,userPrincipalName,mailNickname,mail", "eq"),
    ("sAMAccountType,msDS-ExternalDirectoryObjectID", "eq"),
    ("proxyAddresses", "eq,sub"),
    ("entryCSN,modifyTimestamp", "eq"),
)

# AD's rangeUpper for the values the product writes. The constraint overlay counts bytes, not
# characters, so non-ASCII values hit the limit a little earlier than on a domain controller.
_SIZE_LIMITS = (
    (",".join(f"extensionAttribute{i}" for i in range(1, 16)), 1024),
    ("proxyAddresses", 1123),
    ("mail", 256),
)

_SYSTEM_SCHEMAS = ("core.schema", "cosine.schema", "inetorgperson.schema")
_PR_SET_PDEATHSIG = 1
_F_SETPIPE_SZ = 1031


class SandboxDirectoryError(RuntimeError):
    """The sandbox directory could not be set up, started or stopped."""


def find_tool(name: str) -> str:
    """Return the path of an OpenLDAP server tool, or explain which packages provide it."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which(name, path=search_path)
    if found is None:
        raise SandboxDirectoryError(
            f"{name} not found on PATH or in {', '.join(SBIN_DIRS)}. "
            "Install the Debian packages: apt-get install -y slapd ldap-utils"
        )
    return found


def _ssha(password: str) -> str:
    """Hash a password the way slappasswd does by default, so slapd.conf never holds it in clear."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _quote(value: str | Path) -> str:
    """Quote a slapd.conf argument; paths under a temp folder may contain spaces."""
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply when the file already existed


def _prepare_workdir(workdir: Path | None, *, reuse: Mapping[str, Any] | None = None) -> tuple[Path, bool, bool]:
    """Return the folder to use, whether we created it (and so may delete it), and whether its database is kept.

    ``reuse`` (base DN, users, seed) keeps a database that an earlier start loaded with exactly those; any other
    database in the folder is thrown away, as a temp folder would start empty.
    """
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="soa-directory-")), True, False
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()) and not (workdir / _MARKER).exists():
        raise SandboxDirectoryError(
            f"{workdir} is not empty and was not made by a sandbox directory; refusing to write into it."
        )
    (workdir / _MARKER).touch()
    if reuse is not None and _loaded_with(workdir) == dict(reuse):
        return workdir, False, True
    (workdir / _LOADED).unlink(missing_ok=True)
    shutil.rmtree(workdir / "data", ignore_errors=True)
    return workdir, False, False


def _loaded_with(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / _LOADED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def server_dn(base_dn: str, server_name: str) -> str:
    """The DN AD's root DSE gives as dsServiceName for a domain controller called ``server_name``."""
    site = "CN=Default-First-Site-Name,CN=Sites,CN=Configuration"
    return f"CN=NTDS Settings,CN={escape_rdn(server_name)},CN=Servers,{site},{base_dn}"


def _root_dse(*, base_dn: str, server_name: str) -> str:
    """The root DSE attributes AD has and slapd does not construct, as the LDIF that ``rootDSE`` loads."""
    host = f"{server_name.lower()}.{dns_domain(base_dn)}"
    return (
        f"dn:\ndsServiceName: {server_dn(base_dn, server_name)}\ndefaultNamingContext: {base_dn}\ndnsHostName: {host}\n"
    )


def _map_size(users: int) -> int:
    """back-mdb's map (a sparse file, so only what is used takes disk): a loaded user takes ~3.5 KB (345 MB for
    100,000), and the writes after the load need room for the pages they copy, so 4 GiB would be nearly full at a
    million users before the hybrid writeback began."""
    return max(4 << 30, users * (16 << 10))


def _slapd_conf(*, workdir: Path, base_dn: str, bind_dn: str, password: str, users: int = 0) -> str:
    lines = [
        "# Written by sandbox.directory; regenerated on every start.",
        *(f"include {_quote(SYSTEM_SCHEMA_DIR / name)}" for name in _SYSTEM_SCHEMAS),
        f"include {_quote(workdir / SCHEMA_FILE.name)}",
        # dsServiceName and friends: which "domain controller" answers, chosen per start (server_name).
        f"rootDSE {_quote(workdir / _ROOT_DSE)}",
        f"pidfile {_quote(workdir / 'slapd.pid')}",
        f"argsfile {_quote(workdir / 'slapd.args')}",
        f"modulepath {_quote(MODULE_DIR)}",
        "moduleload back_mdb",
        "moduleload syncprov",
        "moduleload constraint",
        "sizelimit unlimited",
        # AD lets anyone read the root DSE and schema but nothing else before a bind.
        'access to dn.base="" by * read',
        'access to dn.base="cn=Subschema" by * read',
        "access to * by users read by * none",
        "database mdb",
        f"maxsize {_map_size(users)}",
        f"suffix {_quote(base_dn)}",
        f"rootdn {_quote(bind_dn)}",
        f"rootpw {_ssha(password)}",
        f"directory {_quote(workdir / 'data')}",
        "dbnosync",
        # Pages written in place in the map rather than copied out with write(): slapadd of 100,000 users 18 s -> 14 s,
        # Entra Connect's hybrid writeback of them (100,000 modifies) 82 s -> 15 s. Safe enough for a sandbox that never
        # syncs to disk anyway.
        "envflags writemap",
        *(f"index {attrs} {kinds}" for attrs, kinds in _INDEXES),
        # syncprov keeps contextCSN on the suffix entry current: the "highest USN" of this server.
        "overlay syncprov",
        "overlay constraint",
        *(f"constraint_attribute {attrs} size {limit}" for attrs, limit in _SIZE_LIMITS),
    ]
    return "\n".join(lines) + "\n"


def _bulk_load(*, slapadd: str, conf: Path, entries: Iterable[Mapping[str, Any]], log: Path) -> None:
    """Stream entries into slapadd; -q skips checks our own generated data does not need."""
    with log.open("wb") as log_handle:
        proc = subprocess.Popen(
            [slapadd, "-q", "-w", "-f", str(conf)], stdin=subprocess.PIPE, stdout=log_handle, stderr=log_handle
        )
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # Linux only; a bigger pipe smooths the hand-over
            fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        try:
            write_ldif(entries, proc.stdin)
        except BrokenPipeError:
            pass  # slapadd stopped reading because it failed; its log says why
        except BaseException:
            proc.kill()  # our side failed: do not leave slapadd waiting for the rest
            raise
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            returncode = proc.wait()
    if returncode != 0:
        raise SandboxDirectoryError(f"slapadd failed (exit {returncode}):\n{_tail(log)}")


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return text[-limit:].strip() or "(no output)"


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Return a preexec_fn that makes the kernel SIGTERM slapd when its parent dies, or None.

    Linux delivers the signal when the *thread* that forked the child exits, so this is only safe
    when starting from the main thread; from other threads atexit alone has to do.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)  # loaded before fork: the child only makes a call
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _wait_until_listening(proc: subprocess.Popen[bytes], pidfile: Path, host: str, port: int, timeout: float) -> bool:
    """Wait until this slapd accepts connections on the port; False if it exited first.

    slapd binds its port, opens the databases, writes its pid file and only then listens. Waiting
    for the pid file first makes sure an accepted connection reached our slapd and not another
    process holding the same port; the accepted connection then means it is ready.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if pidfile.exists():
            try:
                with socket.create_connection((host, port), timeout=0.1):
                    return True
            except OSError:
                pass
        time.sleep(0.002)
    return False


_RUNNING: set[SandboxDirectory] = set()
_RUNNING_LOCK = threading.Lock()


def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for directory in running:
        directory.stop()


atexit.register(_stop_all)


class SandboxDirectory:
    """A running private slapd with an AD-shaped schema. Create it with :meth:`start`."""

    host: str
    port: int
    base_dn: str
    bind_dn: str
    password: str
    password_file: Path
    users_dn: str
    workdir: Path

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        workdir: Path,
        owns_workdir: bool,
        host: str,
        port: int,
        base_dn: str,
        bind_dn: str,
        password: str,
        password_file: Path,
        reopened: bool = False,
        server_name: str = DEFAULT_SERVER_NAME,
    ) -> None:
        self._process = process
        self.server_name = server_name
        self.server_dn = server_dn(base_dn, server_name)  # the root DSE's dsServiceName
        self.reopened = reopened  # whether it reopened the database an earlier start left (keep=True)
        self._owns_workdir = owns_workdir
        self._stop_lock = threading.Lock()
        self.workdir = workdir
        self.host = host
        self.port = port
        self.base_dn = base_dn
        self.bind_dn = bind_dn
        self.password = password
        self.password_file = password_file
        self.users_dn = users_dn(base_dn)

    @property
    def url(self) -> str:
        """LDAP URL of the server, e.g. ``ldap://127.0.0.1:38999``."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of slapd."""
        return self._process.pid

    @classmethod
    def start(
        cls,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        base_dn: str = DEFAULT_BASE_DN,
        users: int = 0,
        seed: int = 1,
        keep: bool = False,
        server_name: str = DEFAULT_SERVER_NAME,
    ) -> SandboxDirectory:
        """Create the database, load the OU tree and ``users`` generated users, and start slapd.

        ``workdir`` defaults to a new temp folder, deleted again on :meth:`stop`; a folder given
        here is kept. ``keep`` (with a ``workdir``) reopens the database a previous start left there when it
        was loaded with the same ``base_dn``, ``users`` and ``seed``, instead of loading a new one.
        ``port`` defaults to a free loopback port. ``server_name`` is the domain controller the root DSE names
        (dsServiceName, dnsHostName); it is not part of the data, so a kept database started again under another
        name is the same domain answered by another DC.
        """
        slapd = find_tool("slapd")
        slapadd = find_tool("slapadd")
        dns_domain(base_dn)  # refuse a base DN AD could not have before creating anything
        host = "127.0.0.1"
        # The schema's digest is part of it: a database loaded under an older schema lacks what the new one adds.
        schema = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()[:16]
        loaded_with = {"base_dn": base_dn, "users": users, "seed": seed, "schema": schema}
        workdir, owns_workdir, reopened = _prepare_workdir(workdir, reuse=loaded_with if keep else None)
        try:
            bind_dn = f"CN=admin,{base_dn}"
            password = secrets.token_urlsafe(24)
            password_file = workdir / "password"
            _write_secret(password_file, password)
            shutil.copyfile(SCHEMA_FILE, workdir / SCHEMA_FILE.name)
            (workdir / _ROOT_DSE).write_text(_root_dse(base_dn=base_dn, server_name=server_name), encoding="utf-8")
            conf = workdir / "slapd.conf"
            _write_secret(
                conf, _slapd_conf(workdir=workdir, base_dn=base_dn, bind_dn=bind_dn, password=password, users=users)
            )
            if not reopened:
                (workdir / "data").mkdir()
                entries = itertools.chain(base_entries(base_dn), generate_users(users, base_dn=base_dn, seed=seed))
                _bulk_load(slapadd=slapadd, conf=conf, entries=entries, log=workdir / "slapadd.log")
                (workdir / _LOADED).write_text(json.dumps(loaded_with), encoding="utf-8")
            process, port = cls._launch(slapd=slapd, conf=conf, host=host, port=port, log=workdir / "slapd.log")
        except BaseException:
            if owns_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

        directory = cls(
            reopened=reopened,
            process=process,
            workdir=workdir,
            owns_workdir=owns_workdir,
            host=host,
            port=port,
            base_dn=base_dn,
            bind_dn=bind_dn,
            password=password,
            password_file=password_file,
            server_name=server_name,
        )
        with _RUNNING_LOCK:
            _RUNNING.add(directory)
        return directory

    @staticmethod
    def _launch(
        *, slapd: str, conf: Path, host: str, port: int | None, log: Path
    ) -> tuple[subprocess.Popen[bytes], int]:
        # A port picked by probing can be taken by someone else before slapd binds it; try again
        # then. A port the caller asked for is used once, and its failure reported.
        attempts = _PORT_ATTEMPTS if port is None else 1
        for attempt in range(attempts):
            chosen = port if port is not None else _free_port(host)
            pidfile = conf.with_name("slapd.pid")
            pidfile.unlink(missing_ok=True)
            with log.open("wb") as log_handle:
                process = subprocess.Popen(
                    # "-d none" keeps slapd in the foreground and prints only fatal messages.
                    [slapd, "-f", str(conf), "-h", f"ldap://{host}:{chosen}/", "-d", "none"],
                    stdin=subprocess.DEVNULL,
                    stdout=log_handle,
                    stderr=log_handle,
                    # Its own process group: a Ctrl-C meant for us must not kill slapd behind our back.
                    process_group=0,
                    preexec_fn=_die_with_parent_hook(),
                )
            if _wait_until_listening(process, pidfile, host, chosen, START_TIMEOUT):
                return process, chosen
            _terminate(process)
            output = _tail(log)
            if f"errno={errno.EADDRINUSE}" in output and attempt + 1 < attempts:
                continue
            raise SandboxDirectoryError(
                f"slapd did not start on {host}:{chosen} (exit {process.returncode}).\n"
                f"slapd said:\n{output}\nslaptest says:\n{_slaptest(conf)}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def is_running(self) -> bool:
        """True while the slapd process is alive."""
        return self._process.poll() is None

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL if it hangs) and delete the temp folder we made. Idempotent."""
        with self._stop_lock:
            _terminate(self._process)
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            with _RUNNING_LOCK:
                _RUNNING.discard(self)

    def __enter__(self) -> SandboxDirectory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<SandboxDirectory {self.url} {self.base_dn} {state}>"


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _slaptest(conf: Path) -> str:
    try:
        result = subprocess.run(
            [find_tool("slaptest"), "-u", "-f", str(conf)], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, SandboxDirectoryError, subprocess.TimeoutExpired) as exc:
        return f"(slaptest could not run: {exc})"
    return (result.stdout + result.stderr).strip() or f"(exit {result.returncode}, no output)"


__all__ = ["SandboxDirectory", "SandboxDirectoryError", "find_tool"]
