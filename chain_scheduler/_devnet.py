"""A whole local market in one directory: anvil, the contract, N provider daemons.

Everything lives under ``root`` (``.devnet/`` by default)::

    devnet.json        rpc url, chain id, contract, store url, providers (the record)
    chain.json         the chain's snapshot: anvil loads it at start; the journal process writes it
    chain.journal      every block mined since that snapshot (raw transactions, timestamp, hash)
    anvil.pid          pid files of the detached processes
    chain-journal.pid
    node-K.pid
    node-K/            provider K's state directory (state.db, work files)
    store/             the embedded content store (local:...)
    ipfs/              the IPFS node's repository (with ``ipfs=True``)
    dockerd/           pid file and log of a Docker engine the devnet started (``docker=True``)
    logs/anvil.log, logs/chain-journal.log, logs/node-K.log

Provider K (0-based) signs with account K + 2 of the public devnet mnemonic;
accounts 0 and 1 are left to the deployer and to a client. The processes are
detached (their own session), so they outlive the Python process that started
them; ``down()`` stops them. ``up()`` is idempotent: what runs is kept, what
died is restarted, and the contract is deployed only when the chain no longer
has it, so a restart keeps every job and balance.

The chain survives a ``kill -9`` of anvil: beside it runs ``chainsched devnet
journal`` (:class:`~chain_scheduler._anvil.ChainJournal`), which appends every block to
``chain.journal`` a few milliseconds after anvil mines it and takes a whole snapshot
(``chain.json``) every ``state_interval`` seconds or 1,000 blocks. ``up()`` after anvil
died replays the journal onto the snapshot (same blocks, same hashes) before it starts
anvil again, and records the restore in ``devnet.json``: when, the block the restored
chain ends at, and the block the chain had reached, as the journal saw it.
``status()`` reports it until a clean ``down()``. A crash loses at most the block being
journaled at that moment.

Daemons are started as subprocesses (``python -m compute_node.cli``): this
package never imports ``compute_node``.

With ``docker=True`` the daemons also take Docker jobs (``--docker``) and are
registered with the capabilities ``wasm,docker,verifier``. A Docker engine that already
answers is used as it is; otherwise ``scripts/dockerd.py`` starts one with its
pid file under ``dockerd/``, and ``down()`` stops it, and only it.

    DevnetError (chain_scheduler.errors)   a process did not start or stop

Example:
    >>> net = Devnet(root=Path(".devnet"))
    >>> info = net.up(providers=3, bad={2: "lazy"}, prices={2: 1}, docker=True)
    >>> net.status().providers[0].stake_free
    >>> net.down()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from chain_scheduler._anvil import (
    DEVNET_MNEMONIC,
    Anvil,
    ChainRestore,
    Journal,
    find_anvil,
    free_port,
    pid_alive,
    restore_chain,
    take_snapshot,
)
from chain_scheduler._market import Market
from chain_scheduler._model import Capability, capability_names
from chain_scheduler.errors import DevnetError

logger = logging.getLogger(__name__)

#: The provider behaviours ``compute-node run --behaviour`` accepts (mirrors
#: ``compute_node.Behaviour``, which this package may not import; a test pins it).
BEHAVIOURS = ("honest", "lazy", "wrong", "copycat", "silent", "slow")

#: The devnet's chain id (anvil's default).
CHAIN_ID = 31337

#: Provider K signs with devnet account K + FIRST_PROVIDER_ACCOUNT.
FIRST_PROVIDER_ACCOUNT = 2

_PREFERRED_PORT = 8545
_MIN_BALANCE = Web3.to_wei(100, "ether")
_FINAL_PHASES = ("settled", "abandoned")
_SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
#: The process that keeps the chain restorable (``chainsched devnet journal``), by its pid file name.
_JOURNAL = "chain-journal"
#: What identifies each kind of devnet process in its command line.
_MARKERS = {"anvil": "anvil", _JOURNAL: "devnet journal"}
#: What a daemon recorded without a setting ran with (records written before it existed).
_DAEMON_DEFAULTS: dict[str, Any] = {"behaviour": "honest", "price": 1, "capacity": 1, "docker": False}


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider daemon as ``status()`` sees it.

    Attributes:
        index: Provider index K (node-K).
        account_index: Its devnet account index (K + 2).
        address: Its account address.
        behaviour: What it was started with (honest or a cheat).
        price: The price it bids, wei per unit (``compute-node run --price``).
        docker: Whether it takes Docker jobs (``--docker``).
        pid: Process id from its pid file (None: not running).
        alive: Whether that process runs.
        log: Its log file.
        registered: Whether the contract knows it as a provider (None: chain unreachable).
        stake_free, stake_locked: Stake in wei.
        capabilities: Declared capabilities (wasm, docker, gpu).
        succeeded, slashed: Reputation counters kept by the contract.
        jobs_in_flight: Jobs its state.db holds that are not settled or abandoned (None: no state yet).
        jobs_total: Every job its state.db holds.
    """

    index: int
    account_index: int
    address: str
    behaviour: str
    pid: int | None
    alive: bool
    log: str
    price: int = 1
    docker: bool = False
    registered: bool | None = None
    stake_free: int | None = None
    stake_locked: int | None = None
    capabilities: tuple[str, ...] = ()
    succeeded: int | None = None
    slashed: int | None = None
    jobs_in_flight: int | None = None
    jobs_total: int | None = None


@dataclass(frozen=True, slots=True)
class DevnetStatus:
    """The whole devnet as ``status()`` sees it.

    Attributes:
        root: The devnet directory.
        rpc_url: The chain node's endpoint (None: never started).
        reachable: Whether it answers JSON-RPC.
        chain_id, head: Its chain id and latest block number (None when unreachable).
        anvil_pid, anvil_alive: The chain node's process.
        contract: The market contract address (None: not deployed).
        contract_deployed: Whether the chain holds code at that address.
        store_url: The content store the providers use.
        providers: One entry per provider.
        docker: Whether the devnet runs Docker jobs.
        docker_engine: Whether a Docker engine answers (None: not asked, the devnet runs no Docker).
        docker_started: Whether the devnet started that engine (then ``down()`` stops it).
        journal_pid, journal_alive: The process that journals the chain (``chainsched devnet journal``).
        restored: When anvil had died and ``up`` restored the chain from saved state: when,
            from which snapshot, up to which block, and what was lost (None: no restore since
            the last clean ``down``).
    """

    root: str
    rpc_url: str | None
    reachable: bool
    chain_id: int | None
    head: int | None
    anvil_pid: int | None
    anvil_alive: bool
    contract: str | None
    contract_deployed: bool
    store_url: str | None
    providers: tuple[ProviderStatus, ...] = field(default_factory=tuple)
    docker: bool = False
    docker_engine: bool | None = None
    docker_started: bool = False
    journal_pid: int | None = None
    journal_alive: bool = False
    restored: ChainRestore | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``providers`` as a list of dicts)."""
        data = asdict(self)
        data["providers"] = [asdict(p) | {"capabilities": list(p.capabilities)} for p in self.providers]
        return data


class Devnet:
    """A local market (chain node, contract, provider daemons) kept under one directory.

    Args:
        root: The devnet directory (created by ``up``).
        port: Port for anvil; None reuses the recorded one, else 8545 when free, else any
            free port; 0 always picks a free one.
        poll_interval: Seconds between the daemons' chain polls.
        stake: Stake each provider registers with (``compute-node register --stake``).
        price: Wei per unit a provider bids unless ``up(prices=...)`` names it.
        capacity: Jobs a daemon holds at once (``compute-node run --capacity``).
        unbonding_delay: The contract's unbonding delay, seconds (fresh deployments only).
        state_interval: Seconds between whole snapshots of the chain (``chain.json``); every
            block in between is journaled. A snapshot stalls anvil for a time that grows with
            the chain's history; a restore replays the journal (a few ms a block).
        block_time: Seconds per block; None mines a block per transaction.
        python: The interpreter that runs ``compute_node.cli``.
        start_timeout: Seconds a process gets to come up.
        stop_timeout: Seconds a process gets to stop after SIGTERM before it is killed.
    """

    def __init__(
        self,
        *,
        root: Path = Path(".devnet"),
        port: int | None = None,
        poll_interval: float = 0.25,
        stake: str = "1ether",
        price: int = 1,
        capacity: int = 1,
        unbonding_delay: int = 3600,
        state_interval: float = 60,
        block_time: float | None = None,
        python: str = sys.executable,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.poll_interval = poll_interval
        self.stake = stake
        self.price = price
        self.capacity = capacity
        self.unbonding_delay = unbonding_delay
        self.state_interval = state_interval
        self.block_time = block_time
        self.python = python
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        # Children this object spawned, kept so they are reaped (no zombies, no ResourceWarning).
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ paths

    @property
    def record_file(self) -> Path:
        return self.root / "devnet.json"

    @property
    def state_file(self) -> Path:
        return self.root / "chain.json"

    @property
    def journal_file(self) -> Path:
        return self.root / "chain.journal"

    def _pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def record(self) -> dict[str, Any]:
        """The contents of ``devnet.json`` ({} before the first ``up``)."""
        try:
            data: dict[str, Any] = json.loads(self.record_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s (%s)", self.record_file, exc)
            return {}
        return data

    # --------------------------------------------------------------------- up

    def up(
        self,
        providers: int = 2,
        bad: Mapping[int, str] | None = None,
        ipfs: bool = False,
        docker: bool = False,
        prices: Mapping[int, int] | None = None,
    ) -> dict[str, Any]:
        """Start (or complete) the devnet and return its record (what ``devnet.json`` holds).

        A daemon that runs with other settings than asked (behaviour, price,
        capacity, Docker, chain or store) is restarted; one that runs as asked is kept.

        Args:
            providers: How many provider daemons to run.
            bad: Provider index -> behaviour for the ones that cheat; the rest are honest.
            ipfs: Use an IPFS node (``scripts/ipfs_node.py``) instead of the embedded store.
            docker: Also run Docker jobs: use (or start) a Docker engine, run the daemons
                with ``--docker`` and register them with the capabilities wasm, docker and verifier.
            prices: Provider index -> price in wei per unit; the others bid ``self.price``.

        Raises:
            ValueError: a bad index, behaviour or price.
            DevnetError: a process did not come up.
        """
        bad = dict(bad or {})
        prices = dict(prices or {})
        if providers < 0:
            raise ValueError(f"providers must be >= 0, got {providers}")
        for index, behaviour in bad.items():
            if not 0 <= index < providers:
                raise ValueError(f"--bad {index}:{behaviour}: provider index must be in 0..{providers - 1}")
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"--bad {index}:{behaviour}: unknown behaviour; use one of {', '.join(BEHAVIOURS)}")
        for index, price in prices.items():
            if not 0 <= index < providers:
                raise ValueError(f"--price {index}:{price}: provider index must be in 0..{providers - 1}")
            if price < 0:
                raise ValueError(f"--price {index}:{price}: a price is wei per unit, at least 0")
        if self.price < 0 or self.capacity < 1:
            raise ValueError(f"price must be >= 0 and capacity >= 1, got {self.price} and {self.capacity}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        record = self.record()

        docker_started = self._ensure_docker() if docker else self._docker_pid() is not None
        rpc_url, restored = self._ensure_anvil(record)
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        contract, fresh = self._ensure_contract(w3, record.get("contract"))
        store_url = self._ensure_store(ipfs, record)

        if fresh:
            # A new contract: daemons watching the old one, and their state, are obsolete.
            for index in range(self._known_providers(record)):
                self._stop_process(f"node-{index}")
                _remove_tree(self.root / f"node-{index}")
        for index in range(providers, self._known_providers(record)):
            self._stop_process(f"node-{index}")

        accounts = [_devnet_account(index + FIRST_PROVIDER_ACCOUNT) for index in range(providers)]
        funded = self._fund(w3, [address for address, _ in accounts])
        capabilities = Capability.WASM | Capability.VERIFIER | (Capability.DOCKER if docker else Capability(0))
        self._register(w3, rpc_url, contract, range(providers), capabilities)
        # anvil_setBalance is no transaction, so no journal holds it: a new snapshot does.
        journal_pid = self._ensure_journal(rpc_url, restart=funded > 0)

        previous = {int(p["index"]): p for p in record.get("providers", [])}
        entries = []
        started: list[int] = []
        for index in range(providers):
            name = f"node-{index}"
            settings = {
                "behaviour": bad.get(index, "honest"),
                "price": prices.get(index, self.price),
                "capacity": self.capacity,
                "docker": docker,
            }
            pid = self._live_pid(name, "compute_node.cli")
            old = previous.get(index, {})
            was = {key: old.get(key, _DAEMON_DEFAULTS[key]) for key in settings}
            changed = record.get("rpc_url") != rpc_url or old.get("store") != store_url
            if pid is not None and (changed or was != settings):
                logger.info("%s runs with %s; restarting it with %s", name, was, settings)
                self._stop_process(name)
                pid = None
            if pid is None:
                pid = self._start_daemon(index, rpc_url, contract, store_url, settings)
                started.append(index)
            entries.append(
                {
                    "index": index,
                    "account_index": index + FIRST_PROVIDER_ACCOUNT,
                    "address": accounts[index][0],
                    "pid": pid,
                    **settings,
                    "store": store_url,
                    "state": str(self.root / name),
                    "log": str(self._log_file(name)),
                }
            )
        for index in started:
            self._wait_daemon(index)

        record = {
            "rpc_url": rpc_url,
            "chain_id": CHAIN_ID,
            "contract": contract,
            "deployer": w3.eth.accounts[0],
            "store_url": store_url,
            "ipfs": ipfs,
            "docker": docker,
            "docker_started": docker_started,
            "anvil_pid": self._live_pid("anvil", "anvil"),
            "state_file": str(self.state_file),
            "journal_pid": journal_pid,
            "journal_file": str(self.journal_file),
            "restored": restored,
            "providers": entries,
        }
        self._write_record(record)
        logger.info("devnet up: %s, contract %s, %d providers", rpc_url, contract, providers)
        return record

    def _write_record(self, record: Mapping[str, Any]) -> None:
        tmp = self.record_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.record_file)

    # ------------------------------------------------------------------ docker

    @property
    def _dockerd_dir(self) -> Path:
        return (self.root / "dockerd").resolve()

    def _dockerd(self, *args: str) -> subprocess.CompletedProcess[str]:
        script = _SCRIPTS / "dockerd.py"
        if not script.exists():
            raise DevnetError(f"--docker needs {script} (a source checkout), or run the devnet without Docker.")
        return subprocess.run(
            [self.python, str(script), *args, "--state-dir", str(self._dockerd_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=self.start_timeout + 30,
        )

    def _docker_pid(self) -> int | None:
        """The pid of the Docker engine this devnet started, if it still runs."""
        pid_file = self._dockerd_dir / "dockerd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and "dockerd" in _cmdline(pid):
            return pid
        logger.info("removing stale pid file %s (pid %d is not a dockerd)", pid_file, pid)
        pid_file.unlink(missing_ok=True)
        return None

    def _ensure_docker(self) -> bool:
        """Use the Docker engine that answers, or start one. True when this devnet started it."""
        result = self._dockerd("start")
        if result.returncode != 0:
            raise DevnetError(
                f"the Docker engine did not start: {result.stderr.strip() or result.stdout.strip()} "
                f"(see {self._dockerd_dir / 'dockerd.log'}; `apt-get install -y docker.io` provides dockerd)"
            )
        started = result.stdout.startswith("started")
        if started:
            logger.info("Docker engine started (%s), log %s", result.stdout.strip(), self._dockerd_dir / "dockerd.log")
        return started or self._docker_pid() is not None

    def _stop_docker(self) -> bool:
        """Stop the Docker engine this devnet started (none other). True when one was stopped."""
        if self._docker_pid() is None:
            return False
        result = self._dockerd("stop")
        if result.returncode != 0:
            logger.warning("stopping the Docker engine failed: %s", result.stderr.strip())
        return result.returncode == 0

    def _docker_answers(self) -> bool:
        try:
            return self._dockerd("status").returncode == 0
        except DevnetError:
            return False

    def _ensure_anvil(self, record: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """anvil, running: (its url, the restore note to record).

        A running anvil is kept, and so is the note of an earlier restore. One that died
        (its pid file left behind, or a journal no clean stop closed) gets its chain
        restored first: the journal replayed onto the last snapshot.
        """
        died = self._pid_file("anvil").exists()
        pid = self._live_pid("anvil", "anvil")
        recorded = record.get("rpc_url")
        if pid is not None and recorded:
            w3 = Web3(Web3.HTTPProvider(recorded, request_kwargs={"timeout": 5}))
            try:
                w3.eth.block_number  # noqa: B018 - a liveness probe
                return str(recorded), record.get("restored")
            except Exception as exc:  # noqa: BLE001 - any failure to answer
                logger.warning("anvil (pid %d) does not answer on %s (%s): restarting it", pid, recorded, exc)
                self._stop_process("anvil")
        elif pid is not None:
            self._stop_process("anvil")
        # Whatever journals the old chain must stop writing before the restore reads.
        self._stop_process(_JOURNAL)
        port = self._choose_port(recorded)
        find_anvil()  # fail early, with the message that says how to install it
        note: dict[str, Any] | None = None
        if (died and pid is None) or Journal.read(self.journal_file).pending:
            restore = restore_chain(
                snapshot=self.state_file,
                journal=self.journal_file,
                chain_id=CHAIN_ID,
                log_file=self._log_file("anvil"),
                timeout=self.start_timeout,
            )
            note = asdict(restore)
            logger.warning(
                "anvil had stopped without `devnet down`: chain restored to block %s (snapshot %s, %d journaled "
                "blocks replayed); it had reached block %s",
                restore.head, restore.snapshot_block, restore.replayed, restore.reached,
            )  # fmt: skip
        node = Anvil(
            port=port,
            block_time=self.block_time,
            load_state=self.state_file,
            log_file=self._log_file("anvil"),
            chain_id=CHAIN_ID,
        )
        node.start(timeout=self.start_timeout)
        process = node._process
        assert process is not None
        self._children[process.pid] = process
        self._pid_file("anvil").write_text(f"{process.pid}\n")
        return node.url, note

    def _ensure_journal(self, rpc_url: str, *, restart: bool) -> int:
        """The journal process for the running anvil: kept, or (re)started; waits for its first snapshot."""
        pid = self._live_pid(_JOURNAL, _MARKERS[_JOURNAL])
        if pid is not None and not restart:
            return pid
        self._stop_process(_JOURNAL)
        anvil_pid = self._live_pid("anvil", "anvil")
        cmd = [
            self.python,
            "-m",
            "chain_scheduler.cli",
            "devnet",
            "journal",
            "--rpc",
            rpc_url,
            "--snapshot",
            str(self.state_file.resolve()),
            "--journal",
            str(self.journal_file.resolve()),
            "--snapshot-interval",
            str(self.state_interval),
            *(["--anvil-pid", str(anvil_pid)] if anvil_pid is not None else []),
        ]
        log = self._log_file(_JOURNAL)
        with open(log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} devnet: {' '.join(cmd)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._children[process.pid] = process
        self._pid_file(_JOURNAL).write_text(f"{process.pid}\n")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self._alive(process.pid):
                raise DevnetError(f"the chain journal exited at start; its log ends:\n{self.logs(_JOURNAL, lines=20)}")
            text = log.read_bytes().decode(errors="replace")
            if "snapshot at block" in text[text.rfind("--- ") :]:
                logger.info("chain journal started (pid %d), log %s", process.pid, log)
                return process.pid
            time.sleep(0.05)
        raise DevnetError(f"the chain journal took no snapshot within {self.start_timeout:.0f}s; see {log}")

    def _choose_port(self, recorded: str | None) -> int:
        if self.port is not None:
            return self.port or free_port()
        candidates = [int(recorded.rsplit(":", 1)[1])] if recorded else []
        candidates.append(_PREFERRED_PORT)
        for port in candidates:
            if _port_free(port):
                return port
        return free_port()

    def _ensure_contract(self, w3: Web3, recorded: str | None) -> tuple[str, bool]:
        if recorded and w3.eth.get_code(Web3.to_checksum_address(recorded)):
            return Web3.to_checksum_address(recorded), False
        if recorded:
            logger.warning("the chain has no contract at %s (state lost?): deploying a new one", recorded)
        market = Market.deploy(w3=w3, account=w3.eth.accounts[0], unbonding_delay=self.unbonding_delay)
        logger.info("market deployed at %s", market.address)
        return market.address, True

    def _ensure_store(self, ipfs: bool, record: Mapping[str, Any]) -> str:
        if not ipfs:
            return f"local:{(self.root / 'store').resolve()}"
        script = _SCRIPTS / "ipfs_node.py"
        if not script.exists():
            raise DevnetError(f"--ipfs needs {script} (a source checkout); use the embedded store instead.")
        repo = str((self.root / "ipfs").resolve())
        for command in ("status", "start"):
            result = subprocess.run(
                [self.python, str(script), command, "--repo", repo, "--json"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                url: str = json.loads(result.stdout)["store_url"]
                return url
        raise DevnetError(f"the IPFS node did not start: {result.stderr.strip()} (see {repo}/daemon.log)")

    def _known_providers(self, record: Mapping[str, Any]) -> int:
        indexes = [int(p["index"]) + 1 for p in record.get("providers", [])]
        indexes += [int(p.stem.split("-", 1)[1]) + 1 for p in self.root.glob("node-*.pid")]
        return max(indexes, default=0)

    def _fund(self, w3: Web3, addresses: list[str]) -> int:
        """Top up the accounts below the minimum balance; returns how many were."""
        funded = 0
        for address in addresses:
            if w3.eth.get_balance(Web3.to_checksum_address(address)) < _MIN_BALANCE:
                w3.provider.make_request("anvil_setBalance", [address, hex(_MIN_BALANCE)])  # type: ignore[arg-type]
                funded += 1
        return funded

    def _register(self, w3: Web3, rpc_url: str, contract: str, indexes: range, capabilities: Capability) -> None:
        """Register each provider with ``capabilities``; set them on providers registered with others."""
        reader = Market(w3=w3, address=contract, account=w3.eth.accounts[0])
        names = ",".join(capability_names(capabilities))
        pending: dict[int, subprocess.Popen[str]] = {}
        for index in indexes:
            address, _ = _devnet_account(index + FIRST_PROVIDER_ACCOUNT)
            info = reader.provider(address)
            if info.registered and info.capabilities == int(capabilities):
                continue
            # Already registered: no more stake, just the capabilities (`register --add`).
            stake = ["--add", "--stake", "0"] if info.registered else ["--stake", self.stake]
            cmd = [
                *self._node_cli("register"),
                "--contract",
                contract,
                "--rpc",
                rpc_url,
                "--devnet-account",
                str(index + FIRST_PROVIDER_ACCOUNT),
                *stake,
                "-c",
                names,
                "--json",
            ]
            pending[index] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        failures = []
        for index, process in pending.items():
            _, err = process.communicate(timeout=self.start_timeout)
            if process.returncode != 0:
                failures.append(f"node-{index}: {err.strip()}")
        if failures:
            raise DevnetError("registering providers failed: " + "; ".join(failures))

    def _node_cli(self, command: str) -> list[str]:
        return [self.python, "-m", "compute_node.cli", command]

    def _start_daemon(
        self, index: int, rpc_url: str, contract: str, store_url: str, settings: Mapping[str, Any]
    ) -> int:
        name = f"node-{index}"
        behaviour = str(settings["behaviour"])
        cmd = [
            *self._node_cli("run"),
            "--contract",
            contract,
            "--rpc",
            rpc_url,
            "--devnet-account",
            str(index + FIRST_PROVIDER_ACCOUNT),
            "--store",
            store_url,
            "--state",
            str((self.root / name).resolve()),
            "--devnet",
            "--behaviour",
            behaviour,
            "--poll-interval",
            str(self.poll_interval),
            "--price",
            str(settings["price"]),
            "--capacity",
            str(settings["capacity"]),
            *(["--docker"] if settings["docker"] else []),
        ]
        log = self._log_file(name)
        with open(log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} devnet: {' '.join(cmd)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._children[process.pid] = process
        self._pid_file(name).write_text(f"{process.pid}\n")
        logger.info("%s started (pid %d, %s, price %s), log %s", name, process.pid, behaviour, settings["price"], log)
        return process.pid

    def _wait_daemon(self, index: int) -> None:
        """Wait until the daemon logged that it runs, or fail with the tail of its log."""
        name = f"node-{index}"
        log = self._log_file(name)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._live_pid(name, "compute_node.cli") is None:
                raise DevnetError(f"{name} exited at start; its log ends:\n{self.logs(name, lines=20)}")
            text = log.read_bytes().decode(errors="replace")
            last_start = text.rfind("--- ")  # the marker this start wrote
            if "compute_node.cli: provider " in text[last_start:]:
                return
            time.sleep(0.1)
        raise DevnetError(f"{name} did not start within {self.start_timeout:.0f}s; see {log}")

    # ------------------------------------------------------------------- down

    def down(self) -> list[str]:
        """Stop the daemons (gracefully), then the journal and anvil (after a last snapshot), then IPFS and Docker.

        A Docker engine is stopped only when this devnet started it. A clean stop (the
        last snapshot taken) ends the report of an earlier restore.

        Returns:
            The names of the processes that were running and were stopped.
        """
        stopped = []
        nodes = sorted(p.stem for p in self.root.glob("node-*.pid"))
        live = {name: pid for name in nodes if (pid := self._live_pid(name, "compute_node.cli")) is not None}
        for pid in live.values():
            _signal(pid, signal.SIGTERM)
        for name, pid in live.items():
            self._wait_gone(name, pid)
            stopped.append(name)
        for name in nodes:
            self._pid_file(name).unlink(missing_ok=True)
        if self._stop_process(_JOURNAL):  # it takes a last snapshot, and closes the journal
            stopped.append(_JOURNAL)
        saved = self._last_snapshot()
        if self._stop_process("anvil"):
            stopped.append("anvil")
        record = self.record()
        if saved and record.get("restored"):
            self._write_record({**record, "restored": None})
        if (self.root / "ipfs").exists() and (self.root / "ipfs" / "daemon.pid").exists():
            script = _SCRIPTS / "ipfs_node.py"
            if script.exists():
                subprocess.run(
                    [self.python, str(script), "stop", "--repo", str(self.root / "ipfs")],
                    capture_output=True,
                    check=False,
                )
                stopped.append("ipfs")
        if self._stop_docker():
            stopped.append("dockerd")
        logger.info("devnet down: stopped %s", ", ".join(stopped) or "nothing")
        return stopped

    def _last_snapshot(self) -> bool:
        """Before anvil stops: make sure a closed snapshot holds its whole chain. False: anvil is not running."""
        rpc_url = self.record().get("rpc_url")
        if self._live_pid("anvil", "anvil") is None or not rpc_url:
            return False
        try:
            head = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5})).eth.block_number
            journal = Journal.read(self.journal_file)
            if not (journal.closed and journal.snapshot_block == head):
                # The journal process was not running, or blocks came after its last snapshot.
                take_snapshot(rpc_url, self.state_file, self.journal_file, closed=True)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the journal still holds the chain
            logger.warning("the last snapshot before stopping anvil failed (%s): the next `up` restores", exc)
            return False
        return True

    def _stop_process(self, name: str) -> bool:
        marker = _MARKERS.get(name, "compute_node.cli")
        pid = self._live_pid(name, marker)
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            self._wait_gone(name, pid)
        self._pid_file(name).unlink(missing_ok=True)
        return pid is not None

    def _wait_gone(self, name: str, pid: int) -> None:
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return
            time.sleep(0.05)
        logger.warning("%s (pid %d) did not stop within %.0fs: killing it", name, pid, self.stop_timeout)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            _signal(pid, signal.SIGKILL)
        while self._alive(pid):
            time.sleep(0.05)

    # ---------------------------------------------------------------- processes

    def _alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]
            return False
        return pid_alive(pid)

    def _live_pid(self, name: str, marker: str) -> int | None:
        """The pid in ``name``'s pid file if that process runs (and is ours); stale files are removed."""
        path = self._pid_file(name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        # Our own child may not have exec'd yet (its cmdline is still ours): trust the Popen.
        if self._alive(pid) and (pid in self._children or marker in _cmdline(pid)):
            return pid
        logger.info("removing stale pid file %s (pid %d is gone)", path, pid)
        path.unlink(missing_ok=True)
        return None

    # ------------------------------------------------------------------ status

    def status(self) -> DevnetStatus:
        """What runs, what the chain says about each provider, and their jobs in flight."""
        record = self.record()
        rpc_url = record.get("rpc_url")
        contract: str | None = record.get("contract")
        anvil_pid = self._live_pid("anvil", "anvil")
        journal_pid = self._live_pid(_JOURNAL, _MARKERS[_JOURNAL])
        restored = record.get("restored")
        reachable, chain_id, head, deployed = False, None, None, False
        market: Market | None = None
        if rpc_url:
            w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5}))
            try:
                chain_id, head = w3.eth.chain_id, w3.eth.block_number
                reachable = True
                deployed = contract is not None and bool(w3.eth.get_code(Web3.to_checksum_address(contract)))
                if contract is not None and deployed:
                    market = Market(w3=w3, address=contract, account=w3.eth.accounts[0])
            except Exception as exc:  # noqa: BLE001 - any failure to answer means unreachable
                logger.debug("chain at %s unreachable: %s", rpc_url, exc)
        providers = []
        for entry in record.get("providers", []):
            name = f"node-{entry['index']}"
            pid = self._live_pid(name, "compute_node.cli")
            chain: dict[str, Any] = {}
            if market is not None:
                info = market.provider(entry["address"])
                chain = {
                    "registered": info.registered,
                    "stake_free": int(info.free),
                    "stake_locked": int(info.locked),
                    "capabilities": capability_names(info.capabilities),
                    "succeeded": info.succeeded,
                    "slashed": info.slashed,
                }
            in_flight, total = _job_counts(self.root / name / "state.db")
            providers.append(
                ProviderStatus(
                    index=int(entry["index"]),
                    account_index=int(entry["account_index"]),
                    address=entry["address"],
                    behaviour=entry.get("behaviour", "honest"),
                    pid=pid,
                    alive=pid is not None,
                    log=entry.get("log", str(self._log_file(name))),
                    price=int(entry.get("price", _DAEMON_DEFAULTS["price"])),
                    docker=bool(entry.get("docker", False)),
                    jobs_in_flight=in_flight,
                    jobs_total=total,
                    **chain,
                )
            )
        return DevnetStatus(
            root=str(self.root),
            rpc_url=rpc_url,
            reachable=reachable,
            chain_id=chain_id,
            head=head,
            anvil_pid=anvil_pid,
            anvil_alive=anvil_pid is not None,
            contract=contract,
            contract_deployed=deployed,
            store_url=record.get("store_url"),
            providers=tuple(providers),
            docker=bool(record.get("docker", False)),
            docker_engine=self._docker_answers() if record.get("docker") else None,
            docker_started=self._docker_pid() is not None,
            journal_pid=journal_pid,
            journal_alive=journal_pid is not None,
            restored=ChainRestore(**restored) if restored else None,
        )

    # -------------------------------------------------------------------- logs

    def log_names(self) -> list[str]:
        """The names ``logs`` accepts: ``anvil``, ``chain-journal``, ``node-0``, ..."""
        return sorted(p.stem for p in (self.root / "logs").glob("*.log"))

    def logs(self, name: str, lines: int | None = 100) -> str:
        """The last ``lines`` lines of a process's log (all with None).

        Args:
            name: ``anvil``, ``chain-journal``, ``node-K`` or just ``K``.

        Raises:
            DevnetError: no such log.
        """
        if name.isdigit():
            name = f"node-{name}"
        path = self._log_file(name)
        if not path.exists():
            known = ", ".join(self.log_names()) or "none yet: run `chainsched devnet up`"
            raise DevnetError(f"no log named {name!r} in {self.root / 'logs'}; known: {known}")
        text = path.read_text(errors="replace")
        if lines is None:
            return text
        return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""


# ---------------------------------------------------------------------- helpers


def _devnet_account(index: int) -> tuple[str, str]:
    """(address, derivation path) of devnet account ``index``."""
    Account.enable_unaudited_hdwallet_features()
    path = f"m/44'/60'/0'/0/{index}"
    account = Account.from_mnemonic(DEVNET_MNEMONIC, account_path=path)
    return str(account.address), path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _job_counts(db: Path) -> tuple[int | None, int | None]:
    """(in flight, total) jobs in a provider's state.db, opened read-only."""
    if not db.exists():
        return None, None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            placeholders = ",".join("?" * len(_FINAL_PHASES))
            (in_flight,) = conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE phase NOT IN ({placeholders})",
                _FINAL_PHASES,
            ).fetchone()
            (total,) = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        logger.debug("cannot read %s: %s", db, exc)
        return None, None
    return int(in_flight), int(total)
