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
