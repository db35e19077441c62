"""The market never stalls on one party: capacity, unfillable jobs, keepers, one daemon per state.

Real anvil, real ``compute-node run`` processes, real Wasm. The chain is this
module's own, so the number of registered providers is known (the daemons
decline a k>1 job that fewer registered providers than k could ever fill).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_node import (
    ROOT,
    Chain,
    Daemon,
    market_on_anvil,
    post_wordcount_job,
    register,
    wait_for,
)

from chain_scheduler import FailReason, JobStatus
from compute_node import NodeState
from compute_node._state import WatchKind

pytestmark = pytest.mark.timeout(120)


@dataclass
class Tuned(Daemon):
    """A daemon with its capacity and fill wait set by the test."""

    capacity: int = 1
    pending_bids: int = 4
    fill_wait: float = 60.0

    def extra_args(self) -> list[str]:
        return ["--capacity", str(self.capacity), "--pending-bids", str(self.pending_bids),
                "--fill-wait", str(self.fill_wait)]  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with market_on_anvil(tmp_path_factory.mktemp("liveness")) as c:
        register(c, 2, 3, 4)  # three providers; each test runs some of them
        yield c


@pytest.fixture
def daemons(chain: Chain) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop_quietly()


def status(chain: Chain, job_id: int) -> JobStatus:
    return chain.market.job(job_id).status


def test_bids_on_unfilled_rounds_do_not_block_other_work_and_are_left_after_the_fill_wait(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given two daemons of capacity 1 that leave an unfilled round after 3 s, and a third
    # registered provider that is not running
    daemons += [Tuned(chain=chain, index=i, name=f"cap{i}", fill_wait=3.0).start() for i in (2, 3)]

    # When a k=3 job (which needs the absent provider) and then two k=1 jobs are posted
    stuck, _ = post_wordcount_job(chain, wasm_examples, k=3, m=2, fill_timeout=300)
    wait_for("both daemons to bid on the k=3 job", lambda: chain.market.job(stuck).filled == 2, daemons=daemons)
    quick = [post_wordcount_job(chain, wasm_examples, k=1, m=1, challenge_window=0)[0] for _ in range(2)]

    # Then the k=1 jobs run at once: a held slot of a round that has not filled is not an execution
    wait_for("the k=1 jobs to finalize", lambda: all(status(chain, j) == JobStatus.FINALIZED for j in quick),
             timeout=30, daemons=daemons)  # fmt: skip
    # And after the fill wait both leave the k=3 round: their collateral is free again
    wait_for("both daemons to leave the k=3 round", lambda: chain.market.job(stuck).filled == 0, daemons=daemons)
    assert {e.args["provider"] for e in chain.events(stuck, "BidWithdrawn")} == {d.address for d in daemons}
    for d in daemons:
        assert chain.market.provider(d.address).locked == 0

    # When the third provider's daemon comes and bids, the two join again and the job runs
    daemons.append(Tuned(chain=chain, index=4, name="late4", fill_wait=3.0).start())
    wait_for("the k=3 job to succeed once its third provider came",
             lambda: status(chain, stuck) in (JobStatus.SUCCEEDED, JobStatus.FINALIZED), timeout=60,
             daemons=daemons)  # fmt: skip
    assert not chain.events(stuck, "SlotSlashed")


def test_a_job_more_providers_than_registered_is_never_bid_and_a_keeper_times_it_out(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given the three registered providers' daemons
    daemons += [Tuned(chain=chain, index=i, name=f"k4-{i}", capacity=2).start() for i in (2, 3, 4)]

    # When a k=4 job is posted (it can never fill) and its fill timeout passes
    job_id, terms = post_wordcount_job(chain, wasm_examples, k=4, m=3, fill_timeout=6)

    # Then nobody locked collateral for it, and a daemon (not in the job) fails it for a full refund
    wait_for("a keeper to time the unfillable job out", lambda: status(chain, job_id) == JobStatus.FAILED,
             timeout=30, daemons=daemons)  # fmt: skip
    assert chain.events(job_id, "SlotAssigned") == []
    failed = chain.events(job_id, "JobFailed")[0].args
    assert (failed["reason"], failed["refund"]) == (FailReason.NOT_FILLED, terms.escrow)
    assert any("declined: k=4 but only 3 registered provider(s)" in d.log() for d in daemons)


def test_a_second_daemon_on_the_same_state_directory_is_refused(chain: Chain, daemons: list[Daemon]) -> None:
    # Given a running daemon
    first = Tuned(chain=chain, index=2, name="owner2").start()
    daemons.append(first)
    wait_for("the daemon to be ready", lambda: "ready on chain" in first.log(), daemons=daemons)

    # When a second one is started on its state directory
    second = subprocess.run(
        [sys.executable, "-m", "compute_node.cli", "run", "--rpc", chain.node.url, "--contract",
         chain.market.address, "--devnet-account", "3", "--store", f"local:{chain.store_path}",
         "--state", str(first.state_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    # Then it is refused with a message naming the owner, and the first carries on
    assert second.returncode == 2, second.stderr
    assert "is in use by another process" in second.stderr
    assert first.proc is not None
    assert f"pid {first.proc.pid}" in second.stderr
    assert first.proc.poll() is None


def test_a_job_put_off_while_busy_is_taken_after_a_kill_9(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given a daemon that may hold one unfilled bid, holding one on a k=2 job nobody else takes
    node = Tuned(chain=chain, index=2, name="durable2", pending_bids=1, fill_wait=5.0).start()
    daemons.append(node)
    held, _ = post_wordcount_job(chain, wasm_examples, k=2, m=2, fill_timeout=300)
    wait_for("the daemon to bid on the k=2 job", lambda: chain.market.job(held).filled == 1, daemons=daemons)

    # When a k=1 job is posted, put off ("later"), and the daemon is killed at once after
    later, _ = post_wordcount_job(chain, wasm_examples, k=1, m=1, challenge_window=0)
    wait_for("the daemon to put the k=1 job off", lambda: f"job_id={later} main round: later" in node.log(),
             daemons=daemons)  # fmt: skip
    node.kill()

    # Then the decision to come back to it is on disk, though the cursor has passed its event
    with NodeState(node.state_dir / "state.db") as state:
        assert later in {int(w.job_id) for w in state.watched(WatchKind.DEFER)}
        assert (state.load() or 0) >= chain.events(later, "JobPosted")[0].block_number

    # And after a restart the daemon leaves the unfilled round and runs the k=1 job
    node.start()
    wait_for("the k=1 job to finalize after the restart", lambda: status(chain, later) == JobStatus.FINALIZED,
             timeout=60, daemons=daemons)  # fmt: skip
    assert [e.args["provider"] for e in chain.events(later, "ProviderPaid")] == [node.address]
    assert [e.args["provider"] for e in chain.events(held, "BidWithdrawn")] == [node.address]


def test_a_mixed_load_with_unfillable_jobs_never_stalls(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given three daemons of capacity 2 (every registered provider runs)
    daemons += [Tuned(chain=chain, index=i, name=f"load{i}", capacity=2, fill_wait=5.0).start() for i in (2, 3, 4)]
    rng = random.Random(9)

    # When two k=4 jobs that can never fill and 60 mixed k=1 and k=3 jobs are posted
    started = time.monotonic()
    unfillable = [post_wordcount_job(chain, wasm_examples, k=4, m=3, fill_timeout=600)[0] for _ in range(2)]
    fillable = []
    for _ in range(60):
        k = rng.choice([1, 1, 3])
        fillable.append(post_wordcount_job(chain, wasm_examples, k=k, m=k // 2 + 1, challenge_window=0)[0])

    # Then every fillable job finalizes long before the unfillable ones' fill timeout
    wait_for("every fillable job to finalize",
             lambda: all(status(chain, j) == JobStatus.FINALIZED for j in fillable), timeout=100,
             daemons=daemons)  # fmt: skip
    drained = time.monotonic() - started
    print(f"load: {len(fillable)}/{len(fillable)} fillable jobs finalized in {drained:.1f}s")
    assert all(status(chain, j) == JobStatus.OPEN for j in unfillable)
    # And no honest provider was slashed
    assert not [e for j in fillable for e in chain.events(j, "SlotSlashed")]


def test_kill_9_of_every_daemon_at_random_moments_loses_no_job(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given three daemons
    daemons += [Tuned(chain=chain, index=i, name=f"crash{i}", capacity=2, fill_wait=5.0).start() for i in (2, 3, 4)]
    rng = random.Random(17)

    # When 30 mixed jobs are posted while daemons are killed with SIGKILL at random and restarted
    jobs = []
    kills = 0
    for n in range(30):
        k = rng.choice([1, 3])
        jobs.append(post_wordcount_job(chain, wasm_examples, k=k, m=k // 2 + 1, challenge_window=0)[0])
        if n % 2 == 0:
            victim = rng.choice(daemons)
            time.sleep(rng.uniform(0.0, 0.4))
            victim.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.5))
            victim.start()

    # Then every job finalizes
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline and any(status(chain, j) != JobStatus.FINALIZED for j in jobs):
        time.sleep(0.5)
    unfinished = {j: chain.market.job(j) for j in jobs if status(chain, j) != JobStatus.FINALIZED}
    assert not unfinished, f"after {kills} kills, not finalized: {unfinished}"


def test_a_chain_that_lost_blocks_is_followed_and_a_reused_job_id_names_the_new_job(
    chain: Chain, daemons: list[Daemon], wasm_examples: dict[str, Path]
) -> None:
    # Given three daemons, and a job A that one of them ran to the end
    daemons += [Tuned(chain=chain, index=i, name=f"fork{i}", capacity=2).start() for i in (2, 3, 4)]
    snapshot = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    a_id, a_terms = post_wordcount_job(chain, wasm_examples, k=1, m=1, challenge_window=0)
    wait_for("job A to finalize", lambda: status(chain, a_id) == JobStatus.FINALIZED, daemons=daemons)
    (runner_of_a,) = [e.args["provider"] for e in chain.events(a_id, "ProviderPaid")]

    # When the chain loses every block since before A (restored from older state) and a different
    # job B is posted, taking A's id
    time.sleep(1.0)  # every daemon has seen A's end
    assert chain.w3.provider.make_request("evm_revert", [snapshot])["result"]  # type: ignore[arg-type]
    assert status(chain, a_id) == JobStatus.NONE
    b_id, b_terms = post_wordcount_job(chain, wasm_examples, k=3, m=2, challenge_window=0)
    assert b_id == a_id and b_terms.digest != a_terms.digest

    # Then the daemons follow the new chain and all three (the one that ran A too) run B
    wait_for("job B to finalize", lambda: status(chain, b_id) == JobStatus.FINALIZED, timeout=60, daemons=daemons)
    paid = {e.args["provider"] for e in chain.events(b_id, "ProviderPaid")}
    assert paid == {d.address for d in daemons} and runner_of_a in paid
    assert not chain.events(b_id, "SlotSlashed")
    assert any("replaced later blocks" in d.log() or "is back at block" in d.log() for d in daemons)
