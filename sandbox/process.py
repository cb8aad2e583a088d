"""Small helpers for the sandbox's child processes (ports, readiness, lifetime)."""

import ctypes
import signal
import socket
import subprocess
import time

_PR_SET_PDEATHSIG = 1


def bind_free_port() -> int:
    """A loopback port that was free a moment ago (the caller retries if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_dies_with_parent() -> None:
    """preexec_fn: have Linux SIGTERM the child when its parent dies, so no server outlives a killed test run."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Block until host:port accepts TCP; raise RuntimeError (with the child's stderr) on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"{process.args[0]} exited with status {process.returncode}: {err.strip()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"Nothing answered on {host}:{port} within {timeout:.0f} s.")
