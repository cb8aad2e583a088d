"""A private redis-server on a free loopback port, for tests and the demo when no Redis is given.

Keeps nothing on disk and dies with its parent, so it never touches the machine's own Redis.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from sandbox.process import bind_free_port, child_dies_with_parent, wait_for_port


class RedisServer:
    """A running private redis-server; ``url`` points at database 0."""

    def __init__(self, process: subprocess.Popen, port: int, workdir: Path):
        self.process, self.port, self.workdir = process, port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"

    @classmethod
    def start(cls, *, port: int | None = None, timeout: float = 5.0) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
        workdir = Path(tempfile.mkdtemp(prefix="soa-redis-"))
        port = port or bind_free_port()
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
             "--save", "", "--appendonly", "no", "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own process group: a Ctrl-C meant for the demo must not kill Redis before the workers stop.
            process_group=0,
            preexec_fn=child_dies_with_parent,
        )  # fmt: skip
        try:
            wait_for_port("127.0.0.1", port, timeout=timeout, process=process)
        except RuntimeError:
            process.kill()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(process, port, workdir)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
