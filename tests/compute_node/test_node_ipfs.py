"""The provider daemon on a real IPFS node that goes away in the middle of a job.

Like ``test_node.py`` (whose helpers this module reuses), the test runs a real
``compute-node run`` process against a real anvil chain; here its content store
is a real js-ipfs node (``scripts/ipfs_node.py``, fresh repository, 127.0.0.1
only, a fixed API port so it can come back on the same address).

The job is k=1 with a bid window, so the daemon's bid does not close bidding:
the test stops the IPFS node between the bid and the start of the run, then
lets the window end. The daemon's keeper closes bidding, the run cannot read
the spec, and the daemon holds the job and retries (a warning every few
seconds, no crash) until the node is back; then the job runs to the end.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import test_node
from test_node import (
    COLLATERAL,
    TEXT,
    Chain,
    Daemon,
    devnet_account,
    expected_total_line,
    finalize_after_challenge_window,
    register,
    wait_for,
)

from chain_scheduler import Executor, InputRef, JobSpec, JobStatus, JobTerms
from chain_scheduler._anvil import advance_time
from storage import IpfsStore

ROOT = Path(__file__).resolve().parents[2]
BID_WINDOW = 20
#: The daemon holds a job whose run hit a store outage this long (max(keeper_retry, 5 s)).
RUN_RETRY_SECONDS = 5.0

pytestmark = pytest.mark.timeout(180)


def _ipfs_node_script() -> ModuleType:
    """scripts/ipfs_node.py as a module (shared with tests/storage when both run)."""
    loaded = sys.modules.get("ipfs_node")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("ipfs_node", ROOT / "scripts" / "ipfs_node.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipfs_node"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with test_node.market_on_anvil(tmp_path_factory.mktemp("node-ipfs")) as c:
        yield c


daemons = test_node.daemons  # the same fixture: daemons a test starts, killed at teardown


@pytest.fixture
def ipfs_repo(tmp_path: Path) -> Iterator[tuple[ModuleType, Path]]:
    """A fresh js-ipfs repository whose API listens on a fixed 127.0.0.1 port; stopped at teardown."""
    script = _ipfs_node_script()
    repo = tmp_path / "ipfs-repo"
    script.init_repo(repo)
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    config["Addresses"]["API"] = f"/ip4/127.0.0.1/tcp/{_free_port()}"
    config_path.write_text(json.dumps(config, indent=2))
    try:
        yield script, repo
    finally:
        script.stop(repo)


def post_wordcount_job_via_ipfs(chain: Chain, store: IpfsStore, wasm: Path) -> tuple[int, JobTerms]:
    """The client's side: module, input and spec into the IPFS node, a k=1 job with a bid window to the chain."""
    inputs = chain.work / "inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "text.txt").write_text(TEXT)
    module_cid = str(store.put_file(wasm))
    inputs_cid = str(store.put_directory(inputs))
    spec = JobSpec(version=1, executor="wasm", artifact=module_cid, inputs=[InputRef(cid=inputs_cid, path="text")])
    spec_cid = str(store.put_bytes(spec.to_bytes()))
    client = chain.market.with_account(devnet_account(1))
    terms = JobTerms.create(
        client=client.account, spec_cid=spec_cid, executor=Executor.WASM, k=1, m=1, max_price=5,
        max_units=50_000_000, collateral=COLLATERAL, fill_timeout=60, bid_window=BID_WINDOW,
        exec_timeout=120, reveal_window=60, challenge_window=test_node.CHALLENGE_WINDOW,
    )  # fmt: skip
    return int(client.post_job(spec_cid, terms)), terms


def test_an_ipfs_outage_after_the_bid_holds_the_job_and_it_completes_when_the_node_is_back(
    chain: Chain,
    daemons: list[Daemon],
    wasm_examples: dict[str, Path],
    ipfs_repo: tuple[ModuleType, Path],
) -> None:
    # Given a daemon whose content store is a real js-ipfs node
    script, repo = ipfs_repo
    ipfs: Any = script.start(repo)
    register(chain, 2)
    node = Daemon(chain=chain, index=2, name="ipfs2", price=3, store_url=ipfs.store_url).start()
    daemons.append(node)
    wait_for("the daemon to connect", lambda: "ready on chain" in node.log(), daemons=daemons)

    # and a k=1 job whose module, input and spec the client put into that node
    with IpfsStore(api=ipfs.api) as client_store:
        job_id, _terms = post_wordcount_job_via_ipfs(chain, client_store, wasm_examples["wordcount"])
    wait_for("the daemon to take the slot", lambda: bool(chain.events(job_id, "SlotAssigned")), daemons=daemons)
    assert [e.args["provider"] for e in chain.events(job_id, "SlotAssigned")] == [node.address]
    assert not chain.events(job_id, "BiddingClosed")  # the window is still open: nothing has run

    # When the IPFS node stops, and then the bid window ends (the daemon's keeper closes bidding)
    assert script.stop(repo)
    advance_time(chain.w3, BID_WINDOW + 1)
    wait_for("bidding to close", lambda: bool(chain.events(job_id, "BiddingClosed")), daemons=daemons)

    # Then the run fails on the store, the daemon says so and retries, and stays up
    failed = f"job_id={job_id} could not run now"
    wait_for("the run to hit the outage", lambda: failed in node.log(), daemons=daemons)
    first_failure = time.monotonic()
    wait_for("a second attempt", lambda: node.log().count(failed) >= 2, timeout=3 * RUN_RETRY_SECONDS,
             daemons=daemons)  # fmt: skip
    assert node.proc is not None and node.proc.poll() is None, node.log()
    assert "Cannot reach the IPFS node" in node.log()
    assert chain.market.job(job_id).status == JobStatus.RUNNING
    assert not chain.events(job_id, "ResultCommitted")

    # And when the node is back on the same repository and port, the job runs to the end
    back: Any = script.start(repo)
    assert back.api == ipfs.api
    attempts = node.log().count(failed)
    outage = time.monotonic() - first_failure
    assert attempts <= outage / RUN_RETRY_SECONDS + 2, f"{attempts} failed runs in {outage:.1f}s: a retry loop"
    finalize_after_challenge_window(chain, job_id, daemons)
    assert node.proc.poll() is None, node.log()
    assert node.log().count(failed) <= attempts + 1  # at most one more attempt raced the restart

    revealed = chain.events(job_id, "ResultRevealed")
    assert [e.args["provider"] for e in revealed] == [node.address]
    result_cid, fuel = revealed[0].args["resultCid"], revealed[0].args["usage"]
    assert fuel > 0
    paid = chain.events(job_id, "ProviderPaid")
    assert [(e.args["provider"], e.args["amount"]) for e in paid] == [(node.address, node.price * fuel)]
    assert not chain.events(job_id, "SlotSlashed")
    # The result lives in the IPFS node, and it is the right one.
    target = chain.work / "result"
    with IpfsStore(api=back.api) as client_store:
        client_store.fetch(result_cid, target)
    assert (target / "outputs" / "wc.txt").read_text().strip().splitlines()[-1] == expected_total_line()
