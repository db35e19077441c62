"""The devnet end to end: real anvil, real provider daemons, jobs submitted through the SDK.

- the demo's path (``scripts/demo.py``): five daemons, one cheating at the lowest
  price, a batch of Wasm jobs and a Docker job; the cheat is slashed and every
  paid replica gets exactly its price x units;
- the chain node stopped (SIGTERM) while a job is in flight, then ``up()`` again:
  the job completes and the chain's history is intact;
- the chain node killed (SIGKILL) right after a job finalized, with no snapshot since
  the job was posted, then ``up()`` again: the journal brings the job back, Finalized,
  and the market goes on;
- a daemon SIGKILLed after it took a slot and before it committed: its slot is
  timed out, slashed and reassigned, and the job still succeeds.

A daemon's log is shown when a wait fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console
from web3 import Web3

from chain_scheduler import Client, JobHandle, JobStatus, Limits, MarketEvent, lower_median
from chain_scheduler._anvil import Journal, advance_time, free_port
from chain_scheduler._devnet import Devnet

ROOT = Path(__file__).resolve().parents[2]
PI = ROOT / "examples" / "wasm" / "build" / "pi.wasm"
COLLATERAL = 10**16

pytestmark = pytest.mark.timeout(150)


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chainsched_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chainsched_demo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module", autouse=True)
def examples() -> None:
    """The Wasm examples and the busybox image, built once (no-ops when up to date)."""
    demo.prepare_examples(docker=True)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    # A port of its own (not 8545, which a developer's devnet may want), kept across restarts.
    net = Devnet(root=tmp_path / "devnet", port=free_port(), poll_interval=0.2, state_interval=1, stop_timeout=20)
    try:
        yield net
    finally:
        net.down()


def wait_for(what: str, check: Callable[[], bool], net: Devnet, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    logs = "\n".join(f"---- {name}\n{net.logs(name, lines=40)}" for name in net.log_names())
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


@contextlib.contextmanager
def logs_on_failure(net: Devnet) -> Iterator[None]:
    """Print the devnet's logs (pytest shows them) when the block raises."""
    try:
        yield
    except BaseException:
        for name in net.log_names():
            print(f"---- {name}\n{net.logs(name, lines=40)}")
        raise


def events(client: Client, job: JobHandle, name: str) -> list[MarketEvent]:
    return client.market.events(from_block=job.from_block, names=(name,), job_id=job.job_id)


def submit_pi(client: Client, samples: int, *, k: int, m: int, exec_timeout: int = 120) -> JobHandle:
    """A Wasm job that runs long enough (about 1 s per 60M samples here) to be caught in flight.

    Its time limit, 60 s of fuel at the protocol's reference rate, leaves room for 200M samples
    (about 20G fuel) and fits half the commit window.
    """
    return client.submit(
        module=PI, args=[str(samples)], k=k, m=m, max_price=5, max_units=10**11, collateral=COLLATERAL,
        fill_timeout=60, exec_timeout=exec_timeout, reveal_window=60, challenge_window=0,
        limits=Limits(timeout_s=60),
    )  # fmt: skip


def docker_answers() -> bool:
    status = subprocess.run([sys.executable, str(ROOT / "scripts" / "dockerd.py"), "status"], capture_output=True)
    return status.returncode == 0


# ----------------------------------------------------------------------- tests


def test_the_demo_batch_slashes_the_cheat_and_pays_every_honest_replica_price_times_units(
    tmp_path: Path,
) -> None:
    # Given the demo's market: four honest daemons and a cheat bidding the lowest price, with Docker
    engine_before = docker_answers()
    net, record = demo.start_market(tmp_path / "demo", docker=True)
    try:
        prices: dict[str, int] = {str(Web3.to_checksum_address(p["address"])): p["price"] for p in record["providers"]}
        cheat = str(Web3.to_checksum_address(record["providers"][demo.CHEAT]["address"]))
        assert record["providers"][demo.CHEAT]["behaviour"] == "wrong"
        assert all(p.capabilities == ("wasm", "docker", "verifier") for p in net.status().providers)
        assert record["docker_started"] is not engine_before

        with Client.from_devnet(net.root) as client:
            # When the demo runs the quick batch (two Wasm jobs, one Docker job) as the client
            # (its MapReduce part is the workflow example, run end to end in test_workflow.py)
            console = Console(file=io.StringIO(), width=200)
            with logs_on_failure(net):
                jobs = demo.demo_jobs(quick=True, docker=True)
                outcomes = demo.run(console, net, record, client, jobs, 120, mapreduce=False)
            text = console.file.getvalue()  # type: ignore[attr-defined]

            # Then every job is Finalized with the right output
            assert [o.job.executor for o in outcomes] == ["wasm", "wasm", "docker"]
            assert outcomes[0].line == "5 27 125 total"
            assert outcomes[2].line == "total 5 27 125"
            assert 3.1 < float(outcomes[1].line) < 3.2
            assert text.count(": Finalized") == 3

            cheat_jobs = 0
            for o in outcomes:
                job = o.handle
                assigned = {str(e.args["provider"]): int(e.args["slot"]) for e in events(client, job, "SlotAssigned")}
                displaced = {str(e.args["provider"]) for e in events(client, job, "BidDisplaced")}
                holders = set(assigned) - displaced
                revealed = {str(e.args["provider"]): e.args for e in events(client, job, "ResultRevealed")}
                paid = events(client, job, "ProviderPaid")
                slashed = events(client, job, "SlotSlashed")
                # And the cheat, when it held a slot, revealed another result and lost its collateral
                if cheat in holders:
                    cheat_jobs += 1
                    assert [(e.args["provider"], e.args["amount"]) for e in slashed] == [(cheat, COLLATERAL)]
                    assert revealed[cheat]["resultCid"] != o.receipt.result_cid
                else:  # its bid came after the window closed (a loaded machine)
                    assert not slashed
                assert cheat not in {e.args["provider"] for e in paid}
                # And each agreeing honest replica is paid its own asked price x the agreed units
                assert len(paid) == (2 if cheat in holders else 3)
                usages = sorted(int(revealed[str(e.args["provider"])]["usage"]) for e in paid)
                units = usages[0] if o.job.executor == "wasm" else lower_median(usages)
                if o.job.executor == "wasm":
                    assert usages[0] == usages[1]
                for e in paid:
                    provider = str(e.args["provider"])
                    assert revealed[provider]["resultCid"] == o.receipt.result_cid
                    assert int(e.args["units"]) == units
                    assert int(e.args["amount"]) == prices[provider] * units
                assert {(p.provider, p.price, p.units, p.amount) for p in o.receipt.providers} == {
                    (str(e.args["provider"]), prices[str(e.args["provider"])], units, int(e.args["amount"]))
                    for e in paid
                }
            assert cheat_jobs >= 1, "the cheapest bidder won no slot: the bid window did not work"
            assert client.market.provider(cheat).slashed == cheat_jobs
            assert client.market.provider(cheat).succeeded == 0

            # And the demo's report says so, and the client withdrew its refunds and slash shares
            assert f"the cheat was slashed in {cheat_jobs} of 3 jobs and paid in none" in text
            assert "exactly price x units" in text and "MISMATCH" not in text
            assert client.market.credit_of(client.address) == 0
            withdrawn = client.market.events(names=("Withdrawn",))
            assert [int(e.args["amount"]) for e in withdrawn if e.args["account"] == client.address] == [
                sum(o.receipt.refund + o.client_slash_share for o in outcomes)
            ]
            gas = {g.function: g for g in demo.gas_spent(client.market)}
            assert gas["postJob"].calls == 3 and gas["(deploy)"].calls == 1 and gas["register"].calls == 5
            assert "gas for the jobs themselves" in text and sum(g.gas for g in gas.values()) > 0
    finally:
        stopped = net.down()
    # And down() stopped the Docker engine only if the devnet had started it
    assert ("dockerd" in stopped) is record["docker_started"]
    assert docker_answers() is engine_before


def test_the_chain_node_stopped_mid_job_restarts_with_its_state_and_the_job_completes(devnet: Devnet) -> None:
    # Given a devnet with two honest providers and a job already finalized
    record = devnet.up(providers=2)
    pids = [p["pid"] for p in record["providers"]]
    with Client.from_devnet(devnet.root) as client:
        first = submit_pi(client, 1000, k=1, m=1)
        wait_for("the first job", lambda: first.status().status == JobStatus.FINALIZED, devnet)
        first_paid = [(e.args, e.tx_hash) for e in events(client, first, "ProviderPaid")]
        assert len(first_paid) == 1

        # And a second, longer job that a provider is running
        second = submit_pi(client, 200_000_000, k=1, m=1)
        wait_for("the second job to run", lambda: second.status().status == JobStatus.RUNNING, devnet)
        w3 = client.market.w3
        head = w3.eth.block_number
        head_hash = w3.eth.get_block(head)["hash"]
        client_balance = w3.eth.get_balance(Web3.to_checksum_address(client.address))
        stakes = {a: client.market.provider(a) for a in (p["address"] for p in record["providers"])}

        # When the chain node is stopped gracefully (it writes its state) mid-job, then started again
        anvil_pid = record["anvil_pid"]
        os.kill(anvil_pid, signal.SIGTERM)
        devnet._children[anvil_pid].wait(20)
        time.sleep(1.0)  # the daemons meet a dead node meanwhile
        again = devnet.up(providers=2)

        # Then it is the same chain: same contract, same history, same balances; the daemons kept running
        assert again["anvil_pid"] != anvil_pid
        assert again["rpc_url"] == record["rpc_url"] and again["contract"] == record["contract"]
        assert [p["pid"] for p in again["providers"]] == pids
        assert w3.eth.get_block(head)["hash"] == head_hash
        assert w3.eth.get_balance(Web3.to_checksum_address(client.address)) == client_balance
        assert first.status().status == JobStatus.FINALIZED
        assert [(e.args, e.tx_hash) for e in events(client, first, "ProviderPaid")] == first_paid
        for address, before in stakes.items():
            after = client.market.provider(address)
            assert (after.registered, after.free + after.locked) == (True, before.free + before.locked)

        # And the job in flight completes, paid price x units
        wait_for("the second job to finalize", lambda: second.status().status == JobStatus.FINALIZED, devnet)
        paid = events(client, second, "ProviderPaid")
        assert len(paid) == 1 and int(paid[0].args["amount"]) == 1 * int(paid[0].args["units"])
        assert 3.1 < float((second.fetch(devnet.root / "second") / "stdout").read_text()) < 3.2


def test_a_job_finalized_right_before_the_chain_node_is_killed_is_still_there_after_up(tmp_path: Path) -> None:
    # Given a devnet whose snapshot interval outlasts the test (only the journal can keep what follows)
    net = Devnet(root=tmp_path / "devnet", port=free_port(), poll_interval=0.2, state_interval=3600, stop_timeout=20)
    try:
        record = net.up(providers=1)
        daemon = record["providers"][0]["pid"]
        with Client.from_devnet(net.root) as client, logs_on_failure(net):
            snapshot = Journal.read(net.journal_file).snapshot_block
            # And a job that has just finalized
            job = submit_pi(client, 1000, k=1, m=1)
            wait_for("the job to finalize", lambda: job.status().status == JobStatus.FINALIZED, net)
            w3 = client.market.w3
            head = w3.eth.block_number
            head_hash = w3.eth.get_block(head)["hash"]
            paid = [(e.args, e.tx_hash) for e in events(client, job, "ProviderPaid")]
            assert len(paid) == 1 and snapshot is not None and snapshot < job.from_block
            # (the journal holds a block a few milliseconds after anvil mined it)
            wait_for("the journal", lambda: (Journal.read(net.journal_file).head or 0) >= head, net, timeout=10)

            # When the chain node is killed at once, then the devnet brought up again
            anvil = record["anvil_pid"]
            os.kill(anvil, signal.SIGKILL)
            net._children[anvil].wait(10)
            again = net.up(providers=1)

            # Then the job is still there, Finalized, paid once, in the same blocks
            assert again["anvil_pid"] != anvil and again["contract"] == record["contract"]
            assert job.status().status == JobStatus.FINALIZED
            assert [(e.args, e.tx_hash) for e in events(client, job, "ProviderPaid")] == paid
            assert w3.eth.get_block(head)["hash"] == head_hash
            assert again["restored"]["head"] >= head and again["restored"]["lost"] == 0
            assert again["restored"]["snapshot_block"] == snapshot
            # And the market goes on: the daemon kept running, and a new job finalizes
            assert again["providers"][0]["pid"] == daemon
            after = submit_pi(client, 1000, k=1, m=1)
            wait_for("a job after the restore", lambda: after.status().status == JobStatus.FINALIZED, net)
    finally:
        net.down()


def test_a_provider_killed_before_committing_is_timed_out_and_its_slot_reassigned(devnet: Devnet) -> None:
    # Given three honest providers and a k=2 m=2 job long enough to be caught before the commit
    record = devnet.up(providers=3)
    pid_of = {str(Web3.to_checksum_address(p["address"])): int(p["pid"]) for p in record["providers"]}
    with Client.from_devnet(devnet.root) as client:
        exec_timeout = 120
        job = submit_pi(client, 150_000_000, k=2, m=2, exec_timeout=exec_timeout)

        # When the first provider to hold a slot is SIGKILLed at once (before it can commit)
        wait_for("a slot to be taken", lambda: bool(events(client, job, "SlotAssigned")), devnet)
        first = events(client, job, "SlotAssigned")[0].args
        dead, dead_slot = str(first["provider"]), int(first["slot"])
        os.kill(pid_of[dead], signal.SIGKILL)
        devnet._children[pid_of[dead]].wait(10)
        assert not events(client, job, "ResultCommitted"), "the provider committed before it was killed"

        # And the other slot's provider commits, and the commit deadline passes
        wait_for("the other slot's commit", lambda: bool(events(client, job, "ResultCommitted")), devnet)
        advance_time(client.market.w3, exec_timeout + 1)

        # Then a keeper times the dead slot out: slashed, reopened, and the third provider takes it
        wait_for("the job to finalize", lambda: job.status().status == JobStatus.FINALIZED, devnet, timeout=90)
        slashed = events(client, job, "SlotSlashed")
        assert [(e.args["provider"], e.args["slot"], e.args["amount"], e.args["reopened"]) for e in slashed] == [
            (dead, dead_slot, COLLATERAL, True)
        ]
        holders = [(str(e.args["provider"]), int(e.args["slot"])) for e in events(client, job, "SlotAssigned")]
        taker = next(p for p, s in holders[1:] if s == dead_slot)
        assert taker not in (dead, *(p for p, s in holders if s != dead_slot))

        # And the job still succeeds: the survivor and the newcomer agree and are paid price x units
        paid = {str(e.args["provider"]): e.args for e in events(client, job, "ProviderPaid")}
        assert dead not in paid and taker in paid and len(paid) == 2
        assert all(int(a["amount"]) == 1 * int(a["units"]) for a in paid.values())
        assert client.market.provider(dead).slashed == 1
        assert 3.1 < float((job.fetch(devnet.root / "result") / "stdout").read_text()) < 3.2
