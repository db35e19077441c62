"""A real local chain node: anvil, started and stopped as a child process, and kept across crashes.

anvil comes from the pinned npm package ``@foundry-rs/anvil-linux-amd64``. Two ways
to keep its chain across restarts:

- ``Anvil(state_file=F)``: anvil's own ``--state``: loaded at start, written on a
  graceful stop and every ``state_interval`` seconds (whole seconds, at least 1). A
  ``kill -9`` loses what was mined since the last write: with automine (a block per
  transaction) that is many blocks (10 to 38 at 40 tx/s with 1 s, measured here). And
  anvil truncates the file before it writes it: at 1,500 blocks the file on disk was
  partial 2.4% of the time, and a kill then leaves a file anvil refuses to load.
- ``Anvil(load_state=F)`` and a :class:`ChainJournal` beside it (what the devnet runs):
  anvil only reads ``F``. The journal process writes ``F`` (a snapshot from
  ``anvil_dumpState``, written to a temporary file and renamed) now and then, and between
  snapshots appends every block anvil mines to a journal (raw transactions, timestamp,
  base fee, hash) a few milliseconds after anvil announces it on its WebSocket. After a
  crash, :func:`restore_chain` replays the journal onto the snapshot in a private anvil
  and checks that every replayed block has the hash it had: anvil's blocks are a function
  of parent, timestamp, base fee and transactions, so the restored chain is the same
  chain. A kill -9 loses only what the journal had not written yet: 0 blocks in 15 of 16
  kills here, 1 in the other.

A snapshot costs anvil time in proportion to the chain's history (about 60 ms per 1,000
blocks, measured here) and holds its other requests meanwhile; journaling a block costs
the journal process about 2 ms of CPU and anvil one ``eth_getRawTransactionByHash`` per
transaction (the block's header and transaction hashes come with the notification).

Example:
    >>> with Anvil(state_file=Path(".devnet/chain.json")) as node:
    ...     w3 = node.web3()
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from web3 import Web3
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from chain_scheduler.errors import ChainUnavailable

logger = logging.getLogger(__name__)

#: The mnemonic anvil derives its funded accounts from (public test keys, devnet only).
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"


def find_anvil() -> Path:
    """The anvil binary: $ANVIL, the project's node_modules, or PATH."""
    env = os.environ.get("ANVIL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for root in (Path.cwd(), here):
        candidate = root / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
        if candidate.exists():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ChainUnavailable("anvil not found: run `npm ci` in the project (or set $ANVIL).")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Anvil:
    """An anvil node on 127.0.0.1.

    Args:
        port: Port to listen on (0 picks a free one).
        accounts: Funded accounts to create.
        balance: Ether per account.
        block_time: Seconds per block; None mines a block per transaction (automine).
        state_file: Load the chain from here and let anvil save it back, on a graceful stop
            and every ``state_interval`` seconds (None: ephemeral).
        state_interval: Seconds between anvil's state dumps (with ``state_file``).
        load_state: Load the chain from here if the file exists; anvil never writes it (a
            :class:`ChainJournal` does). Not with ``state_file``.
        log_file: Where anvil's output goes (None: discarded).
        timestamp: The genesis block's timestamp, where anvil's clock starts (None: now).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        accounts: int = 20,
        balance: int = 10_000,
        block_time: float | None = None,
        state_file: Path | None = None,
        state_interval: int = 5,
        load_state: Path | None = None,
        log_file: Path | None = None,
        chain_id: int = 31337,
        timestamp: int | None = None,
    ) -> None:
        if state_file is not None and load_state is not None:
            raise ValueError("state_file and load_state exclude each other: anvil writes the first, never the second")
        self.port = port
        self.accounts = accounts
        self.balance = balance
        self.block_time = block_time
        self.state_file = state_file
        self.state_interval = state_interval
        self.load_state = load_state
        self.log_file = log_file
        self.chain_id = chain_id
        self.timestamp = timestamp
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """anvil's WebSocket endpoint (the same port as HTTP)."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until it answers JSON-RPC."""
        if self.port == 0:
            self.port = free_port()
        cmd = [
            str(find_anvil()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--accounts",
            str(self.accounts),
            "--balance",
            str(self.balance),
            "--mnemonic",
            DEVNET_MNEMONIC,
            "--chain-id",
            str(self.chain_id),
            "--silent",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.timestamp is not None:
            cmd += ["--timestamp", str(self.timestamp)]
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_file), "--state-interval", str(self.state_interval)]
        if self.load_state is not None and self.load_state.exists():
            cmd += ["--load-state", str(self.load_state)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChainUnavailable(f"anvil exited at start with code {self._process.returncode}: {' '.join(cmd)}")
            try:
                if self.web3().is_connected():
                    logger.info("anvil up on %s (pid %d)", self.url, self._process.pid)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ChainUnavailable(f"anvil did not answer on {self.url} within {timeout:.0f}s")

    def web3(self) -> Web3:
        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 10}))

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM: anvil writes its ``state_file``), then kill if it hangs."""
        proc = self._process
        if proc is None:
            return
        self._process = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("anvil did not stop within %.0fs; killing it", timeout)
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Stop at once, as a crash would (state since the last dump is lost)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def advance_time(w3: Web3, seconds: int) -> None:
    """Move a devnet chain's clock forward and mine a block (anvil, hardhat)."""
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


# ------------------------------------------------------------------ the journal


@dataclass(frozen=True, slots=True)
class JournalBlock:
    """One block as the journal keeps it: enough to mine it again, and its hash to check that.

    Attributes:
        number, hash, parent: The block's number, hash and parent hash (0x hex).
        timestamp: Its timestamp, seconds.
        base_fee: Its base fee, wei (anvil derives it from the parent, except for the block
            after a chain's genesis: a replay sets it).
        txs: Its transactions, raw and signed (0x hex), in block order.
    """

    number: int
    hash: str
    parent: str
    timestamp: int
    base_fee: int | None
    txs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Journal:
    """What a journal file holds (:meth:`read`).

    The file is JSON lines: a header naming the snapshot it continues
    (``{"snapshot": N, "hash": H}``), then for every block anvil announces a
    ``{"head": N}`` line (written before the block is fetched: the watermark) and the
    block itself; ``{"closed": true}`` when a snapshot was taken with nothing after it.

    Attributes:
        snapshot_block, snapshot_hash: The snapshot's head (None: no header, no journal).
        blocks: The blocks mined since, in order.
        reached: The highest block anvil announced, journaled or not (None: no journal).
        closed: Whether the snapshot was taken on a clean stop (nothing can follow it).
    """

    snapshot_block: int | None
    snapshot_hash: str | None
    blocks: tuple[JournalBlock, ...]
    reached: int | None
    closed: bool

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Read ``path`` (missing: an empty journal; a torn last line, from a crash mid-write, is ignored)."""
        snapshot_block: int | None = None
        snapshot_hash: str | None = None
        blocks: list[JournalBlock] = []
        reached: int | None = None
        closed = False
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError:
                logger.warning("%s line %d is torn (a crash while writing it): ignored", path, number)
                continue
            if "snapshot" in entry:
                snapshot_block, snapshot_hash = int(entry["snapshot"]), str(entry["hash"])
                reached = max(reached or 0, snapshot_block)
            elif "block" in entry:
                blocks.append(
                    JournalBlock(
                        number=int(entry["block"]),
                        hash=str(entry["hash"]),
                        parent=str(entry["parent"]),
                        timestamp=int(entry["timestamp"]),
                        base_fee=None if entry.get("base_fee") is None else int(entry["base_fee"]),
                        txs=tuple(entry["txs"]),
                    )
                )
                reached = max(reached or 0, int(entry["block"]))
            elif "head" in entry:
                reached = max(reached or 0, int(entry["head"]))
            elif entry.get("closed"):
                closed = True
        return cls(snapshot_block, snapshot_hash, tuple(blocks), reached, closed)

    @property
    def head(self) -> int | None:
        """The highest block the journal holds (its snapshot's, or the last journaled)."""
        return self.blocks[-1].number if self.blocks else self.snapshot_block

    @property
    def pending(self) -> bool:
        """Whether a restore has anything to look at: the journal exists and was not closed."""
        return self.snapshot_block is not None and not self.closed


@dataclass(frozen=True, slots=True)
class ChainRestore:
    """What :func:`restore_chain` did: the chain restored from saved state after an unclean stop.

    Attributes:
        at: When, ISO 8601 UTC.
        snapshot_block: The head of the snapshot it started from (None: there was none).
        head: The restored chain's head (the snapshot plus the blocks replayed).
        replayed: Blocks replayed from the journal.
        reached: The highest block the chain had reached before the stop, as the journal
            saw it (None: no journal).
        lost: ``reached - head``: blocks the chain had and no longer has (None: unknown).
        diverged_at: The first journaled block that did not replay to the same hash (None:
            every one did); the journal's blocks from there on are lost.
    """

    at: str
    snapshot_block: int | None
    head: int | None
    replayed: int
    reached: int | None
    lost: int | None
    diverged_at: int | None = None


class _Rpc:
    """JSON-RPC over one keep-alive HTTP session, single calls and batches."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._session = requests.Session()

    def call(self, method: str, *params: Any) -> Any:
        reply = self._post({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        if "error" in reply:
            raise ChainUnavailable(f"{method} failed on {self.url}: {reply['error'].get('message', reply['error'])}")
        return reply["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        if not calls:
            return []
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)]
        replies = sorted(self._post(body), key=lambda r: r["id"])
        for reply in replies:
            if "error" in reply:
                method = calls[reply["id"]][0]
                raise ChainUnavailable(f"{method} failed on {self.url}: {reply['error'].get('message')}")
        return [reply["result"] for reply in replies]

    def _post(self, body: Any) -> Any:
        try:
            return self._session.post(self.url, json=body, timeout=self.timeout).json()
        except (requests.RequestException, ValueError) as exc:
            raise ChainUnavailable(f"anvil at {self.url} did not answer ({exc.__class__.__name__}: {exc})") from exc

    def close(self) -> None:
        self._session.close()


_BEST_BLOCK = re.compile(rb'"best_block_number"\s*:\s*"?(0x[0-9a-fA-F]+|[0-9]+)"?')


def _snapshot_head(state: bytes) -> int:
    """The head block of an anvil state dump (its ``best_block_number``)."""
    match = _BEST_BLOCK.search(state)
    if match is None:
        raise ChainUnavailable("anvil_dumpState returned a state without best_block_number: is this anvil?")
    return int(match.group(1), 0)


def _write_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``path`` so that a crash leaves the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)
    if fsync:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def take_snapshot(url: str, snapshot: Path, journal: Path, *, closed: bool = False) -> int:
    """Write anvil's whole state to ``snapshot`` and start ``journal`` afresh from it.

    Args:
        url: anvil's HTTP endpoint.
        snapshot: The state file (what ``anvil --load-state`` reads).
        journal: The journal that continues the snapshot.
        closed: Mark the journal closed: a clean stop, nothing may follow the snapshot.

    Returns:
        The snapshot's head block.
    """
    rpc = _Rpc(url, timeout=120)
    try:
        return _take_snapshot(rpc, snapshot, journal, closed=closed)[0]
    finally:
        rpc.close()


def _take_snapshot(rpc: _Rpc, snapshot: Path, journal: Path, *, closed: bool) -> tuple[int, str]:
    state = gzip.decompress(bytes.fromhex(rpc.call("anvil_dumpState")[2:]))
    head = _snapshot_head(state)
    block = rpc.call("eth_getBlockByNumber", hex(head), False)
    # The snapshot first: a crash between the two writes leaves a new snapshot and the old
    # journal, whose blocks up to the snapshot's head a restore skips.
    _write_atomically(snapshot, state)
    header = _line({"snapshot": head, "hash": block["hash"]}) + (_line({"closed": True}) if closed else b"")
    _write_atomically(journal, header)
    return head, str(block["hash"])


class ChainJournal:
    """Keeps a running anvil's chain restorable: a snapshot now and then, every block in between.

    Run by ``chainsched devnet journal`` (``Devnet.up`` starts it) beside an anvil started
    with ``load_state``. It takes a snapshot when it starts, then follows anvil's
    ``newHeads`` over WebSocket and appends each block to the journal; every
    ``snapshot_interval`` seconds, or ``snapshot_blocks`` blocks, with new blocks, it takes
    a snapshot again (which empties the journal). A rewound chain (``evm_revert``,
    ``anvil_reset``) gets a snapshot at once. It stops when ``stop`` is set (a last
    snapshot, the journal closed) or when anvil's process is gone (the journal kept for
    :func:`restore_chain`).

    Args:
        url: anvil's HTTP endpoint (its WebSocket is the same port).
        snapshot: The state file anvil loads at start.
        journal: The journal file.
        anvil_pid: anvil's process id: when it is gone, stop without touching the files.
        snapshot_interval: Seconds between snapshots while blocks come.
        snapshot_blocks: Journaled blocks that call for a snapshot sooner (bounds the replay).
        fsync: fsync each journal write (survives a power loss, not only a process crash).

    Example:
        >>> ChainJournal(url=node.url, snapshot=root / "chain.json", journal=root / "chain.journal",
        ...              anvil_pid=node.pid).run(stop)
    """

    def __init__(
        self,
        *,
        url: str,
        snapshot: Path,
        journal: Path,
        anvil_pid: int | None = None,
        snapshot_interval: float = 60.0,
        snapshot_blocks: int = 1000,
        fsync: bool = False,
    ) -> None:
        self.url = url
        self.snapshot_path = snapshot
        self.journal_path = journal
        self.anvil_pid = anvil_pid
        self.snapshot_interval = snapshot_interval
        self.snapshot_blocks = snapshot_blocks
        self.fsync = fsync
        self._rpc: _Rpc | None = None
        self._out: Any = None
        self._last = -1
        self._last_hash = ""
        self._announced = -1
        self._unserved = 0
        self._headers: dict[int, dict[str, Any]] = {}
        self._since_snapshot = 0
        self._snapshot_at = 0.0

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def run(self, stop: threading.Event | None = None) -> None:
        """Snapshot, then journal every block until ``stop`` is set or anvil is gone."""
        stop = stop or threading.Event()
        self._rpc = _Rpc(self.url)
        try:
            self.snapshot()
            while not stop.is_set() and self._anvil_alive():
                try:
                    with self._subscribe() as ws:
                        self._follow(ws, stop)
                except (OSError, ConnectionClosed, InvalidHandshake, ChainUnavailable) as exc:
                    if not self._anvil_alive():
                        break
                    logger.warning("lost anvil at %s (%s): reconnecting", self.url, exc)
                    stop.wait(0.2)
            if not self._anvil_alive():
                logger.info(
                    "anvil (pid %s) is gone; the journal holds the chain up to block %d", self.anvil_pid, self._last
                )
                return
            self._catch_up(int(self._rpc.call("eth_blockNumber"), 16))
            self.snapshot(closed=True)
        finally:
            self._close_journal()
            self._rpc.close()

    def snapshot(self, *, closed: bool = False) -> int:
        """Take a snapshot now (the journal starts afresh). Returns its head block."""
        assert self._rpc is not None, "run() opens the connection"
        self._close_journal()
        started = time.monotonic()
        self._last, self._last_hash = _take_snapshot(self._rpc, self.snapshot_path, self.journal_path, closed=closed)
        self._since_snapshot = 0
        self._snapshot_at = time.monotonic()
        self._headers = {n: h for n, h in self._headers.items() if n > self._last}
        logger.info("snapshot at block %d in %.0f ms", self._last, 1000 * (self._snapshot_at - started))
        if not closed:
            self._out = open(self.journal_path, "ab", buffering=0)  # noqa: SIM115 - open until the next snapshot
        return self._last

    # ---------------------------------------------------------------- internals

    def _anvil_alive(self) -> bool:
        return self.anvil_pid is None or pid_alive(self.anvil_pid)

    @contextlib.contextmanager
    def _subscribe(self) -> Iterator[ClientConnection]:
        ws = connect(self.ws_url, open_timeout=5, proxy=None, max_size=None, compression=None)
        try:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
            reply = json.loads(ws.recv(timeout=10))
            if "error" in reply:
                raise ChainUnavailable(f"eth_subscribe(newHeads) failed on {self.ws_url}: {reply['error']}")
            yield ws
        finally:
            ws.close()

    def _follow(self, ws: ClientConnection, stop: threading.Event) -> None:
        assert self._rpc is not None
        # Blocks mined before the subscription took effect.
        self._announced = max(self._announced, int(self._rpc.call("eth_blockNumber"), 16))
        self._catch_up(self._announced)
        while not stop.is_set():
            behind = self._last < self._announced
            try:
                message = json.loads(ws.recv(timeout=0.01 if behind else 0.5))
            except TimeoutError:
                message = None
            if message is not None and message.get("method") == "eth_subscription":
                header = message["params"]["result"]
                head = int(header["number"], 16)
                if head > self._last:
                    self._write(_line({"head": head}))
                    self._announced = max(self._announced, head)
                    self._headers[head] = header
                elif self._rewound():
                    logger.info("the chain went back to block %d (it was at %d): snapshot", head, self._last)
                    self.snapshot()
                # else: news of a block a catch-up or a snapshot already has
            if self._last < self._announced:
                self._catch_up(self._announced)
            if self._since_snapshot and (
                self._since_snapshot >= self.snapshot_blocks
                or time.monotonic() - self._snapshot_at >= self.snapshot_interval
            ):
                self.snapshot()

    def _rewound(self) -> bool:
        """Whether the last journaled block is no longer the chain's (evm_revert, anvil_reset)."""
        assert self._rpc is not None
        block = self._rpc.call("eth_getBlockByNumber", hex(self._last), False)
        return block is None or block["hash"] != self._last_hash

    def _catch_up(self, target: int) -> None:
        """Journal the blocks after the last one, up to ``target`` (or up to one not served yet)."""
        assert self._rpc is not None
        while self._last < target:
            numbers = range(self._last + 1, min(target, self._last + 32) + 1)
            served = self._headers_of(numbers)
            hashes = [h for header in served for h in header["transactions"]]
            raws = self._rpc.batch([("eth_getRawTransactionByHash", (h,)) for h in hashes])
            raw_of = dict(zip(hashes, raws, strict=True))
            lines: list[bytes] = []
            for header in served:
                n = int(header["number"], 16)
                txs = [raw_of[h] for h in header["transactions"]]
                if None in txs:
                    break
                if header["parentHash"] != self._last_hash:
                    self._write(b"".join(lines))
                    logger.info("block %d does not extend the journaled chain (rewound?): snapshot", n)
                    self.snapshot()
                    return
                lines.append(
                    _line(
                        {
                            "block": n,
                            "hash": header["hash"],
                            "parent": header["parentHash"],
                            "timestamp": int(header["timestamp"], 16),
                            "base_fee": int(header["baseFeePerGas"], 16) if header.get("baseFeePerGas") else None,
                            "txs": txs,
                        }
                    )
                )
                self._last, self._last_hash = n, str(header["hash"])
                self._since_snapshot += 1
            self._write(b"".join(lines))
            if self._last < numbers[-1]:
                # Announced but not served yet: _follow comes back within 10 ms. Announced by a
                # chain since rewound (evm_revert): after a second of that, wait for news instead.
                self._unserved += 1
                if self._unserved >= 100:
                    self._announced = min(self._announced, int(self._rpc.call("eth_blockNumber"), 16))
                return
            self._unserved = 0

    def _headers_of(self, numbers: range) -> list[dict[str, Any]]:
        """The headers (with transaction hashes) of ``numbers``, up to the first one not served yet.

        The newHeads notifications carry them; only blocks mined without one (before the
        subscription, during a reconnection) are fetched.
        """
        assert self._rpc is not None
        headers = {n: self._headers.pop(n) for n in numbers if n in self._headers}
        missing = [n for n in numbers if n not in headers]
        fetched = self._rpc.batch([("eth_getBlockByNumber", (hex(n), False)) for n in missing])
        headers.update((n, block) for n, block in zip(missing, fetched, strict=True) if block is not None)
        served = []
        for n in numbers:
            if n not in headers:
                break
            served.append(headers[n])
        return served

    def _write(self, data: bytes) -> None:
        if not data or self._out is None:
            return
        self._out.write(data)
        if self.fsync:
            os.fsync(self._out.fileno())

    def _close_journal(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def restore_chain(
    *,
    snapshot: Path,
    journal: Path,
    chain_id: int = 31337,
    log_file: Path | None = None,
    timeout: float = 60.0,
) -> ChainRestore:
    """Replay the journal's blocks onto the snapshot, so the snapshot holds the chain as it was.

    Done in a private anvil on a free port, so nothing else can send it a transaction
    meanwhile; each replayed block must get the hash it had, and replay stops at the
    first that does not (it is rolled back). The snapshot is then rewritten, and the
    journal too, to continue it (the old journal is kept as ``<journal>.restored``).

    Args:
        snapshot: The state file.
        journal: The journal that continues it.
        chain_id: The chain's id (the transactions are signed for it).
        log_file: Where the private anvil's output goes.
        timeout: Seconds the private anvil gets to start.

    Returns:
        What was restored. With no snapshot there is nothing to restore (``head`` None).
    """
    at = datetime.now(UTC).isoformat(timespec="seconds")
    kept = Journal.read(journal)
    if not snapshot.exists():
        return ChainRestore(at=at, snapshot_block=None, head=None, replayed=0, reached=kept.reached, lost=None)
    base = kept.snapshot_block
    todo = [b for b in kept.blocks if base is None or b.number > base]
    if not todo:
        head = base if base is not None else _snapshot_head(snapshot.read_bytes())
        lost = None if kept.reached is None else max(0, kept.reached - head)
        return ChainRestore(at=at, snapshot_block=head, head=head, replayed=0, reached=kept.reached, lost=lost)
    # Its clock starts no later than the first block to replay: anvil refuses to mine a
    # block with a timestamp below its clock's, and it would start at the time of day.
    node = Anvil(load_state=snapshot, chain_id=chain_id, log_file=log_file, timestamp=todo[0].timestamp)
    node.start(timeout=timeout)
    rpc = _Rpc(node.url, timeout=120)
    try:
        head = int(rpc.call("eth_blockNumber"), 16)
        parent = rpc.call("eth_getBlockByNumber", hex(head), False)["hash"]
        start, replayed, diverged = head, 0, None
        rpc.call("evm_setAutomine", False)
        for block in todo:
            if block.number <= head:
                continue
            if block.number != head + 1 or block.parent != parent:
                diverged = block.number
                logger.warning(
                    "journal block %d does not extend block %d of the snapshot: replay stops", block.number, head
                )
                break
            if block.base_fee is not None:
                rpc.call("anvil_setNextBlockBaseFeePerGas", hex(block.base_fee))
            for raw in block.txs:
                rpc.call("eth_sendRawTransaction", raw)
            mined = rpc.call("evm_mine_detailed", block.timestamp)
            if len(mined) != 1 or int(mined[0]["number"], 16) != block.number or mined[0]["hash"] != block.hash:
                # Something the journal cannot see changed the state (anvil_setBalance, ...).
                diverged = block.number
                rpc.call("anvil_rollback", 1)
                logger.warning("block %d replayed to another hash: rolled back, replay stops there", block.number)
                break
            head, parent, replayed = block.number, block.hash, replayed + 1
        if replayed:
            state = gzip.decompress(bytes.fromhex(rpc.call("anvil_dumpState")[2:]))
            if _snapshot_head(state) != head:
                raise ChainUnavailable(f"the replayed state ends at {_snapshot_head(state)}, expected block {head}")
            _write_atomically(snapshot, state)
        if journal.exists():
            os.replace(journal, journal.with_name(journal.name + ".restored"))
        # The watermark carries over: a second restore before a new snapshot still knows the loss.
        watermark = _line({"head": kept.reached}) if kept.reached is not None and kept.reached > head else b""
        _write_atomically(journal, _line({"snapshot": head, "hash": parent}) + watermark)
    finally:
        rpc.close()
        node.kill()
    lost = None if kept.reached is None else max(0, kept.reached - head)
    logger.info(
        "chain restored: snapshot at block %d, %d journaled blocks replayed, head %d (had reached %s)",
        start, replayed, head, kept.reached,
    )  # fmt: skip
    return ChainRestore(
        at=at, snapshot_block=start, head=head, replayed=replayed, reached=kept.reached, lost=lost, diverged_at=diverged
    )
