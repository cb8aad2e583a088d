"""What every benchmark shares: a figure with its samples, a timer, and the machine header."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Figure:
    """One measured quantity: a sample per repeat, reported as the median and the spread."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def row(self) -> str:
        low, high = min(self.samples), max(self.samples)
        return (
            f"{self.name:<52} {self.median:>12,.1f} {self.unit:<10} ({low:,.1f} - {high:,.1f}, n={len(self.samples)})"
        )


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def machine_line() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"machine: {os.cpu_count()} cores, {model}, {platform.platform()}, python {platform.python_version()}"


def load_line() -> str:
    """The load average now: figures taken on a busy machine (other work sharing the cores) read low."""
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def cpu_seconds(*, pids: tuple[int, ...] = (), names: tuple[str, ...] = ()) -> float:
    """CPU seconds (user + system) used so far by the processes ``pids`` and every process named one of ``names``,
    each with its waited-for children: a forking worker's work horses, and the backends PostgreSQL's postmaster has
    reaped, count once they have ended. Linux only (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:  # ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if int(entry.name) in pids or name in names:
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def setup_django(name: str) -> str:
    """Set Django up for a benchmark and migrate its database; returns the database engine for the header.

    DATABASE_URL chooses the database (PostgreSQL for the figures that matter); without it a fresh SQLite file
    in a temp folder is used. Logs below WARNING are off so the terminal holds the figures.
    """
    import tempfile

    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix=f'soa-bench-{name}-')}/bench.sqlite3")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return settings.DATABASES["default"]["ENGINE"]


def fresh_postgres(kind: str, name: str) -> None:
    """With ``kind`` "postgres" and no DATABASE_URL given, point DATABASE_URL at a new, empty database ``name``
    on the machine's PostgreSQL (dropped first if an earlier run left it). Call before setup_django."""
    if kind != "postgres" or os.environ.get("DATABASE_URL"):
        return
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"


def point_settings_at(directory, exchange, redis_url: str) -> dict[str, str]:
    """Point this process's settings at a bench's directory, emulator and Redis; returns a worker's environment."""
    from django.conf import settings

    client = exchange.clients["secret"]
    values = {
        "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn, "LDAP_BASE_DN": directory.base_dn,
        "LDAP_PASSWORD_FILE": str(directory.password_file), "REDIS_URL": redis_url,
        "EXO_BASE_URL": exchange.base_url, "EXO_TENANT": exchange.tenant_id, "ENTRA_AUTHORITY": exchange.authority,
        "GRAPH_BASE_URL": exchange.base_url, "ENTRA_CLIENT_ID": client["client_id"],
        "ENTRA_CLIENT_SECRET_FILE": client["client_secret_file"], "EXO_CA_FILE": str(exchange.ca_file),
    }  # fmt: skip
    for name, value in values.items():
        setattr(settings, name, value)
    settings.RQ_QUEUES = {name: {**config, "URL": redis_url} for name, config in settings.RQ_QUEUES.items()}
    return {**os.environ, **values, "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true",
            "LOG_LEVEL": "WARNING", "DATABASE_URL": os.environ["DATABASE_URL"]}  # fmt: skip


def cloud_managed_tenant(exchange):
    """Make every synced mailbox of the emulator cloud-managed, import the tenant, and return a tenant-wide help
    desk user: the starting point of the help-desk edit benches."""
    import uuid

    from portal.models import User
    from portal.roles import Role
    from portal.services import role_assign
    from writeback.inventory import inventory_run_request
    from writeback.jobs.inventory import claim, execute
    from writeback.models import InventoryRun

    exchange.sync()
    for mailbox in exchange.mailboxes():
        if mailbox.get("IsDirSynced"):
            exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], IsExchangeCloudManaged=True)
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    if execute(claim(run.pk)).state != InventoryRun.State.DONE:
        raise SystemExit("the inventory import failed")
    helpdesk = User.objects.create_user(username="bench-helpdesk", password=uuid.uuid4().hex)
    role_assign(actor=None, user=helpdesk, role=Role.HELPDESK, tenant_wide=True)
    return helpdesk
