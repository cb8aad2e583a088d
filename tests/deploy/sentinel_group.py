"""A private Redis Sentinel group for the failover tests: a master, a replica of it and three Sentinels (quorum 2), as
docs/deployment.md lays production out, each a redis-server of the test packages on a free loopback port.

Sentinel's timings are shortened so that a failover takes seconds: a master that does not answer for a second is
down, and a failover that stalls is tried again after five. Every wait is a bounded poll for a state Redis or Sentinel
reports (replication up, each Sentinel knowing the replica and the other Sentinels, the replica promoted); a wait
that runs out fails with the tail of every server's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from sandbox.process import bind_free_port, child_dies_with_parent, wait_for_port

MASTER_NAME = "soa-failover"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
# Bounds on waits for Sentinel's own work, generous for a loaded 2-core machine: not figures the test asserts.
READY_WAIT = 30.0
FAILOVER_WAIT = 60.0


@dataclass
class Node:
    """One redis-server of the group: a data server or a Sentinel."""

    label: str
    port: int
    process: subprocess.Popen
    log: Path

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class SentinelGroup:
    """Start with ``SentinelGroup.start(workdir)``; ``stop()`` ends every server still running (fixtures call it in
    their teardown, whatever the test did)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @classmethod
    def start(cls, workdir: Path) -> SentinelGroup:
        group = cls(workdir)
        try:
            group.master = group._server("master")
            group.replica = group._server("replica", "--replicaof", "127.0.0.1", str(group.master.port))
            group.sentinels = [group._sentinel(f"sentinel-{number}") for number in range(1, SENTINELS + 1)]
            group._wait_until_ready()
        except BaseException:
            group.stop()
            raise
        return group

    # -- starting and stopping -------------------------------------------------------------------------------------

    def _launch(self, label: str, port: int, command: list[str]) -> Node:
        log = self.workdir / f"{label}.log"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   preexec_fn=child_dies_with_parent)  # fmt: skip
        node = Node(label, port, process, log)
        self.nodes.append(node)
        wait_for_port("127.0.0.1", port, timeout=READY_WAIT, process=process)
        return node

    def _server(self, label: str, *extra: str) -> Node:
        port = bind_free_port()
        data = self.workdir / label  # a replica writes the master's snapshot to its dir while it syncs
        data.mkdir()
        return self._launch(label, port, [
            self.binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "",
            "--appendonly", "no", "--logfile", str(self.workdir / f"{label}.log"), *extra,
        ])  # fmt: skip

    def _sentinel(self, label: str) -> Node:
        port = bind_free_port()
        config = self.workdir / f"{label}.conf"  # Sentinel rewrites its own file as it learns the group
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.workdir / f'{label}.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        )
        return self._launch(label, port, [self.binary, str(config), "--sentinel"])

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.process.send_signal(signal.SIGCONT)  # a hung master (hang_master) must be able to end
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.process.stderr:
                node.process.stderr.close()

    def kill_master(self) -> None:
        """SIGKILL the master, as a host that crashed stops: no shutdown, no last word to the replica or Sentinels."""
        os.kill(self.master.process.pid, signal.SIGKILL)
        self.master.process.wait(timeout=10)

    def hang_master(self) -> None:
        """SIGSTOP the master, as a host that hangs or drops off the network: its connections stay open (its kernel
        still acknowledges what is sent), and nothing ever answers. Only a timeout ends a call made to it."""
        os.kill(self.master.process.pid, signal.SIGSTOP)

    # -- what the portal is given -------------------------------------------------------------------------------------

    @property
    def sentinels_setting(self) -> str:
        """REDIS_SENTINELS as an operator writes it."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    # -- waiting for Sentinel ------------------------------------------------------------------------------------------

    def _wait_until_ready(self) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and the other Sentinels: a failover
        needs both (a Sentinel that knows no replica has nothing to promote; one alone cannot reach the quorum)."""

        def ready() -> bool:
            with self.replica.client() as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for node in self.sentinels:
                with node.client() as sentinel:
                    state = sentinel.sentinel_master(MASTER_NAME)
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < SENTINELS - 1:
                    return False
            return True

        self._poll("the replica in sync and every Sentinel knowing the group", ready, READY_WAIT)

    def wait_for_promotion(self) -> None:
        """Until every Sentinel names the replica as the master and the replica says it is one."""
        expected = ("127.0.0.1", self.replica.port)

        def promoted() -> bool:
            for node in self.sentinels:
                with node.client() as sentinel:
                    address = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                if address is None or (address[0], int(address[1])) != expected:
                    return False
            with self.replica.client() as replica:
                return replica.info("replication")["role"] == "master"

        self._poll("Sentinel promoting the replica", promoted, FAILOVER_WAIT)

    def _poll(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError:
                pass  # a Sentinel still starting, or busy failing over: asked again below
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace")[-3000:] if node.log.exists() else ""
            parts.append(f"--- {node.label} (port {node.port})\n{text}")
        return "\n".join(parts)
