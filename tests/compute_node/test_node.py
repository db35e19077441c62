"""The provider daemon end to end: a real anvil chain, real ``compute-node run`` processes, real Wasm.

Each test starts its own daemons (separate processes, each with its own devnet
account, state directory and log) against one shared chain and content store,
posts a job as a client, and checks the outcome on chain: who was paid how much,
who was slashed. The daemons' logs are printed when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner
from web3 import Web3

from chain_scheduler import (
    Capability,
    Executor,
    InputRef,
    JobSpec,
    JobStatus,
    JobTerms,
    Market,
    MarketEvent,
    SlotState,
    commitment,
    delivery_key,
    errors,
    public_key_hex,
)
from chain_scheduler._anvil import DEVNET_MNEMONIC, Anvil, advance_time
from compute_node import JobPhase, NodeState
from compute_node.cli import app
from storage import LocalStore

ROOT = Path(__file__).resolve().parents[2]
ETH = 10**18
COLLATERAL = ETH // 100
CHALLENGE_WINDOW = 5
TEXT = "the quick brown fox jumps over the lazy dog\nthe dog sleeps\n" * 20

pytestmark = pytest.mark.timeout(120)

Account.enable_unaudited_hdwallet_features()


def devnet_account(index: int) -> LocalAccount:
    account: LocalAccount = Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 30.0, daemons: Sequence[Daemon] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for d in daemons:
            if d.proc is not None and d.proc.poll() is not None and not d.expect_exit:
                pytest.fail(f"daemon {d.name} exited with {d.proc.returncode} while waiting for {what}:\n{d.log()}")
        time.sleep(0.1)
    logs = "\n".join(f"---- {d.name}\n{d.log()[-6000:]}" for d in daemons)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


@dataclass
class Chain:
    """One anvil node with the market deployed, and a content store every process shares."""

    node: Anvil
    w3: Web3
    market: Market
    work: Path
    store_path: Path

    def events(self, job_id: int, name: str) -> list[MarketEvent]:
        return self.market.events(names=(name,), job_id=job_id)


@dataclass
class Daemon:
    """One ``compute-node run`` process."""

    chain: Chain
    index: int
    name: str
    price: int = 2
    behaviour: str = "honest"
    proc: subprocess.Popen[bytes] | None = None
    expect_exit: bool = False
    store_url: str | None = None  # default: the chain's shared local store
    state_dir: Path = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = self.chain.work / f"node-{self.name}"
        self.log_path = self.chain.work / f"node-{self.name}.log"

    @property
    def address(self) -> str:
        return devnet_account(self.index).address

    def start(self) -> Daemon:
        self.expect_exit = False
        cmd = [
            sys.executable, "-m", "compute_node.cli", "run",
            "--rpc", self.chain.node.url,
            "--contract", self.chain.market.address,
            "--devnet-account", str(self.index),
            "--store", self.store_url or f"local:{self.chain.store_path}",
            "--state", str(self.state_dir),
            "--price", str(self.price),
            "--capacity", "2",
            "--behaviour", self.behaviour,
            "--poll-interval", "0.2",
            "--start-block", "0",
            "--withdraw-threshold", "1",
            "--log-level", "INFO",
            *self.extra_args(),
        ]  # fmt: skip
        if self.behaviour != "honest":
            cmd.append("--devnet")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        return self

    def extra_args(self) -> list[str]:
        """More ``compute-node run`` options (for subclasses)."""
        return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.expect_exit = True
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.expect_exit = True
        self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.expect_exit = True
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def market_on_anvil(work: Path, *, accounts: int = 32) -> Iterator[Chain]:
    """A real anvil node with the market deployed; the store under ``work/store``."""
    with Anvil(accounts=accounts, log_file=work / "anvil.log") as node:
        w3 = node.web3()
        market = Market.deploy(w3=w3, account=w3.eth.accounts[0], unbonding_delay=60)
        yield Chain(node=node, w3=w3, market=market, work=work, store_path=work / "store")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with market_on_anvil(tmp_path_factory.mktemp("node-e2e")) as c:
        yield c


@pytest.fixture
def daemons(chain: Chain) -> Iterator[list[Daemon]]:
    """Daemons a test starts; killed at teardown, their logs shown when the test failed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop_quietly()


def register(chain: Chain, *indexes: int, verifier: bool = False) -> None:
    """Register providers for Wasm; ``verifier`` puts them in the pool audits and verifiers are drawn from."""
    for i in indexes:
        provider = chain.market.with_account(devnet_account(i))
        if not provider.provider(provider.account).registered:
            provider.register(Capability.WASM | (Capability.VERIFIER if verifier else 0), ETH)


def empty_pool(chain: Chain, accounts: int = 32) -> None:
    """Take every devnet account out of the verifier pool: the chain is shared by a module's
    tests, and a draw must not seat a provider whose daemon an earlier test stopped."""
    for i in range(accounts):
        market = chain.market.with_account(devnet_account(i))
        info = market.provider(market.account)
        if info.registered and info.capabilities & Capability.VERIFIER:
            market.set_capabilities(info.capabilities & ~Capability.VERIFIER)


def post_wordcount_job(chain: Chain, wasm_examples: dict[str, Path], **overrides: int) -> tuple[int, JobTerms]:
    """The client's side: module, input and spec to storage, the job to the chain."""
    inputs = chain.work / "inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "text.txt").write_text(TEXT)
    # A job with verifiers has its main results revealed sealed: they reach the client
    # encrypted to the delivery key its spec names (the client SDK adds it the same way).
    key = public_key_hex(delivery_key(devnet_account(1).key)) if overrides.get("verifiers") else None
    with LocalStore(root=chain.store_path) as store:
        module_cid = str(store.put_file(wasm_examples["wordcount"]))
        inputs_cid = str(store.put_directory(inputs))
        spec = JobSpec(
            version=1,
            executor="wasm",
            artifact=module_cid,
            inputs=[InputRef(cid=inputs_cid, path="text")],
            delivery_key=key,
        )
        spec_cid = str(store.put_bytes(spec.to_bytes()))
    client = chain.market.with_account(devnet_account(1))
    fields: dict[str, int] = {
        "k": 3,
        "m": 2,
        "max_price": 5,
        "max_units": 50_000_000,
        "collateral": COLLATERAL,
        "fill_timeout": 60,
        "exec_timeout": 60,
        "reveal_window": 60,
        "challenge_window": CHALLENGE_WINDOW,
    }
    fields.update(overrides)
    terms = JobTerms.create(client=client.account, spec_cid=spec_cid, executor=Executor.WASM, **fields)
    return int(client.post_job(spec_cid, terms)), terms


def expected_total_line() -> str:
    lines = TEXT.count("\n")
    return f"{lines} {len(TEXT.split())} {len(TEXT.encode())} total"


def read_result_file(chain: Chain, result_cid: str, name: str) -> str:
    with LocalStore(root=chain.store_path) as store:
        target = chain.work / f"result-{result_cid[-12:]}"
        if not target.exists():
            store.fetch(result_cid, target)
    return (target / "outputs" / name).read_text()


def finalize_after_challenge_window(chain: Chain, job_id: int, daemons: list[Daemon]) -> None:
    """Wait for success, move the clock past the challenge window, and let the daemons finalize."""
    wait_for(f"job {job_id} to succeed", lambda: chain.market.job(job_id).status == JobStatus.SUCCEEDED,
             timeout=60, daemons=daemons)  # fmt: skip
    advance_time(chain.w3, CHALLENGE_WINDOW + 1)
    wait_for(f"a daemon to finalize job {job_id}", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=30, daemons=daemons)  # fmt: skip


def withdrawn(chain: Chain, address: str) -> int:
    return sum(e.args["amount"] for e in chain.market.events(names=("Withdrawn",)) if e.args["account"] == address)


# --------------------------------------------------------------------- tests


def test_three_honest_daemons_run_a_job_to_finalized_and_are_paid(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given three registered providers, each running its own daemon
    register(chain, 2, 3, 4)
    daemons += [Daemon(chain=chain, index=i, name=f"honest{i}", price=i).start() for i in (2, 3, 4)]

    # When a client posts a k=3 m=2 Wasm job
    job_id, terms = post_wordcount_job(chain, wasm_examples)

    # Then the daemons bid, run, commit and reveal; after the challenge window they finalize
    finalize_after_challenge_window(chain, job_id, daemons)
    revealed = chain.events(job_id, "ResultRevealed")
    assert len(revealed) == 3
    assert len({e.args["resultCid"] for e in revealed}) == 1
    assert len({e.args["usage"] for e in revealed}) == 1
    result_cid = revealed[0].args["resultCid"]
    fuel = revealed[0].args["usage"]
    assert fuel > 0
    assert read_result_file(chain, result_cid, "wc.txt").strip().splitlines()[-1] == expected_total_line()

    # And each is paid its own price × the metered fuel, and withdraws it
    paid = {e.args["provider"]: e for e in chain.events(job_id, "ProviderPaid")}
    assert set(paid) == {d.address for d in daemons}
    for d in daemons:
        assert paid[d.address].args["units"] == fuel
        assert paid[d.address].args["amount"] == d.price * fuel
    assert not chain.events(job_id, "SlotSlashed")
    for d in daemons:
        wait_for(f"{d.name} to withdraw", lambda d=d: withdrawn(chain, d.address) == d.price * fuel, daemons=daemons)
        assert chain.market.provider(d.address).locked == 0
    finalized = chain.events(job_id, "JobFinalized")[0].args
    assert finalized["paid"] == sum(d.price for d in daemons) * fuel
    assert finalized["refund"] == terms.escrow - finalized["paid"]

    # And SIGTERM stops each daemon cleanly, its jobs settled in its state file
    for d in daemons:
        assert d.terminate() == 0, d.log()
        assert "node stopped" in d.log()
        with NodeState(d.state_dir / "state.db") as state:
            record = state.get(job_id)
            assert record is not None and record.phase == JobPhase.SETTLED
            assert state.pending() == []


def test_a_wrong_daemon_is_outvoted_and_slashed(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given two honest daemons and one that alters a byte of its output
    register(chain, 5, 6, 7)
    daemons += [
        Daemon(chain=chain, index=5, name="honest5").start(),
        Daemon(chain=chain, index=6, name="honest6").start(),
        Daemon(chain=chain, index=7, name="wrong7", behaviour="wrong").start(),
    ]
    honest, cheat = daemons[:2], daemons[2]
    client_credit = chain.market.credit_of(devnet_account(1).address)

    # When a k=3 m=2 job runs
    job_id, _terms = post_wordcount_job(chain, wasm_examples)
    finalize_after_challenge_window(chain, job_id, daemons)

    # Then the job succeeds with the honest result, the cheat is slashed, the honest paid
    slashed = chain.events(job_id, "SlotSlashed")
    assert [e.args["provider"] for e in slashed] == [cheat.address]
    assert slashed[0].args["amount"] == COLLATERAL
    paid = {e.args["provider"]: e.args for e in chain.events(job_id, "ProviderPaid")}
    assert set(paid) == {d.address for d in honest}
    revealed = {e.args["provider"]: e.args["resultCid"] for e in chain.events(job_id, "ResultRevealed")}
    assert revealed[honest[0].address] == revealed[honest[1].address] != revealed[cheat.address]
    winner = revealed[honest[0].address]
    assert read_result_file(chain, winner, "wc.txt").strip().splitlines()[-1] == expected_total_line()
    # The slashed collateral is shared by the client and the two honest providers.
    share = COLLATERAL // 3
    for d in honest:
        wait_for(f"{d.name} to withdraw", lambda d=d: withdrawn(chain, d.address) == paid[d.address]["amount"] + share,
                 daemons=daemons)  # fmt: skip
    assert chain.market.provider(cheat.address).slashed == 1
    assert chain.market.provider(cheat.address).free == ETH - COLLATERAL
    refund = chain.events(job_id, "JobFinalized")[0].args["refund"]
    assert chain.market.credit_of(devnet_account(1).address) - client_credit == refund + COLLATERAL - 2 * share
    assert "behaviour=wrong" in cheat.log()


def test_a_daemon_killed_between_commit_and_reveal_reveals_after_restart_and_is_paid(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given two daemons and a third slot held by a provider the test drives by hand,
    # so the reveal phase cannot start until the test commits
    register(chain, 8, 9, 10)
    victim = Daemon(chain=chain, index=8, name="victim8").start()
    other = Daemon(chain=chain, index=9, name="other9").start()
    daemons += [victim, other]
    manual = chain.market.with_account(devnet_account(10))
    job_id, terms = post_wordcount_job(chain, wasm_examples)
    wait_for("both daemons to take a slot", lambda: chain.market.job(job_id).filled == 2, daemons=daemons)
    manual.bid(job_id, 3, terms)
    manual_slot = next(s.index for s in chain.market.slots(job_id, terms) if s.provider == manual.account)

    # When the victim has committed, it is killed (SIGKILL) before anything is revealed
    def slot_of(d: Daemon) -> int:
        return next(s.index for s in chain.market.slots(job_id, terms) if s.provider == d.address)

    wait_for(
        "both daemons to commit",
        lambda: all(chain.market.slot(job_id, slot_of(d)).state == SlotState.COMMITTED for d in (victim, other)),
        daemons=daemons,
    )
    victim.kill()
    assert chain.market.job(job_id).status == JobStatus.RUNNING
    # The manual provider commits a different result, which closes the commits.
    salt = b"\x07" * 32
    manual.commit(job_id, manual_slot, commitment(job_id, manual.account, "bafy-not-the-result", 1, salt), terms)
    assert chain.market.job(job_id).status == JobStatus.REVEALING
    wait_for("the other daemon to reveal", lambda: len(chain.events(job_id, "ResultRevealed")) == 1, daemons=daemons)

    # Then the restarted victim reveals from its state file, in time
    victim.start()

    def victim_revealed() -> bool:
        return any(e.args["provider"] == victim.address for e in chain.events(job_id, "ResultRevealed"))

    wait_for("the restarted victim to reveal", victim_revealed, daemons=daemons)
    manual.reveal(job_id, manual_slot, "bafy-not-the-result", 1, salt, terms)

    # And the job succeeds and the victim is paid like the other
    finalize_after_challenge_window(chain, job_id, daemons)
    paid = {e.args["provider"]: e.args for e in chain.events(job_id, "ProviderPaid")}
    assert set(paid) == {victim.address, other.address}
    assert paid[victim.address]["amount"] == victim.price * paid[victim.address]["units"]
    assert [e.args["provider"] for e in chain.events(job_id, "SlotSlashed")] == [manual.account]
    assert chain.market.provider(victim.address).slashed == 0
    assert "resuming 1 job(s) in flight" in victim.log()


def test_copycat_and_lazy_daemons_are_slashed_while_the_honest_quorum_wins(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given three honest daemons, a lazy one (makes up a result) and a copycat (commits
    # another provider's commitment hash, read from its transaction)
    register(chain, 11, 12, 13, 14, 15)
    honest = [Daemon(chain=chain, index=i, name=f"honest{i}").start() for i in (11, 12, 13)]
    lazy = Daemon(chain=chain, index=14, name="lazy14", behaviour="lazy").start()
    copycat = Daemon(chain=chain, index=15, name="copycat15", behaviour="copycat").start()
    daemons += [*honest, lazy, copycat]

    # When a k=5 m=3 job runs: everyone commits, all but the copycat reveal
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=5, m=3)
    wait_for("four reveals", lambda: len(chain.events(job_id, "ResultRevealed")) == 4, timeout=60, daemons=daemons)
    wait_for("the copycat's reveal to be refused", lambda: "does not open" in copycat.log(), daemons=daemons)
    commits = {e.args["provider"]: e for e in chain.events(job_id, "ResultCommitted")}
    assert len(commits) == 5
    copied = chain.w3.eth.get_transaction(commits[copycat.address].tx_hash)["input"]
    originals = [chain.w3.eth.get_transaction(commits[d.address].tx_hash)["input"] for d in (*honest, lazy)]
    _, copied_args = chain.market.contract.decode_function_input(copied)
    assert copied_args["commitment"] in [chain.market.contract.decode_function_input(o)[1]["commitment"]
                                         for o in originals]  # fmt: skip

    # Then after the reveal deadline a keeper times the copycat out, the honest result wins,
    # and at finalization the lazy result is slashed too
    advance_time(chain.w3, terms.reveal_window + 1)
    finalize_after_challenge_window(chain, job_id, daemons)
    slashed = {e.args["provider"] for e in chain.events(job_id, "SlotSlashed")}
    assert slashed == {lazy.address, copycat.address}
    paid = {e.args["provider"] for e in chain.events(job_id, "ProviderPaid")}
    assert paid == {d.address for d in honest}
    winner = next(e.args["resultCid"] for e in chain.events(job_id, "ResultRevealed")
                  if e.args["provider"] == honest[0].address)  # fmt: skip
    assert read_result_file(chain, winner, "wc.txt").strip().splitlines()[-1] == expected_total_line()
    assert "behaviour=lazy" in lazy.log()


def test_slow_and_silent_daemons_are_slashed_and_a_fresh_provider_takes_the_slow_slot(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given an honest daemon, a silent one (commits, never reveals), a slow one (misses
    # the commit deadline), and later a standby honest daemon
    register(chain, 16, 17, 18, 19)
    honest = Daemon(chain=chain, index=16, name="honest16").start()
    silent = Daemon(chain=chain, index=17, name="silent17", behaviour="silent").start()
    slow = Daemon(chain=chain, index=18, name="slow18", behaviour="slow").start()
    daemons += [honest, silent, slow]
    job_id, terms = post_wordcount_job(chain, wasm_examples)
    wait_for("two commits", lambda: chain.market.job(job_id).committed == 2, timeout=60, daemons=daemons)
    wait_for("the slow daemon to hold its commit", lambda: "slow: holding the commit" in slow.log(), daemons=daemons)
    standby = Daemon(chain=chain, index=19, name="standby19").start()
    daemons.append(standby)

    # When the commit deadline passes, a keeper slashes the slow slot and reopens it
    advance_time(chain.w3, terms.exec_timeout + 1)

    def standby_assigned() -> bool:
        return any(e.args["provider"] == standby.address for e in chain.events(job_id, "SlotAssigned"))

    wait_for("the slow slot to be reassigned", standby_assigned, daemons=daemons)
    slow_slash = chain.events(job_id, "SlotSlashed")
    assert [(e.args["provider"], e.args["reopened"]) for e in slow_slash] == [(slow.address, True)]

    # Then the standby runs it; the honest pair reveal, the silent one does not
    wait_for("two reveals", lambda: len(chain.events(job_id, "ResultRevealed")) == 2, timeout=60, daemons=daemons)
    assert {e.args["provider"] for e in chain.events(job_id, "ResultRevealed")} == {honest.address, standby.address}
    # (the silent daemon notices the reveal phase on its own next tick, maybe after the others revealed)
    wait_for("the silent daemon to skip its reveal", lambda: "silent: never revealing" in silent.log(), daemons=daemons)
    advance_time(chain.w3, terms.reveal_window + 1)
    finalize_after_challenge_window(chain, job_id, daemons)
    slashed = [e.args["provider"] for e in chain.events(job_id, "SlotSlashed")]
    assert slashed == [slow.address, silent.address]
    assert {e.args["provider"] for e in chain.events(job_id, "ProviderPaid")} == {honest.address, standby.address}


def test_a_daemon_displaced_by_a_cheaper_bid_takes_the_slot_when_it_reopens(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a k=1 job with a bid window, held by an honest daemon asking 3 wei/unit
    register(chain, 30, 31)
    honest = Daemon(chain=chain, index=30, name="displaced30", price=3).start()
    daemons.append(honest)
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, bid_window=40)

    def holder() -> str | None:
        assigned = chain.events(job_id, "SlotAssigned")
        return str(assigned[-1].args["provider"]) if assigned else None

    wait_for("the honest daemon to take the slot", lambda: holder() == honest.address, daemons=daemons)

    # When a slow daemon asking 1 wei/unit displaces it, then misses its commit deadline
    slow = Daemon(chain=chain, index=31, name="slowcheap31", price=1, behaviour="slow").start()
    daemons.append(slow)
    wait_for("the cheaper bid to displace it", lambda: holder() == slow.address, daemons=daemons)
    advance_time(chain.w3, terms.bid_window)  # the window closes: the cheapest bid keeps the slot
    wait_for("the slow daemon to hold its commit", lambda: "slow: holding the commit" in slow.log(), daemons=daemons)
    wait_for("the displacement to be noticed", lambda: "lost slot 0 to a cheaper bid" in honest.log(), daemons=daemons)
    advance_time(chain.w3, terms.exec_timeout + 1)
    with contextlib.suppress(errors.JobStateError):  # a daemon's keeper may be first
        chain.market.timeout(job_id, terms)

    # Then the slot reopens, the displaced daemon (which never ran the job) takes it, and is paid
    wait_for("the reopened slot to go back to it", lambda: holder() == honest.address, daemons=daemons)
    advance_time(chain.w3, terms.bid_window)  # the reopened round's bid window
    finalize_after_challenge_window(chain, job_id, daemons)
    assert [e.args["provider"] for e in chain.events(job_id, "SlotSlashed")] == [slow.address]
    assert [e.args["provider"] for e in chain.events(job_id, "ProviderPaid")] == [honest.address]


def test_a_second_sigterm_stops_at_once_while_the_first_waits_for_the_running_job(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a daemon running a long job (about 25 s of Monte Carlo)
    register(chain, 20)
    node = Daemon(chain=chain, index=20, name="sigterm20").start()
    daemons.append(node)
    with LocalStore(root=chain.store_path) as store:
        module = str(store.put_file(wasm_examples["pi"]))
        spec_cid = str(store.put_bytes(JobSpec(version=1, executor="wasm", artifact=module,
                                                args=["2000000000"]).to_bytes()))  # fmt: skip
    client = chain.market.with_account(devnet_account(1))
    terms = JobTerms.create(client=client.account, spec_cid=spec_cid, max_price=2, max_units=10**12,
                            collateral=COLLATERAL, exec_timeout=300)  # fmt: skip
    job_id = client.post_job(spec_cid, terms)
    wait_for("the job to run", lambda: f"job_id={job_id} running" in node.log(), daemons=daemons)

    # When the first SIGTERM arrives, the daemon stops bidding but waits for the job
    assert node.proc is not None
    node.expect_exit = True
    node.proc.send_signal(signal.SIGTERM)
    wait_for("the graceful stop to begin", lambda: "stopping gracefully" in node.log(), daemons=daemons)
    time.sleep(0.5)
    assert node.proc.poll() is None, node.log()

    # Then a second SIGTERM stops it at once, and the job waits in the state file for a restart
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(5) == 130
    assert "stopping at once" in node.log()
    with NodeState(node.state_dir / "state.db") as state:
        record = state.get(job_id)
        assert record is not None and record.phase == JobPhase.RUNNING and record.result_cid is None


def test_a_dead_rpc_node_is_retried_with_backoff_and_the_daemon_carries_on(
    tmp_path: Path, wasm_examples: dict[str, Path]
) -> None:
    # Given a daemon on a chain whose node persists its state across restarts
    state_file = tmp_path / "chain.json"
    first = Anvil(accounts=30, state_file=state_file, log_file=tmp_path / "anvil.log")
    first.start()
    node: Daemon | None = None
    second: Anvil | None = None
    try:
        w3 = first.web3()
        market = Market.deploy(w3=w3, account=w3.eth.accounts[0], unbonding_delay=60)
        chain = Chain(node=first, w3=w3, market=market, work=tmp_path, store_path=tmp_path / "store")
        register(chain, 21)
        node = Daemon(chain=chain, index=21, name="outage21").start()
        wait_for("the daemon to connect", lambda: "ready on chain" in node.log(), daemons=[node])

        # When the RPC node goes away, the daemon says so once and keeps retrying
        first.stop()
        wait_for("the outage to be noticed", lambda: "unavailable" in node.log(), daemons=[node])
        time.sleep(1.5)
        assert node.proc is not None and node.proc.poll() is None
        assert node.log().count("WARNING compute_node._node: RPC node") == 1

        # Then when it is back, the daemon carries on and runs the next job
        second = Anvil(port=first.port, accounts=30, state_file=state_file, log_file=tmp_path / "anvil.log")
        second.start()
        chain.node, chain.w3 = second, second.web3()
        chain.market = Market(w3=chain.w3, address=market.address, account=w3.eth.accounts[0])
        wait_for("the daemon to notice the node is back", lambda: "RPC node back" in node.log(),
                 timeout=40, daemons=[node])  # fmt: skip
        job_id, _terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, challenge_window=0)
        wait_for("the job to be finalized", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
                 daemons=[node])  # fmt: skip
        assert [e.args["provider"] for e in chain.events(job_id, "ProviderPaid")] == [node.address]
    finally:
        if node is not None:
            node.stop_quietly()
        first.stop()
        if second is not None:
            second.stop()


def test_a_fourth_daemon_takes_the_audit_slot_and_confirms_the_result(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given four daemons in the verifier pool and a k=3 job that is always audited
    empty_pool(chain)
    register(chain, 22, 23, 24, 25, verifier=True)
    daemons += [Daemon(chain=chain, index=i, name=f"audit{i}").start() for i in (22, 23, 24, 25)]

    # When it runs: three daemons take the main slots; after their commits a keeper draws the
    # audit decision from a later block, and with it the auditor from the pool
    job_id, terms = post_wordcount_job(chain, wasm_examples, audit_bps=10_000, verifiers=1)
    finalize_after_challenge_window(chain, job_id, daemons)

    # Then the fourth daemon (the only pool member not in the job) was drawn for the audit
    # slot (index k), agreed, and everyone was paid
    assert [e.args["round"] for e in chain.events(job_id, "RoundOpened")] == [1]  # Round.AUDIT
    # The last main commit armed the decision; the auditor's seat re-arms when the draw lands
    # in a later pool epoch (twice at most) before it is drawn
    pending = chain.events(job_id, "DrawPending")
    main_commits = [e for e in chain.events(job_id, "ResultCommitted") if e.args["slot"] < terms.k]
    assert pending[0].block_number == main_commits[-1].block_number
    assert [e.args["round"] for e in pending] == [1] * len(pending) and len(pending) <= 3
    slots = chain.market.slots(job_id, terms)
    main = {s.provider for s in slots[: terms.k]}
    auditor = slots[terms.k].provider
    assert len(main) == 3 and auditor not in main
    assert auditor in {d.address for d in daemons}
    (drawn,) = [d for d in daemons if d.address == auditor]
    assert "drawn from the verifier pool: audit seat" in drawn.log()
    assert any("keeper: draw" in d.log() for d in daemons)
    assert {e.args["provider"] for e in chain.events(job_id, "ProviderPaid")} == main | {auditor}
    assert not chain.events(job_id, "SlotSlashed")
    for provider in main:
        assert chain.market.provider(provider).audited == 1


def test_a_job_the_node_cannot_run_is_declined_before_bidding_and_the_node_carries_on(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given one honest daemon
    register(chain, 29)
    daemons.append(Daemon(chain=chain, index=29, name="picky", price=2).start())
    client = chain.market.with_account(devnet_account(1))

    # When a client posts a job whose spec names a module that is in no store the node can read
    with LocalStore(root=chain.work / "client-only-store") as elsewhere:
        ghost = str(elsewhere.put_bytes(b"\0asm\1\0\0\0 only on the client's laptop"))
    with LocalStore(root=chain.store_path) as store:
        spec_cid = str(store.put_bytes(JobSpec(version=1, executor="wasm", artifact=ghost).to_bytes()))
    bad_terms = JobTerms.create(
        client=client.account, spec_cid=spec_cid, executor=Executor.WASM, max_price=5,
        max_units=50_000_000, collateral=COLLATERAL, challenge_window=CHALLENGE_WINDOW,
    )  # fmt: skip
    bad_job = int(client.post_job(spec_cid, bad_terms))
    # and then a good one
    good_job, _ = post_wordcount_job(chain, wasm_examples, k=1, m=1)

    # Then the node runs the good job to the end and never bids on the bad one (no slot to be slashed for)
    finalize_after_challenge_window(chain, good_job, daemons)
    assert not chain.events(bad_job, "SlotAssigned")
    assert chain.market.job(bad_job).status == JobStatus.OPEN
    assert f"job_id={bad_job} declined: the artifact {ghost} is not in the content store" in daemons[0].log()
    assert chain.market.provider(daemons[0].address).slashed == 0


def test_register_command_stakes_and_declares_capabilities_without_printing_the_key(
    chain: Chain, tmp_path: Path
) -> None:
    account = devnet_account(26)
    key_file = tmp_path / "provider.key"
    key_file.write_text(account.key.hex())
    base = ["register", "--rpc", chain.node.url, "--contract", chain.market.address, "--key-file", str(key_file)]
    cli = CliRunner()

    result = cli.invoke(app, [*base, "--stake", "0.5ether", "-c", "wasm,gpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["provider"] == account.address
    assert data["stake_free"] == ETH // 2
    assert data["capabilities"] == ["wasm", "gpu"]
    on_chain = chain.market.provider(account.address)
    assert on_chain.registered and on_chain.capabilities == int(Capability.WASM | Capability.GPU)
    assert on_chain.pool_weight == 0  # not a verifier unless asked (the default asks)

    again = cli.invoke(app, [*base, "--stake", "1000"])
    assert again.exit_code == 4
    assert "already a provider" in again.output and "--add" in again.output
    added = cli.invoke(app, [*base, "--stake", "1000", "--add", "-c", "wasm"])
    assert added.exit_code == 0, added.output
    assert chain.market.provider(account.address).free == ETH // 2 + 1000
    assert chain.market.provider(account.address).capabilities == int(Capability.WASM)
    default = cli.invoke(app, [*base, "--stake", "1", "--add"])
    assert default.exit_code == 0, default.output
    info = chain.market.provider(account.address)
    assert info.capabilities == int(Capability.WASM | Capability.VERIFIER)
    assert info.pool_weight == info.free + info.locked > 0
    chain.market.with_account(account).set_capabilities(int(Capability.WASM))  # out of later tests' draws
    for output in (result.output, again.output, added.output):
        assert account.key.hex().removeprefix("0x") not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--behaviour", "wrong"], "needs --devnet"),
        (["--key-env", "NO_SUCH_VARIABLE_HERE"], "NO_SUCH_VARIABLE_HERE is not set"),
        (["--key-file", "/dev/null", "--key-env", "X"], "exactly one of"),
    ],
)
def test_run_refuses_bad_settings_before_touching_anything(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    secret = devnet_account(27).key.hex()
    monkeypatch.setenv("PROVIDER_KEY", secret)
    if "--key-env" not in args and "--key-file" not in args:
        args = [*args, "--key-env", "PROVIDER_KEY"]
    state = tmp_path / "state"
    base = ["run", "--rpc", chain.node.url, "--contract", chain.market.address, "--state", str(state)]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert secret.removeprefix("0x") not in result.output
    assert not state.exists()
