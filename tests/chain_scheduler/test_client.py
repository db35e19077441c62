"""The client SDK end to end: a real anvil chain, three real ``compute-node run`` daemons, real Wasm.

A client submits a word-count job through :class:`chain_scheduler.Client`, waits
for it, fetches the outputs and reads the receipt; a job nobody can take times
out and ``wait`` says why. The chain and daemon helpers are the provider node's
e2e helpers (tests/compute_node/test_node.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain_scheduler import Capability, Client, FailReason, JobStatus, errors
from chain_scheduler._anvil import advance_time

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "compute_node"))
from test_node import (  # type: ignore[import-not-found]  # noqa: E402
    COLLATERAL,
    TEXT,
    Chain,
    Daemon,
    devnet_account,
    expected_total_line,
    market_on_anvil,
    register,
    wait_for,
)

CHALLENGE_WINDOW = 5
PRICES = {2: 2, 3: 3, 4: 4}  # devnet account index -> bid price (wei per unit of fuel)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wordcount_module() -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Wasm examples failed:\n{proc.stderr}", pytrace=False)
    return ROOT / "examples" / "wasm" / "build" / "wordcount.wasm"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with market_on_anvil(tmp_path_factory.mktemp("client-e2e")) as c:
        yield c


@pytest.fixture
def client(chain: Chain) -> Iterator[Client]:
    with Client(
        rpc_url=chain.node.url,
        contract=chain.market.address,
        key=devnet_account(1),
        store=f"local:{chain.store_path}",
    ) as c:
        yield c


@pytest.fixture
def daemons(chain: Chain) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop_quietly()


def test_the_constructor_does_no_io() -> None:
    # A node that does not exist: nothing is contacted until connect().
    client = Client(rpc_url="http://127.0.0.1:9", contract="0x" + "11" * 20, key="0x" + "22" * 20, store="local:/x")
    with pytest.raises(RuntimeError, match="connect"):
        _ = client.market
    with pytest.raises(errors.ChainUnavailable, match="did not answer"):
        client.connect()


def test_submit_wait_fetch_and_receipt_with_three_daemons(
    chain: Chain, client: Client, daemons: list[Daemon], wordcount_module: Path, tmp_path: Path
) -> None:
    # Given three registered providers, each running its own daemon at its own price
    register(chain, *PRICES)
    daemons += [Daemon(chain=chain, index=i, name=f"sdk{i}", price=p).start() for i, p in PRICES.items()]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text.txt").write_text(TEXT)

    # When the client submits a k=3 m=2 word count through the SDK
    job = client.submit(
        module=wordcount_module,
        inputs={"text": corpus},
        k=3,
        m=2,
        max_price=5,
        max_units=50_000_000,
        collateral=COLLATERAL,
        fill_timeout=60,
        exec_timeout=60,
        reveal_window=60,
        challenge_window=CHALLENGE_WINDOW,
    )

    # Then it succeeds, and its result is readable before the challenge window ends
    assert job.status().status in (JobStatus.OPEN, JobStatus.RUNNING, JobStatus.REVEALING, JobStatus.SUCCEEDED)
    try:
        assert job.wait(timeout=60, poll=0.2).status == JobStatus.SUCCEEDED
    except errors.WaitTimeout:
        pytest.fail("\n".join(f"---- {d.name}\n{d.log()[-4000:]}" for d in daemons))
    early_cid = job.result_cid()
    with pytest.raises(errors.ResultNotReady, match="Succeeded"):
        job.receipt()

    # And once the clock passes the challenge window a daemon finalizes it (waited on asynchronously)
    advance_time(chain.w3, CHALLENGE_WINDOW + 1)
    final = asyncio.run(job.wait_async(timeout=30, poll=0.2, until=JobStatus.FINALIZED))
    assert final.status == JobStatus.FINALIZED
    assert job.result_cid() == early_cid

    # And the fetched outputs hold the right word count
    outputs = job.fetch(tmp_path / "result")
    assert (outputs / "wc.txt").read_text().strip().splitlines()[-1] == expected_total_line()

    # And the receipt shows every provider paid its own price × the metered units
    receipt = job.receipt()
    assert receipt.result_cid == early_cid
    assert {p.provider: p.price for p in receipt.providers} == {d.address: d.price for d in daemons}
    units = receipt.consensus["usage"]
    assert units > 0 and receipt.consensus["exit_code"] == 0 and receipt.consensus["executor"] == "wasm"
    for p in receipt.providers:
        assert p.units == units
        assert p.amount == p.price * p.units
    assert receipt.paid == sum(p.amount for p in receipt.providers) == sum(PRICES.values()) * units
    assert receipt.refund == receipt.escrow - receipt.paid
    assert receipt.escrow == 3 * 50_000_000 * 5


def test_wait_on_a_job_nobody_can_take_raises_job_failed_with_the_reason(
    chain: Chain, client: Client, wordcount_module: Path
) -> None:
    # Given a job that needs a GPU, which no registered provider has
    job = client.submit(
        module=wordcount_module,
        capabilities=Capability.GPU,
        max_price=2,
        max_units=1_000_000,
        collateral=COLLATERAL,
        fill_timeout=30,
    )

    # Then waiting for it gives up with a clear timeout, and it has no result yet
    with pytest.raises(errors.WaitTimeout, match=f"Job {job.job_id} is still Open") as waited:
        job.wait(timeout=0.3, poll=0.1)
    assert waited.value.status == JobStatus.OPEN
    with pytest.raises(errors.ResultNotReady, match="Open"):
        job.result_cid()

    # When its fill timeout passes and someone calls timeout (a daemon's keeper may get there first)
    advance_time(chain.w3, 31)
    with contextlib.suppress(errors.JobStateError):
        chain.market.timeout(job.job_id)
    wait_for("the job to fail", lambda: job.status().status == JobStatus.FAILED, timeout=10)

    # Then wait raises JobFailed naming the reason and the refund
    with pytest.raises(errors.JobFailed, match="not enough providers bid") as failed:
        job.wait(timeout=5)
    assert failed.value.job_id == job.job_id
    assert failed.value.reason == FailReason.NOT_FILLED
    assert failed.value.refund == 1_000_000 * 2
    with pytest.raises(errors.JobFailed):
        job.fetch(Path("/nonexistent/never-written"))
    assert client.market.credit_of(devnet_account(1).address) >= failed.value.refund
