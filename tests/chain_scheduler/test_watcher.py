"""The event watcher and parent-result resolution, against a real anvil node.

One anvil node serves the module; each test deploys its own market contract, so
the events a test reads are its own. A small JSON-RPC proxy in front of anvil
plays a node that limits ``eth_getLogs`` ranges (anvil itself has no limit).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak
from web3 import Web3

from chain_scheduler import (
    Capability,
    CursorStore,
    EventWatcher,
    FileCursor,
    JobStatus,
    JobTerms,
    Market,
    MarketEvent,
    MemoryCursor,
    SeenKeys,
    commitment,
    resolve_parent_result,
)
from chain_scheduler._anvil import Anvil, advance_time
from chain_scheduler.errors import ChainSchedulerError, ChainUnavailable, ParentNotReady, UnknownJob
from storage import open_store

ETH = 10**18
SPEC_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    with Anvil(accounts=12) as n:
        yield n


@pytest.fixture
def w3(node: Anvil) -> Web3:
    return node.web3()


@pytest.fixture
def market(w3: Web3) -> Market:
    """A freshly deployed contract: only this test's events."""
    return Market.deploy(w3=w3, account=w3.eth.accounts[0], unbonding_delay=60)


def deploy_block(market: Market) -> int:
    """The block the contract was deployed in (call before sending anything else)."""
    return int(market.w3.eth.block_number)


def account(market: Market, index: int) -> str:
    return str(list(market.w3.eth.accounts)[index])


def make_events(market: Market, n: int) -> None:
    """``n`` transactions, one block and one event each (registrations, then stake top-ups)."""
    accounts = list(market.w3.eth.accounts)[1:]
    for i in range(n):
        who = market.with_account(accounts[i % len(accounts)])
        if market.provider(who.account).registered:
            who.add_stake(10**15)
        else:
            who.register(Capability.WASM, ETH)


def post_and_fill(market: Market) -> int:
    """A k=1 job and its winning bid: the bid's block holds two events."""
    client = market.with_account(account(market, 1))
    terms = JobTerms.create(
        client=client.account, spec_cid=SPEC_CID, max_price=10, max_units=1000, collateral=10**15, challenge_window=10
    )
    job_id = client.post_job(SPEC_CID, terms)
    provider = market.with_account(account(market, 2))
    if not market.provider(provider.account).registered:
        provider.register(Capability.WASM, ETH)
    provider.bid(job_id, 5)
    return job_id


def drain(watcher: EventWatcher) -> tuple[list[MarketEvent], list[tuple[int, int]]]:
    """Poll and commit until caught up; every event and every block range read."""
    events: list[MarketEvent] = []
    ranges: list[tuple[int, int]] = []
    for _ in range(1000):
        batch = watcher.poll()
        events.extend(batch.events)
        if not batch.empty_range:
            ranges.append((batch.from_block, batch.to_block))
        batch.commit()
        if batch.caught_up:
            return events, ranges
    raise AssertionError("the watcher never caught up")


def keys(events: list[MarketEvent]) -> list[tuple[str, int]]:
    return [e.key for e in events]


# ------------------------------------------------------------------ cursors


@pytest.fixture(params=["memory", "file"])
def cursor(request: pytest.FixtureRequest, tmp_path: Path) -> CursorStore:
    if request.param == "memory":
        return MemoryCursor()
    return FileCursor(path=tmp_path / "state" / "cursor")


class TestCursorStore:
    """Every cursor store behaves the same."""

    def test_empty_then_saved(self, cursor: CursorStore) -> None:
        assert isinstance(cursor, CursorStore)
        assert cursor.load() is None
        cursor.save(41)
        cursor.save(42)
        assert cursor.load() == 42


def test_file_cursor_survives_a_new_instance_and_leaves_no_temp_files(tmp_path: Path) -> None:
    FileCursor(path=tmp_path / "cursor").save(1234)

    assert FileCursor(path=tmp_path / "cursor").load() == 1234
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cursor"]


def test_file_cursor_with_garbage_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text("12x\n")
    with pytest.raises(ChainSchedulerError, match=r"holds '12x', not a block number. Delete it"):
        FileCursor(path=tmp_path / "cursor").load()


def test_seen_keys_is_a_bounded_lru() -> None:
    seen = SeenKeys(maxsize=2)
    assert seen.add(("0xa", 0)) and seen.add(("0xb", 0))
    assert not seen.add(("0xa", 0))  # a repeat; now most recently seen
    assert seen.add(("0xc", 1))  # evicts 0xb, the least recently seen
    assert ("0xa", 0) in seen and ("0xb", 0) not in seen and len(seen) == 2


# --------------------------------------------------------------- the watcher


def test_bounded_ranges_deliver_every_event_once_in_order(market: Market) -> None:
    # Given 10 blocks of events after the deployment, one block holding two events
    start = deploy_block(market)
    make_events(market, 8)
    post_and_fill(market)
    head = market.w3.eth.block_number
    assert head - start == 10
    expected = market.events(from_block=start)
    assert len(expected) == 11

    # When a watcher reads them two blocks at a time
    watcher = EventWatcher(market=market, cursor=MemoryCursor(), start_block=start + 1, max_range=2)
    events, ranges = drain(watcher)

    # Then every event comes once, in chain order, over contiguous ranges of <= 2 blocks
    assert keys(events) == keys(expected)
    assert len(set(keys(events))) == len(events)
    assert [(e.block_number, e.log_index) for e in events] == sorted((e.block_number, e.log_index) for e in events)
    assert ranges == [(b, b + 1) for b in range(start + 1, head + 1, 2)]
    assert watcher.cursor.load() == head
    assert [e.name for e in events[-3:]] == ["JobPosted", "SlotAssigned", "BiddingClosed"]


def test_resumes_from_a_persisted_cursor_without_repeats_or_gaps(market: Market, tmp_path: Path) -> None:
    start = deploy_block(market)
    path = tmp_path / "cursor"
    make_events(market, 4)

    # Given a watcher that handled what was there, then "crashed"
    first, _ = drain(EventWatcher(market=market, cursor=FileCursor(path=path), start_block=start, max_range=3))
    # and one that read a batch but died before committing it
    make_events(market, 3)
    unlucky = EventWatcher(market=market, cursor=FileCursor(path=path), start_block=start, max_range=100).poll()
    assert len(unlucky.events) == 3

    # When a new process resumes from the same file
    make_events(market, 2)
    second, _ = drain(EventWatcher(market=market, cursor=FileCursor(path=path), start_block=start, max_range=3))

    # Then the uncommitted batch is delivered again, and together nothing is missing or repeated
    assert keys(second[:3]) == keys(unlucky.events)
    assert keys(first + second) == keys(market.events(from_block=start))
    assert len(set(keys(first + second))) == len(first) + len(second) == 4 + 3 + 2


def test_an_uncommitted_batch_is_polled_again_and_stale_commits_are_ignored(market: Market) -> None:
    start = deploy_block(market)
    make_events(market, 3)
    watcher = EventWatcher(market=market, cursor=MemoryCursor(), start_block=start, max_range=2)

    a = watcher.poll()
    b = watcher.poll()  # not committed in between: the same range again
    assert (a.from_block, a.to_block) == (b.from_block, b.to_block) == (start, start + 1)
    assert keys(a.events) == keys(b.events)

    a.commit()
    b.commit()  # stale: the cursor has moved past where b started
    a.commit()  # idempotent
    assert watcher.cursor.load() == start + 1
    assert watcher.poll().from_block == start + 2


def test_confirmations_hold_back_the_newest_blocks(market: Market) -> None:
    start = deploy_block(market)
    make_events(market, 5)
    head = market.w3.eth.block_number
    watcher = EventWatcher(market=market, cursor=MemoryCursor(), start_block=start, confirmations=3)

    held, _ = drain(watcher)

    assert watcher.cursor.load() == head - 3
    assert keys(held) == keys(market.events(from_block=start, to_block=head - 3))
    assert watcher.poll().empty_range

    # When three more (empty) blocks are mined, the held-back events are confirmed
    for _ in range(3):
        market.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    rest, _ = drain(watcher)
    assert keys(held + rest) == keys(market.events(from_block=start))
    assert len(rest) == 3


def test_a_head_given_by_the_caller_bounds_the_range_without_asking_the_node(market: Market) -> None:
    # Given events in several blocks, and a caller that read the head earlier (an older one)
    start = deploy_block(market)
    make_events(market, 4)
    head = market.w3.eth.block_number
    watcher = EventWatcher(market=market, cursor=MemoryCursor(), start_block=start, max_range=1000)

    # When it polls with that older head: the range stops there
    batch = watcher.poll(head=head - 2)
    assert (batch.from_block, batch.to_block) == (start, head - 2)
    assert keys(batch.events) == keys(market.events(from_block=start, to_block=head - 2))
    batch.commit()

    # And the next poll with the true head delivers the rest
    rest = watcher.poll(head=head)
    assert (rest.from_block, rest.to_block) == (head - 1, head)


def test_only_named_events(market: Market) -> None:
    start = deploy_block(market)
    make_events(market, 2)
    post_and_fill(market)
    watcher = EventWatcher(
        market=market, cursor=MemoryCursor(), start_block=start, names=["JobPosted", "BiddingClosed"]
    )

    events, _ = drain(watcher)

    assert [e.name for e in events] == ["JobPosted", "BiddingClosed"]


# ------------------------------------------------------ a node that limits ranges


class LimitingProxy:
    """A JSON-RPC proxy to anvil that refuses ``eth_getLogs`` over more than ``limit`` blocks.

    It answers as reth does (``query exceeds max block range N``), or with another
    message, and records each range it served.
    """

    def __init__(self, *, upstream: str, limit: int, message: str = "query exceeds max block range {limit}") -> None:
        self.upstream = upstream
        self.limit = limit
        self.message = message
        self.served: list[tuple[int, int]] = []
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                reply = proxy.handle(request, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: dict[str, Any], body: bytes) -> bytes:
        if request.get("method") == "eth_getLogs":
            params = request["params"][0]
            first, last = int(params["fromBlock"], 16), int(params["toBlock"], 16)
            if last - first + 1 > self.limit:
                self.refused += 1
                error = {"code": -32602, "message": self.message.format(limit=self.limit)}
                return json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
            self.served.append((first, last))
        forwarded = urllib.request.Request(self.upstream, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(forwarded, timeout=10) as response:
            data: bytes = response.read()
            return data

    def __enter__(self) -> LimitingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.mark.parametrize(
    "message",
    [
        "query exceeds max block range {limit}",  # reth
        "exceed maximum block range: {limit}",  # geth-based (BSC)
        "Log response size exceeded. You can make eth_getLogs requests with up to a {limit} block range",  # Alchemy
        "query returned more than 10000 results",  # Infura
    ],
)
def test_a_range_too_large_for_the_node_is_halved_until_it_fits(node: Anvil, market: Market, message: str) -> None:
    # Given a node that serves at most 3 blocks of logs per call
    start = deploy_block(market)
    make_events(market, 10)
    expected = market.events(from_block=start)
    with LimitingProxy(upstream=node.url, limit=3, message=message) as proxy:
        via_proxy = Market(w3=Web3(Web3.HTTPProvider(proxy.url)), address=market.address, account=market.account)
        watcher = EventWatcher(market=via_proxy, cursor=MemoryCursor(), start_block=start, max_range=20)

        # When the watcher asks for 20 blocks at a time
        events, _ = drain(watcher)

    # Then it halves the 11 blocks there are (11 -> 5 -> 2), keeps the smaller range, misses nothing
    assert watcher.max_range == 2
    assert proxy.refused == 2
    assert keys(events) == keys(expected)
    assert all(last - first + 1 <= 2 for first, last in proxy.served)


def test_a_node_that_refuses_even_one_block(node: Anvil, market: Market) -> None:
    start = deploy_block(market)
    with LimitingProxy(upstream=node.url, limit=0) as proxy:
        via_proxy = Market(w3=Web3(Web3.HTTPProvider(proxy.url)), address=market.address, account=market.account)
        cursor = MemoryCursor()
        watcher = EventWatcher(market=via_proxy, cursor=cursor, start_block=start, max_range=8)
        with pytest.raises(ChainUnavailable, match=rf"refuses eth_getLogs even for block {start} alone"):
            watcher.poll()
    assert cursor.load() is None


# ------------------------------------------------------------ a node that goes down


def test_node_down_leaves_the_cursor_and_resumes_when_back(tmp_path: Path) -> None:
    state = tmp_path / "chain.json"
    path = tmp_path / "cursor"
    chain = Anvil(accounts=6, state_file=state)
    chain.start()
    try:
        w3 = chain.web3()
        market = Market.deploy(w3=w3, account=w3.eth.accounts[0])
        start = deploy_block(market)
        make_events(market, 3)
        first, _ = drain(EventWatcher(market=market, cursor=FileCursor(path=path), start_block=start, max_range=2))
        committed = FileCursor(path=path).load()
        make_events(market, 2)  # written to the chain, not yet read

        # When the node stops (gracefully: it saves its state)
        chain.stop()
        watcher = EventWatcher(market=market, cursor=FileCursor(path=path), start_block=start, max_range=2)
        with pytest.raises(ChainUnavailable, match=r"The Ethereum node did not answer .*Is it running\?"):
            watcher.poll()
        assert FileCursor(path=path).load() == committed

        # Then, once it is back on the same address, the watcher resumes where it stopped
        chain = Anvil(accounts=6, state_file=state, port=chain.port)
        chain.start()
        rest, _ = drain(watcher)
        assert keys(first + rest) == keys(market.events(from_block=start))
        assert len(first) == 3 and len(rest) == 2
    finally:
        chain.stop()


# ------------------------------------------------------------- parent results


def run_k1_job(market: Market, result_cid: str, *, finalize: bool = True) -> int:
    """A k=1 job through its lifecycle, as scripts/demo.py drives one."""
    job_id = post_and_fill(market)
    provider = market.with_account(account(market, 2))
    salt = (7).to_bytes(32, "big")
    provider.commit(job_id, 0, commitment(job_id, provider.account, result_cid, 123, salt))
    provider.reveal(job_id, 0, result_cid, 123, salt)
    assert market.job(job_id).status == JobStatus.SUCCEEDED
    if finalize:
        advance_time(market.w3, 11)
        market.finalize(job_id)
        assert market.job(job_id).status == JobStatus.FINALIZED
    return job_id


def test_resolve_parent_result_of_a_finalized_job(market: Market, tmp_path: Path) -> None:
    with open_store(f"local:{tmp_path / 'store'}") as store:
        result_cid = str(store.put_bytes(b"the parent's output\n"))
    # Another job's reveal for the same slot index must not confuse it
    run_k1_job(market, SPEC_CID, finalize=False)
    job_id = run_k1_job(market, result_cid)

    resolved = resolve_parent_result(market, job_id)

    assert resolved == result_cid
    assert keccak(resolved.encode())[:24] == market.slot(job_id, market.job(job_id).winner).result_digest


def test_a_parent_in_its_challenge_window_is_not_ready(market: Market) -> None:
    job_id = run_k1_job(market, SPEC_CID, finalize=False)

    with pytest.raises(ParentNotReady) as caught:
        resolve_parent_result(market, job_id)

    assert caught.value.job_id == job_id and caught.value.status == JobStatus.SUCCEEDED
    assert not caught.value.final
    assert str(caught.value) == (
        f"Parent job {job_id} is Succeeded, not Finalized: its result is not accepted yet. "
        f"Wait for it. See: chainsched job status {job_id}"
    )


def test_a_cancelled_parent_will_never_be_ready(market: Market) -> None:
    client = market.with_account(account(market, 1))
    terms = JobTerms.create(client=client.account, spec_cid=SPEC_CID, max_price=10, max_units=1000, collateral=10**15)
    job_id = client.post_job(SPEC_CID, terms)
    client.cancel(job_id)

    with pytest.raises(ParentNotReady, match=rf"Parent job {job_id} is Cancelled: it has no result and never will"):
        resolve_parent_result(market, job_id)


def test_an_unknown_parent(market: Market) -> None:
    with pytest.raises(UnknownJob, match="Job 99 does not exist"):
        resolve_parent_result(market, 99)


def test_a_reveal_event_that_does_not_match_the_sealed_digest_is_refused(market: Market) -> None:
    job_id = run_k1_job(market, SPEC_CID)

    class ForgedEvents:
        """The real market, but its ResultRevealed events carry another CID."""

        def __getattr__(self, name: str) -> Any:
            return getattr(market, name)

        def events(self, **kwargs: Any) -> list[MarketEvent]:
            return [
                MarketEvent(e.name, {**e.args, "resultCid": "bafkreiforged"}, e.block_number, e.tx_hash, e.log_index)
                for e in market.events(**kwargs)
            ]

    with pytest.raises(ChainSchedulerError, match=rf"Job {job_id} is Finalized .* no ResultRevealed event"):
        resolve_parent_result(ForgedEvents(), job_id)  # type: ignore[arg-type]


def test_a_cursor_ahead_of_the_chain_reads_the_last_blocks_again(market: Market) -> None:
    # Given a watcher whose cursor is past the head: the chain was restored from older state,
    # and has mined a new block at a height the cursor had passed before the watcher looked
    start = deploy_block(market)
    make_events(market, 3)
    head = int(market.w3.eth.block_number)
    cursor = MemoryCursor(block=head + 50)
    watcher = EventWatcher(market=market, cursor=cursor, start_block=start, rewind_depth=2)

    # When it polls
    batch = watcher.poll()

    # Then it says so, and reads the last rewind_depth blocks again
    assert batch.rewound_from == head + 50
    assert (batch.from_block, batch.to_block) == (head - 1, head)
    assert keys(batch.events) == keys(market.events(from_block=head - 1))
    batch.commit()

    # And the blocks mined after it are read as usual
    make_events(market, 2)
    after, _ = drain(watcher)
    assert keys(after) == keys(market.events(from_block=head + 1))
    assert len(after) >= 2
