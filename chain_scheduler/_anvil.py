"""A real local chain node: anvil, started and stopped as a child process.

anvil comes from the pinned npm package ``@foundry-rs/anvil-linux-amd64``. With
``state_file`` set it loads the chain at start and writes it back on a graceful
stop and every ``state_interval`` seconds, so a crash loses at most that interval.

Example:
    >>> with Anvil(state_file=Path(".devnet/chain.json")) as node:
    ...     w3 = node.web3()
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from web3 import Web3

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


class Anvil:
    """An anvil node on 127.0.0.1.

    Args:
        port: Port to listen on (0 picks a free one).
        accounts: Funded accounts to create.
        balance: Ether per account.
        block_time: Seconds per block; None mines a block per transaction (automine).
        state_file: Load the chain from here and save it back (None: ephemeral).
        state_interval: Seconds between state dumps while running.
        log_file: Where anvil's output goes (None: discarded).
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
        log_file: Path | None = None,
        chain_id: int = 31337,
    ) -> None:
        self.port = port
        self.accounts = accounts
        self.balance = balance
        self.block_time = block_time
        self.state_file = state_file
        self.state_interval = state_interval
        self.log_file = log_file
        self.chain_id = chain_id
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_file), "--state-interval", str(self.state_interval)]
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
        """Stop gracefully (SIGTERM: anvil writes its state), then kill if it hangs."""
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
