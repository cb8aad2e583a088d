"""Run the sandbox directory in the foreground: ``python -m sandbox.directory [--users N]``.

Prints one line of JSON (url, base_dn, bind_dn, password_file, users_dn) once slapd accepts
connections, so scripts can read where it is, then runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .launcher import SandboxDirectory, SandboxDirectoryError
from .users import DEFAULT_BASE_DN


def main(argv: list[str] | None = None) -> int:
    """Start the directory, announce it, and keep it up until told to stop."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.directory", description="Run the AD-shaped sandbox directory (slapd) in the foreground."
    )
    parser.add_argument("--users", type=int, default=0, help="generated users to load (default 0)")
    parser.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder to keep the instance in (default: temp)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the user generator (default 1)")
    parser.add_argument("--base-dn", default=DEFAULT_BASE_DN, help=f"domain base DN (default {DEFAULT_BASE_DN})")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Handlers first, so a signal that arrives while slapd starts still leads to a clean stop.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        directory = SandboxDirectory.start(
            workdir=args.workdir, port=args.port, base_dn=args.base_dn, users=args.users, seed=args.seed
        )
    except (SandboxDirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    with directory:
        announcement = {
            "url": directory.url,
            "base_dn": directory.base_dn,
            "bind_dn": directory.bind_dn,
            "password_file": str(directory.password_file),
            "users_dn": directory.users_dn,
        }
        print(json.dumps(announcement), flush=True)
        while not stop_requested.wait(timeout=0.5):
            if not directory.is_running():
                print("error: slapd exited unexpectedly", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
