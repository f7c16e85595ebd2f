"""Three real ``pnyx crdt serve`` processes edit one text through a partition and a kill -9.

Editors (one per replica, concurrent, in this test's event loop) talk to the replicas over
the control API.  Every insert is either filler (lowercase letters) or one *token*: a code
point unique to that edit.  Deletes only remove filler, as compare-and-delete on the
replica (``delete POS COUNT EXPECTED``), so every acknowledged token must survive: in the
end all three texts are equal and hold each acknowledged token exactly once — including
the tokens replica c acknowledged while cut off from everyone just before it was killed,
which only its own data directory had.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pnyx.services.crdt import DocClient, DocRequestError

CLI = [sys.executable, "-m", "pnyx", "crdt"]
NAMES = ("a", "b", "c")
TOKEN_BASE = {"a": 0x4E00, "b": 0x6000, "c": 0x7200}
"""Each replica's tokens are CJK code points from its own range."""
WAIT_S = 120.0
"""Generous bound on every wait (start, convergence) on a loaded machine."""
STOP_WAIT_S = 15.0
PORT_ATTEMPTS = 3


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Replica:
    name: str
    ports: dict[str, int]
    """Every replica's port, this one's included (shared by the group)."""
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def port(self) -> int:
        return self.ports[self.name]

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def peers(self) -> list[str]:
        return [f"--peer={n}=127.0.0.1:{p}" for n, p in self.ports.items() if n != self.name]

    def start(self) -> None:
        self.starts += 1
        out = open(self.data_dir.parent / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        args = [
            *CLI, "serve", "--id", self.name, "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir), "--doc", "notes", "--sync-interval-ms", "50",
            "--test-partitions", "--log-level", "warning", *self.peers,
        ]  # fmt: skip
        with out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_WAIT_S)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:]
            for p in sorted(self.data_dir.parent.glob(f"{self.name}-*.log"))
        )


@contextmanager
def replica_group() -> Iterator[dict[str, Replica]]:
    root = Path(tempfile.mkdtemp(prefix="pnyx-crdt-"))
    ports = dict(zip(NAMES, free_ports(len(NAMES)), strict=True))
    replicas = {name: Replica(name, ports, root / name) for name in NAMES}
    try:
        yield replicas
    finally:
        for replica in replicas.values():
            replica.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_group(replicas: dict[str, Replica]) -> None:
    """Start every replica and wait until each is ready; when one lost its port to another
    process (a race after ``free_ports``), start them all again on fresh ports."""
    for _ in range(PORT_ATTEMPTS):
        for replica in replicas.values():
            replica.start()
        if all(wait_ready(replica) for replica in replicas.values()):
            return
        for replica in replicas.values():
            replica.stop()
        ports = next(iter(replicas.values())).ports  # shared by the group
        ports.update(zip(ports, free_ports(len(ports)), strict=True))
    raise AssertionError(f"no free ports in {PORT_ATTEMPTS} attempts")


def wait_ready(replica: Replica) -> bool:
    """True once ``replica`` printed its ready line; False if it exited for want of its
    port; AssertionError for any other exit or after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    log = replica.data_dir.parent / f"{replica.name}-{replica.starts}.log"
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if f"ready {replica.name} " in text:
            return True
        assert replica.proc is not None
        if replica.proc.poll() is not None:
            if "already in use" in text.lower():
                return False
            raise AssertionError(f"replica {replica.name} exited:\n{replica.logs()}")
        time.sleep(0.05)
    raise AssertionError(f"replica {replica.name} not ready in {WAIT_S} s:\n{replica.logs()}")


async def connect(replica: Replica) -> DocClient:
    """A control client of ``replica`` once it listens (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        if replica.proc is not None and replica.proc.poll() is not None:
            raise AssertionError(f"replica {replica.name} exited:\n{replica.logs()}")
        try:
            return await DocClient.connect(replica.address, timeout_s=WAIT_S)
        except (OSError, TimeoutError):
            if loop.time() > deadline:
                raise AssertionError(f"replica {replica.name} not up:\n{replica.logs()}") from None
            await asyncio.sleep(0.05)


@dataclass
class Editor:
    """Edits one replica's text at random; remembers which tokens were acknowledged."""

    name: str
    rng: random.Random
    acked: list[str] = field(default_factory=list)
    maybe: list[str] = field(default_factory=list)
    """Tokens whose request was cut short by the kill (may or may not have been applied)."""
    next_token: int = 0

    def token(self) -> str:
        self.next_token += 1
        return chr(TOKEN_BASE[self.name] + self.next_token)

    async def step(self, client: DocClient, before_ack: Callable[[], None] | None = None) -> None:
        """One random edit (refusals from racing edits are fine: nothing changed then)."""
        text = await client.get("body", "text") or ""
        choice = self.rng.random()
        try:
            if choice < 0.3 and self._filler_run(text) is not None:
                pos, count = self._filler_run(text)  # type: ignore[misc]
                await self._request(client, ["delete", pos, count, text[pos : pos + count]])
            elif choice < 0.65:
                token = self.token()
                self.maybe.append(token)
                await self._request(
                    client, ["insert", self.rng.randint(0, len(text)), token], before_ack
                )
                self.maybe.remove(token)
                self.acked.append(token)
            else:
                filler = "".join(self.rng.choice("abcdefgh") for _ in range(self.rng.randint(1, 4)))
                await self._request(client, ["insert", self.rng.randint(0, len(text)), filler])
        except DocRequestError as exc:
            if "outside" not in str(exc) and "delete refused" not in str(exc):
                raise

    def _filler_run(self, text: str) -> tuple[int, int] | None:
        letters = [i for i, ch in enumerate(text) if "a" <= ch <= "h"]
        if not letters:
            return None
        pos = self.rng.choice(letters)
        count = 1
        while count < 3 and pos + count < len(text) and "a" <= text[pos + count] <= "h":
            count += 1
        return pos, count

    @staticmethod
    async def _request(
        client: DocClient, args: list[object], before_ack: Callable[[], None] | None = None
    ) -> None:
        if before_ack is None:
            await client.edit("text", "body", *args)  # type: ignore[arg-type]
            return
        request = asyncio.ensure_future(client.edit("text", "body", *args))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the request is written; the replica dies before answering
        before_ack()
        await request


async def edit_rounds(editor: Editor, client: DocClient, rounds: int) -> None:
    for _ in range(rounds):
        await editor.step(client)


async def wait_converged(clients: dict[str, DocClient], editors: dict[str, Editor]) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    acked = [t for e in editors.values() for t in e.acked]
    while True:
        texts = [await c.get("body", "text") for c in clients.values()]
        if all(t == texts[0] for t in texts) and all(t in texts[0] for t in acked):
            return str(texts[0])
        if loop.time() > deadline:
            raise AssertionError(f"no convergence within {WAIT_S} s: {texts!r}")
        await asyncio.sleep(0.1)


def test_three_processes_converge_through_partition_and_kill9() -> None:
    with replica_group() as replicas:
        start_group(replicas)
        asyncio.run(_scenario(replicas))


async def _scenario(replicas: dict[str, Replica]) -> None:
    rng = random.Random(12)
    editors = {name: Editor(name, random.Random(rng.random())) for name in NAMES}
    clients = {name: await connect(r) for name, r in replicas.items()}
    try:
        # 1. all connected, editing concurrently
        await asyncio.gather(*(edit_rounds(editors[n], clients[n], 15) for n in NAMES))
        # 2. a is cut off from b and c and keeps editing; c is killed mid-edit
        await clients["a"].partition("b", "c")
        await asyncio.gather(
            edit_rounds(editors["a"], clients["a"], 25),
            edit_rounds(editors["b"], clients["b"], 25),
            _edit_then_kill(editors["c"], clients["c"], replicas["c"]),
        )
        await clients["c"].close()
        replicas["c"].start()  # from its data directory
        clients["c"] = await connect(replicas["c"])
        await asyncio.gather(*(edit_rounds(editors[n], clients[n], 10) for n in NAMES))
        # 3. heal: everything converges, every acknowledged token is there exactly once
        await clients["a"].heal()
        final = await wait_converged(clients, editors)
    finally:
        for client in clients.values():
            await client.close()
    _check_final_text(final, editors)


async def _edit_then_kill(editor: Editor, client: DocClient, replica: Replica) -> None:
    await edit_rounds(editor, client, 10)
    others = [n for n in NAMES if n != replica.name]
    await client.partition(*others)  # alone now: what it acknowledges only its disk has
    before_kill = len(editor.acked)
    for _ in range(100):  # until it has acknowledged a few tokens of its own
        await editor.step(client)
        if len(editor.acked) >= before_kill + 5:
            break
    assert len(editor.acked) >= before_kill + 5
    for _ in range(100):  # kill -9 with an insert in flight
        if editor.rng.random() < 0.65:
            break
        await editor.step(client)
    try:
        token = editor.token()
        editor.maybe.append(token)
        await Editor._request(client, ["insert", 0, token], replica.kill)
    except (ConnectionError, OSError, TimeoutError):
        pass
    else:
        editor.maybe.remove(token)
        editor.acked.append(token)
    assert replica.proc is not None and replica.proc.returncode == -signal.SIGKILL


@pytest.mark.soak
def test_soak_processes_through_repeated_partitions_and_kills() -> None:
    """make soak: 50 cycles, each isolating one replica and killing another mid-edit."""
    with replica_group() as replicas:
        start_group(replicas)
        asyncio.run(_soak(replicas, cycles=50, seed=7))


async def _soak(replicas: dict[str, Replica], cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    editors = {name: Editor(name, random.Random(rng.random())) for name in NAMES}
    clients = {name: await connect(r) for name, r in replicas.items()}
    try:
        for _ in range(cycles):
            isolated, victim = rng.sample(NAMES, 2)
            await clients[isolated].partition(*(n for n in NAMES if n != isolated))
            await asyncio.gather(
                *(edit_rounds(editors[n], clients[n], 20) for n in NAMES if n != victim),
                _edit_then_kill(editors[victim], clients[victim], replicas[victim]),
            )
            await clients[victim].close()
            replicas[victim].start()
            clients[victim] = await connect(replicas[victim])
            await asyncio.gather(*(edit_rounds(editors[n], clients[n], 5) for n in NAMES))
            await clients[isolated].heal()
        final = await wait_converged(clients, editors)
    finally:
        for client in clients.values():
            await client.close()
    _check_final_text(final, editors)


def _check_final_text(final: str, editors: dict[str, Editor]) -> None:
    tokens = [ch for ch in final if not "a" <= ch <= "h"]
    assert len(tokens) == len(set(tokens)), "a token appears twice"
    acked = {t for e in editors.values() for t in e.acked}
    maybe = {t for e in editors.values() for t in e.maybe}
    assert acked <= set(tokens)
    assert set(tokens) <= acked | maybe, f"unknown characters {set(tokens) - acked - maybe}"
    assert sum(len(e.acked) for e in editors.values()) >= 30  # the run did edit
