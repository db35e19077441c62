"""Drive the ChainScheduler contract on eth-tester: accounts, time and job phases.

The conftest builds one chain per session (:func:`build_chain`) and hands each test
a :class:`Harness` on a fresh snapshot. A :class:`Run` is one job: it knows its
terms, which provider holds which slot and what each committed, so a test can
move the job through its phases in one line and then poke at the step it is about.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import solcx
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3

from chain_scheduler import (
    Capability,
    Executor,
    Job,
    JobStatus,
    JobTerms,
    Market,
    Provider,
    Round,
    SafetyClass,
    Slot,
    SlotState,
    TxResult,
    commitment,
)

ROOT = Path(__file__).resolve().parents[2]
SOLC = ROOT / "scripts" / "solc"
TEST_CONTRACTS = Path(__file__).with_name("contracts")

SPEC_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
GOOD = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
BAD = "bafkreibadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadba"
OTHER = "bafkreiotherotherotherotherotherotherotherotherotherotherot"

ETHER = 10**18
STAKE = 10 * ETHER
COLLATERAL = 10**15
MAX_PRICE = 10
MAX_UNITS = 1_000
UNBONDING_DELAY = 3_600
ALL_CAPS = Capability.WASM | Capability.DOCKER | Capability.GPU
#: Bit 6 of Job.flags: the audit decision waits for a draw.
FLAG_DRAW_PENDING = 64

N_ACCOUNTS = 24
ACCOUNT_BALANCE = 10**30
# Account roles (indexes into w3.eth.accounts).
DEPLOYER = 0
CLIENTS = (1, 2, 3)
PROVIDERS = tuple(range(4, 16))  # 12 providers with every capability
WASM_ONLY = 16  # a provider that can run Wasm only
DOCKER_ONLY = 17  # Docker but no GPU
OUTSIDERS = (18, 19, 20)  # never registered
SPARE = (21, 22, 23)


@dataclass
class Chain:
    """One eth-tester chain with the contract deployed and the providers registered."""

    tester: EthereumTester
    w3: Web3
    market: Market
    accounts: list[str]

    @property
    def deployer(self) -> str:
        return self.accounts[DEPLOYER]

    @property
    def clients(self) -> list[str]:
        return [self.accounts[i] for i in CLIENTS]

    @property
    def providers(self) -> list[str]:
        return [self.accounts[i] for i in PROVIDERS]

    @property
    def wasm_only(self) -> str:
        return self.accounts[WASM_ONLY]

    @property
    def docker_only(self) -> str:
        return self.accounts[DOCKER_ONLY]

    @property
    def outsiders(self) -> list[str]:
        return [self.accounts[i] for i in OUTSIDERS]


def build_chain() -> Chain:
    """A fresh chain: contract deployed, 12 full providers plus a Wasm-only and a Docker-only one."""
    # 10**30 wei each: more than a 96-bit stake field holds, so AmountTooLarge is reachable.
    genesis = PyEVMBackend.generate_genesis_state(overrides={"balance": ACCOUNT_BALANCE}, num_accounts=N_ACCOUNTS)
    tester = EthereumTester(PyEVMBackend(genesis_state=genesis))
    w3 = Web3(Web3.EthereumTesterProvider(tester))
    accounts = [str(to_checksum_address(a)) for a in w3.eth.accounts]
    market = Market.deploy(w3=w3, account=accounts[DEPLOYER], unbonding_delay=UNBONDING_DELAY)
    for i in PROVIDERS:
        market.with_account(accounts[i]).register(ALL_CAPS, STAKE)
    market.with_account(accounts[WASM_ONLY]).register(Capability.WASM, STAKE)
    market.with_account(accounts[DOCKER_ONLY]).register(Capability.DOCKER, STAKE)
    return Chain(tester=tester, w3=w3, market=market, accounts=accounts)


def _trampoline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


# CPython 3.11 keeps Python frames in 16 KiB "data stack chunks" and frees a chunk as soon
# as the frame at its base returns. When a hot loop's call depth keeps crossing a chunk
# boundary, every crossing is an mmap + munmap: measured here, py-evm under hypothesis under
# pytest did ~55,000 of each per job lifecycle, running 2-3x slower (mostly in the kernel).
# A frame reserving ~600 KB of stack makes CPython allocate a 1 MiB chunk and leaves ~420 KB
# free above it, so everything called from it stays inside one chunk.
_big_frame = types.FunctionType(
    _trampoline.__code__.replace(co_stacksize=_trampoline.__code__.co_stacksize + 75_000), globals()
)


def in_big_frame(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` from a frame with a large stack reserve (see the comment above)."""
    return _big_frame(fn, *args, **kwargs)


def compile_test_contracts() -> dict[str, dict[str, Any]]:
    """ABI and bytecode of every contract in ``contracts/`` here, through the project's solc wrapper."""
    sources = {p.name: {"content": p.read_text()} for p in sorted(TEST_CONTRACTS.glob("*.sol"))}
    out = solcx.compile_standard(
        {
            "language": "Solidity",
            "sources": sources,
            "settings": {
                "evmVersion": "cancun",
                "optimizer": {"enabled": True, "runs": 200},
                "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
            },
        },
        solc_binary=str(SOLC),
    )
    return {
        name: {"abi": compiled["abi"], "bytecode": compiled["evm"]["bytecode"]["object"]}
        for unit in out["contracts"].values()
        for name, compiled in unit.items()
    }


def deploy(w3: Web3, artifact: dict[str, Any], *args: Any, sender: str) -> Any:
    """Deploy a test contract; returns the web3 contract object."""
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*args).transact({"from": sender, "gas": 3_000_000})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])


class Harness:
    """A test's view of the chain: markets per account, time travel, job runs."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.tester = chain.tester
        self.w3 = chain.w3
        self.market = chain.market
        self._markets: dict[str, Market] = {}
        self._salt = 0

    # ----------------------------------------------------------- accounts

    @property
    def deployer(self) -> str:
        return self.chain.deployer

    @property
    def client(self) -> str:
        return self.chain.clients[0]

    @property
    def clients(self) -> list[str]:
        return self.chain.clients

    @property
    def providers(self) -> list[str]:
        return self.chain.providers

    @property
    def outsiders(self) -> list[str]:
        return self.chain.outsiders

    def as_(self, account: str) -> Market:
        """The market binding sending from ``account``."""
        account = to_checksum_address(account)
        found = self._markets.get(account)
        if found is None:
            found = self.market.with_account(account)
            self._markets[account] = found
        return found

    def balance(self, account: str) -> int:
        return int(self.w3.eth.get_balance(to_checksum_address(account)))

    def contract_balance(self) -> int:
        return self.balance(self.market.address)

    def gas_cost(self, tx: TxResult) -> int:
        """Wei the sender paid for ``tx``'s gas."""
        return tx.gas_used * int(self.w3.eth.get_transaction(HexBytes(tx.tx_hash))["gasPrice"])

    # ------------------------------------------------------------- reads

    def job(self, job_id: int) -> Job:
        return self.market.job(job_id)

    def slot(self, job_id: int, index: int) -> Slot:
        return self.market.slot(job_id, index)

    def provider(self, account: str) -> Provider:
        return self.market.provider(account)

    def credit(self, account: str) -> int:
        return int(self.market.credit_of(account))

    # -------------------------------------------------------------- time

    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel_to(self, timestamp: int) -> None:
        """Mine a block at ``timestamp`` or later (never earlier than the pending block's time).

        eth-tester stamps a pending block with the wall clock when the chain is behind it
        (after a snapshot revert, say), and refuses to travel back from there.
        """
        pending = int(self.tester.get_block_by_number("pending")["timestamp"])
        if timestamp > pending:
            self.tester.time_travel(timestamp)  # mines a block at `timestamp`
        else:
            self.tester.mine_blocks()

    def set_pool(self, members: Iterable[str]) -> bool:
        """Make the verifier pool exactly ``members`` (VERIFIER bit on for them, off for every
        other registered provider). Returns whether anything changed; if so, mines on to the
        next pool epoch, whose snapshot the seat draws read."""
        changed = False
        wanted = {to_checksum_address(m) for m in members}
        registered = [*self.providers, self.chain.wasm_only, self.chain.docker_only]
        for account in sorted(wanted | set(registered)):
            p = self.provider(account)
            on = bool(p.capabilities & Capability.VERIFIER)
            if (account in wanted) != on:
                self.as_(account).set_capabilities(p.capabilities ^ Capability.VERIFIER)
                changed = True
        if changed:
            self.to_epoch_start()
        return changed

    def to_epoch_start(self, ahead: int = 0) -> None:
        """Mine empty blocks until the transaction ``ahead`` transactions from now lands in a
        pool epoch's first block: a draw armed there can be carried out in the same epoch."""
        epoch = self.market.pool_epoch
        self.tester.mine_blocks((-(self.w3.eth.block_number + 1 + ahead)) % epoch)

    def advance(self, seconds: int) -> None:
        self.travel_to(self.now() + seconds)

    def past_deadline(self, job_id: int) -> int:
        """Move time to the job's current phase deadline; returns that deadline."""
        deadline = self.job(job_id).deadline
        self.travel_to(deadline)
        return deadline

    # -------------------------------------------------------------- jobs

    def salt(self) -> bytes:
        self._salt += 1
        return keccak(b"salt" + self._salt.to_bytes(8, "big"))

    def terms(self, **overrides: Any) -> JobTerms:
        """Job terms with test defaults: Wasm, k=m=1, price 10/unit, 1000 units, collateral 1e15."""
        params: dict[str, Any] = {
            "client": self.client,
            "spec_cid": SPEC_CID,
            "max_price": MAX_PRICE,
            "max_units": MAX_UNITS,
            "collateral": COLLATERAL,
        }
        params.update(overrides)
        return JobTerms.create(**params)

    def post(self, *, spec_cid: str = SPEC_CID, **overrides: Any) -> Run:
        """Post a job (client from ``overrides['client']`` or the first client)."""
        terms = self.terms(spec_cid=spec_cid, **overrides)
        tx = self.as_(terms.client).post_job_tx(spec_cid, terms)
        job_id = int(tx.event("JobPosted").args["jobId"])
        return Run(h=self, job_id=job_id, terms=terms, posted=tx)

    def drive(
        self,
        phase: str,
        *,
        results: Sequence[tuple[str, int]] | None = None,
        prices: Sequence[int] | None = None,
        **overrides: Any,
    ) -> Run:
        """A job driven to ``phase``: posted, running, revealing, succeeded or finalized.

        ``results`` gives each main slot's (result CID, usage); default: all GOOD, 100 units.
        With an audit drawn, "revealing" means the audit round is open (Open, Round.AUDIT).
        """
        run = self.post(**overrides)
        if phase == "posted":
            return run
        run.fill(prices=prices)
        if run.terms.bid_window:
            run.close_after_window()
        if phase == "running":
            return run
        results = results or [(GOOD, 100)] * run.terms.k
        for slot, (cid, usage) in enumerate(results):
            run.commit(slot, cid, usage)
        if phase == "revealing":
            return run
        run.reveal_all()
        if phase == "succeeded":
            return run
        assert phase == "finalized", phase
        run.finalize()
        return run


@dataclass
class Answer:
    cid: str
    usage: int
    salt: bytes


@dataclass
class Run:
    """One job on the chain and what its slot holders did."""

    h: Harness
    job_id: int
    terms: JobTerms
    posted: TxResult
    holders: dict[int, str] = field(default_factory=dict)
    answers: dict[int, Answer] = field(default_factory=dict)

    # ------------------------------------------------------------ reads

    @property
    def job(self) -> Job:
        return self.h.job(self.job_id)

    @property
    def status(self) -> JobStatus:
        return self.job.status

    def slot(self, index: int) -> Slot:
        return self.h.slot(self.job_id, index)

    @property
    def client(self) -> str:
        return self.terms.client

    @property
    def escrow(self) -> int:
        return int(self.terms.escrow)

    @property
    def audit_slot(self) -> int:
        return self.terms.k

    @property
    def verifier_slots(self) -> list[int]:
        return list(range(self.terms.k + 1, self.terms.k + 1 + self.terms.verifiers))

    def fresh(self, n: int, *, exclude: Iterable[str] = ()) -> list[str]:
        """``n`` full providers that never held a slot in this job."""
        used = set(self.holders.values()) | set(exclude)
        out = [p for p in self.h.providers if p not in used][:n]
        assert len(out) == n, "not enough fresh providers"
        return out

    # ------------------------------------------------------------ bids

    def bid(self, provider: str, price: int = MAX_PRICE) -> TxResult:
        """Bid and record where the provider landed (from SlotAssigned)."""
        tx = self.h.as_(provider).bid(self.job_id, price, self.terms)
        assigned = tx.event("SlotAssigned").args
        self.holders[int(assigned["slot"])] = to_checksum_address(assigned["provider"])
        return tx

    def fill(self, providers: Sequence[str] | None = None, prices: Sequence[int] | None = None) -> list[TxResult]:
        """Fill every empty slot of the current round with fresh providers: bids for the main
        round, a draw from a pool of exactly ``providers`` for an audit or verification round
        (or for the audit decision, whose draw also seats the auditor)."""
        job = self.job
        drawn = job.round != Round.MAIN or self.draw_pending
        count = {Round.MAIN: self.terms.k, Round.AUDIT: 1, Round.VERIFY: self.terms.verifiers}[job.round]
        count = 1 if self.draw_pending else count - job.filled
        providers = list(providers) if providers is not None else self.fresh(count)
        if drawn:
            assert prices is None, "drawn seats are held at maxPrice"
            return [self.draw(providers)]
        prices = list(prices) if prices is not None else [MAX_PRICE] * len(providers)
        return [self.bid(p, price) for p, price in zip(providers, prices, strict=True)]

    def draw(self, pool: Sequence[str] | None = None, *, sender: str | None = None, distinct: bool = True) -> TxResult:
        """Carry out the pending draw, from a verifier pool of exactly ``pool`` when given
        (the draw is random among pool members). Each seat is a weighted draw, and a member
        drawn for a second seat of its round gains a vote in its slot; with ``distinct`` (and
        a pool) the harness draws again from a later block hash until no member holds two
        votes, so that a pool no bigger than the seats decides who sits, not where. Records
        the drawn holders."""
        moved = self.h.set_pool(pool) if pool is not None else False
        drawer = to_checksum_address(sender or self.h.deployer)
        for _attempt in range(100):
            snapshot = self.h.tester.take_snapshot()
            tx = self.h.as_(drawer).draw(self.job_id, self.terms)
            if moved and not tx.named("SlotAssigned") and tx.named("DrawPending"):
                # The pool changed after the draw was armed, and a draw armed in an earlier
                # epoch re-arms: draw from the new block.
                tx = self.h.as_(drawer).draw(self.job_id, self.terms)
            if pool is None or not distinct or not tx.named("VoteAdded"):
                break
            # Undo it, and draw from the next epoch (the draw re-arms there, on a new hash).
            self.h.tester.revert_to_snapshot(snapshot)
            self.h._markets.pop(drawer, None)  # its sender counted the undone nonces
            self.h.to_epoch_start()
            moved = True
        else:
            raise AssertionError("no draw without a member drawn twice in 100 tries")
        for assigned in tx.named("SlotAssigned"):
            self.holders[int(assigned.args["slot"])] = to_checksum_address(assigned.args["provider"])
        return tx

    @property
    def draw_pending(self) -> bool:
        """Whether the audit decision waits for a draw (main commits all in)."""
        return bool(self.job.flags & FLAG_DRAW_PENDING)

    def close_after_window(self) -> TxResult:
        job = self.job
        window_end = job.deadline - self.terms.fill_timeout + self.terms.bid_window
        self.h.travel_to(window_end)
        return self.h.as_(self.h.deployer).close_bidding(self.job_id, self.terms)

    # ----------------------------------------------------- commit/reveal

    def commit(self, slot: int, cid: str = GOOD, usage: int = 100, *, sender: str | None = None) -> TxResult:
        provider = self.holders[slot]
        salt = self.h.salt()
        self.answers[slot] = Answer(cid, usage, salt)
        value = commitment(self.job_id, provider, cid, usage, salt)
        return self.h.as_(sender or provider).commit(self.job_id, slot, value, self.terms)

    def commit_round(self, cid: str = GOOD, usage: int = 100, slots: Iterable[int] | None = None) -> list[TxResult]:
        """Commit the same answer on every assigned slot of the current round (or ``slots``)."""
        if slots is None:
            slots = [i for i in self._round_slots() if self.slot(i).state == SlotState.ASSIGNED]
        return [self.commit(i, cid, usage) for i in slots]

    def reveal(self, slot: int, *, sender: str | None = None) -> TxResult:
        a = self.answers[slot]
        return self.h.as_(sender or self.holders[slot]).reveal(self.job_id, slot, a.cid, a.usage, a.salt, self.terms)

    def reveal_all(self, slots: Iterable[int] | None = None) -> list[TxResult]:
        """Reveal every committed slot (or ``slots``), in slot order."""
        if slots is None:
            slots = [i for i in sorted(self.answers) if self.slot(i).state == SlotState.COMMITTED]
        out = []
        for i in slots:
            out.append(self.reveal(i))
        return out

    def _round_slots(self) -> list[int]:
        r = self.job.round
        if r == Round.MAIN:
            return list(range(self.terms.k))
        if r == Round.AUDIT:
            return [self.audit_slot]
        return self.verifier_slots

    # ----------------------------------------------------------- exits

    def timeout(self, sender: str | None = None) -> TxResult:
        return self.h.as_(sender or self.h.deployer).timeout(self.job_id, self.terms)

    def past_deadline(self) -> int:
        return self.h.past_deadline(self.job_id)

    def timeout_now(self) -> TxResult:
        """Move past the phase deadline and call timeout."""
        self.past_deadline()
        return self.timeout()

    def finalize(self, *, wait: bool = True, publish: bool = True) -> TxResult:
        """Settle the job past its challenge window, as its daemons would: a sealed accepted
        result is published by its winner (which settles it); else a keeper finalizes."""
        if wait:
            self.past_deadline()
        job = self.job
        if publish and job.status == JobStatus.SUCCEEDED and self.terms.reveals_sealed(job.winner):
            return self.h.as_(self.holders[job.winner]).publish(self.job_id, self.answers[job.winner].cid, self.terms)
        return self.h.as_(self.h.deployer).finalize(self.job_id, self.terms)

    def cancel(self, sender: str | None = None) -> TxResult:
        return self.h.as_(sender or self.client).cancel(self.job_id, self.terms)

    def challenge(self, sender: str | None = None, bond: int | None = None, *, unread: bool = False) -> TxResult:
        return self.h.as_(sender or self.client).challenge(self.job_id, self.terms, bond=bond, unread=unread)


def docker_terms() -> dict[str, Any]:
    """Overrides for a nondeterministic Docker job."""
    return {"executor": Executor.DOCKER, "safety": SafetyClass.NONDESTRUCTIVE}


def destructive_terms() -> dict[str, Any]:
    return {"executor": Executor.DOCKER, "safety": SafetyClass.DESTRUCTIVE}


def events(tx: TxResult | Sequence[TxResult], name: str) -> list[dict[str, Any]]:
    """Decoded arguments of every event ``name`` in one or several transactions."""
    txs = [tx] if isinstance(tx, TxResult) else list(tx)
    return [e.args for t in txs for e in t.events if e.name == name]


def names(tx: TxResult) -> list[str]:
    """Event names of a transaction, in log order."""
    return [e.name for e in tx.events]


def _norm(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        text = value.lower()
        return text[2:] if text.startswith("0x") and len(text) != 42 else text
    return value


def check_error(exc: BaseException, cls: type[BaseException], **expected: Any) -> None:
    """``exc`` is exactly ``cls`` and carries exactly these fields (addresses in any case).

    A field given as a callable is a predicate on the decoded value.
    """
    assert type(exc) is cls, f"expected {cls.__name__}, got {type(exc).__name__}: {exc}"
    got = dict(getattr(exc, "fields", {}))
    assert set(got) == set(expected), f"fields {sorted(got)} != {sorted(expected)}"
    for key, want in expected.items():
        value = got[key]
        assert getattr(exc, key) == value, key
        if callable(want):
            assert want(value), f"{cls.__name__}.{key}={value!r} fails the predicate"
        else:
            assert _norm(value) == _norm(want), f"{cls.__name__}.{key}: {value!r} != {want!r}"


@contextmanager
def reverts(cls: type[BaseException], **fields: Any) -> Iterator[pytest.ExceptionInfo[BaseException]]:
    """Expect the block to raise exactly ``cls`` with exactly these fields."""
    with pytest.raises(cls) as info:
        yield info
    check_error(info.value, cls, **fields)
