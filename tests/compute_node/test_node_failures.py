"""A job that cannot run is a result, not a fault: real daemons agree on a failure result and are paid.

Each job is posted straight to the contract, as a client that skips the SDK's
checks (``--force``) would. Three honest ``compute-node run`` daemons on a real
anvil chain must bid, agree on the same failure result, be paid
``price × max(usage, min_units)`` and never be slashed; the client pays exactly
that and gets the rest of its escrow back. These daemons run with ``--failure-gas 0``:
at the default, a daemon declines a job that will fail unless ``minUnits × price``
covers the gas of its slot, which the last test shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime
from test_node import Chain, Daemon, devnet_account, market_on_anvil, register, wait_for
from test_runner import PRINTING_LOOP_WAT, unsafe_tree, writing_wat

from chain_scheduler import Executor, InputRef, JobSpec, JobStatus, JobTerms, Limits
from storage import LocalStore

pytestmark = pytest.mark.timeout(120)

MIN_UNITS = 1_000
PRICE = 2
GOOD_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'


@dataclass(frozen=True)
class Case:
    """A job that every honest replica fails the same way."""

    reason: str
    make_spec: Callable[[LocalStore], JobSpec]
    max_units: int = 10**9
    exec_timeout: int = 60
    usage: int | None = 0  # revealed usage; None: the job's fuel limit

    def units(self, spec: JobSpec, terms: JobTerms) -> int:
        usage = spec.unit_limit(terms) if self.usage is None else self.usage
        return min(max(usage, MIN_UNITS), terms.max_units)


def _module(store: LocalStore, wat: str) -> str:
    return str(store.put_bytes(wasmtime.wat2wasm(wat)))


def _junk(s: LocalStore) -> JobSpec:
    return JobSpec(version=1, executor="wasm", artifact=str(s.put_bytes(b"# README, not a module\n")))


def _unsafe_input(s: LocalStore) -> JobSpec:
    tree = unsafe_tree(s, {"..": b"escape"})
    return JobSpec(version=1, executor="wasm", artifact=_module(s, GOOD_WAT), inputs=[InputRef(cid=tree, path="data")])


def _long_timeout(s: LocalStore) -> JobSpec:
    return JobSpec(version=1, executor="wasm", artifact=_module(s, GOOD_WAT), limits=Limits(timeout_s=30))


def _printing_loop(s: LocalStore) -> JobSpec:
    return JobSpec(version=1, executor="wasm", artifact=_module(s, PRINTING_LOOP_WAT), limits=Limits(timeout_s=1))


def _endless_writer(s: LocalStore) -> JobSpec:
    return JobSpec(version=1, executor="wasm", artifact=_module(s, writing_wat(None)), limits=Limits(output_mb=1))


CASES = {
    "junk-module": Case("artifact_invalid", _junk),
    "unsafe-input-tree": Case("input_refused", _unsafe_input),
    # 30 s of fuel at the protocol's 500M fuel/s cannot fit half of a 10 s commit window
    "timeout-longer-than-the-commit-window": Case("spec_terms", _long_timeout, max_units=10**11, exec_timeout=10),
    "time-limited-printing-loop": Case("time_limit", _printing_loop, max_units=10**10, usage=None),
    "output-over-the-limit": Case("output_limit", _endless_writer, max_units=2 * 10**9, usage=None),
}


@dataclass
class TakesAnyFailure(Daemon):
    """A daemon that bids on failure results whatever they pay (``--failure-gas 0``)."""

    def extra_args(self) -> list[str]:
        return ["--failure-gas", "0"]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, list[Daemon]]]:
    with market_on_anvil(tmp_path_factory.mktemp("failures")) as chain:
        register(chain, 2, 3, 4)
        daemons = [TakesAnyFailure(chain=chain, index=i, name=f"honest{i}", price=PRICE).start() for i in (2, 3, 4)]
        try:
            yield chain, daemons
        finally:
            for d in daemons:
                d.stop_quietly()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_job_every_replica_fails_the_same_way_is_paid_and_slashes_nobody(
    market: tuple[Chain, list[Daemon]], name: str
) -> None:
    chain, daemons = market
    case = CASES[name]
    # Given a job built to fail, posted without the client's checks
    with LocalStore(root=chain.store_path) as store:
        spec = case.make_spec(store)
        spec_cid = str(store.put_bytes(spec.to_bytes()))
    client = chain.market.with_account(devnet_account(1))
    terms = JobTerms.create(
        client=client.account, spec_cid=spec_cid, executor=Executor.WASM, k=3, m=2, max_price=5,
        max_units=case.max_units, min_units=MIN_UNITS, collateral=10**16, exec_timeout=case.exec_timeout,
        fill_timeout=60, reveal_window=60, challenge_window=0,
    )  # fmt: skip
    job_id = int(client.post_job(spec_cid, terms))

    # When the daemons take it
    wait_for(f"job {job_id} ({name}) to finalize", lambda: chain.market.job(job_id).status == JobStatus.FINALIZED,
             timeout=60, daemons=daemons)  # fmt: skip

    # Then all three revealed the same failure result, naming the reason
    revealed = chain.events(job_id, "ResultRevealed")
    assert len(revealed) == 3 and len({e.args["resultCid"] for e in revealed}) == 1
    with LocalStore(root=chain.store_path) as store:
        target = chain.work / f"result-{job_id}"
        store.fetch(revealed[0].args["resultCid"], target)
    receipt = json.loads((target / "receipt.json").read_text())
    assert receipt["reason"] == case.reason

    # And nobody is slashed; each is paid its price × max(usage, min_units); the client pays exactly that
    assert chain.events(job_id, "SlotSlashed") == []
    units = case.units(spec, terms)
    paid = chain.events(job_id, "ProviderPaid")
    assert sorted((e.args["provider"], e.args["units"], e.args["amount"]) for e in paid) == sorted(
        (d.address, units, PRICE * units) for d in daemons
    )
    finalized = chain.events(job_id, "JobFinalized")[0].args
    assert (finalized["paid"], finalized["refund"]) == (3 * PRICE * units, terms.escrow - 3 * PRICE * units)
    for d in daemons:
        assert chain.market.provider(d.address).slashed == 0


def test_a_daemon_declines_a_failing_job_that_does_not_pay_for_its_gas(tmp_path: Path) -> None:
    # Given a daemon at the default policy, and a job built to fail whose floor pays 2,000 wei
    # (minUnits 1,000 x price 2), far below the ~200,000 gas of a slot at anvil's gas price
    with market_on_anvil(tmp_path, accounts=4) as chain:
        register(chain, 2)
        daemon = Daemon(chain=chain, index=2, name="default2", price=PRICE).start()
        try:
            with LocalStore(root=chain.store_path) as store:
                spec_cid = str(store.put_bytes(_junk(store).to_bytes()))
            client = chain.market.with_account(devnet_account(1))
            terms = JobTerms.create(client=client.account, spec_cid=spec_cid, executor=Executor.WASM, max_price=5,
                                    max_units=10**9, min_units=MIN_UNITS, collateral=10**16)  # fmt: skip
            job_id = int(client.post_job(spec_cid, terms))

            # When it sees the job, Then it says why it will not bid, and does not
            wait_for("the daemon to decline", lambda: f"job_id={job_id} declined: skip: it will end in a failure "
                     "result paid 2000 wei" in daemon.log(), daemons=[daemon])  # fmt: skip
            assert "below the" in daemon.log() and "200,000 gas at" in daemon.log()
            assert chain.market.job(job_id).filled == 0
            assert chain.market.provider(daemon.address).locked == 0
        finally:
            daemon.stop_quietly()
