"""A stateful property test of the whole market.

Hypothesis drives random sequences of post, bid, commit (honest or wrong), reveal
(sometimes lying), timeouts, finalize, challenges, cancels, orphan cancels, stake
moves and withdrawals by several clients and providers, with time jumping
forward. After every step it reads the market's state and asserts:

- money: the contract's balance equals the escrow of every job not yet terminal,
  plus challenge bonds held, slash pools, every provider's free and locked stake
  and every account's credit;
- locks: each provider's locked stake is exactly the collateral of the slots it
  holds live (Assigned, Committed, Revealed) in any job;
- finality: a Finalized, Failed or Cancelled job never changes again (job record
  and slots), and holds no live slot;
- withdrawals pay exactly the credit shown just before, never more.

The per-step read decodes the contract's storage straight from the EVM state,
driven by the storage layout in the committed artifact (about 10 ms; the same
read through the public views costs about 150 ms on py-evm, which would make
this test several minutes long). At the end of every example the whole read is
compared with what the public views return (getJob, getSlot, getProvider,
creditOf, slashPoolOf, challengeBondOf, in one eth_call through the MarketProbe
test contract), so the fast reader is proven to see what any client sees.

Each example starts from the same snapshot and is reverted at its end.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import eth._utils.headers as eth_headers
import pytest
from chain_harness import (
    BAD,
    COLLATERAL,
    GOOD,
    OTHER,
    SPEC_CID,
    Answer,
    Chain,
    Harness,
    deploy,
    destructive_terms,
    docker_terms,
    in_big_frame,
)
from eth_abi.abi import encode
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chain_scheduler import Capability, JobStatus, JobTerms, SafetyClass, SlotState, commitment, errors
from chain_scheduler._abi import artifact

TEMPLATES: list[dict[str, Any]] = [
    {"k": 1, "m": 1},
    {"k": 3, "m": 2, "verifiers": 2},
    {"k": 3, "m": 2, "verifiers": 2, "audit_bps": 10_000, **docker_terms()},
    {"k": 2, "m": 2, "bid_window": 30},
    {**destructive_terms()},
    {"k": 1, "m": 1, "verifiers": 2, "audit_bps": 10_000, "min_units": 500},
]
TIMING: dict[str, Any] = {"fill_timeout": 400, "exec_timeout": 400, "reveal_window": 300, "challenge_window": 200}
FLAG_VERIFY_OPENED = 4
FLAG_DRAW_PENDING = 64
LIVE = (SlotState.ASSIGNED, SlotState.COMMITTED, SlotState.REVEALED)
N_PROVIDERS = 7  # the ones that bid; every registered provider's stake is checked


def _slot_end(terms: JobTerms) -> int:
    """One past the highest slot index: main 0..k-1, audit k (reserved), verifiers k+1..k+verifiers."""
    return terms.k + 1 + terms.verifiers


@dataclass
class Tracked:
    """What the machine knows about one job it posted."""

    job_id: int
    terms: JobTerms
    answers: dict[int, Answer] = field(default_factory=dict)


@dataclass(frozen=True)
class SlotView:
    provider: str
    price: int
    state: SlotState
    sealed: int
    votes: int


@dataclass
class View:
    """The market's state: each job's record (9 fields, getJob order) and slots, money held."""

    jobs: dict[int, tuple[int, ...]]
    slots: dict[int, list[SlotView]]
    bonds: dict[int, int]
    pools: dict[int, int]
    stakes: dict[str, tuple[int, int]]
    credits: dict[str, int]

    def status(self, job_id: int) -> JobStatus:
        return JobStatus(self.jobs[job_id][1])

    def deadline(self, job_id: int) -> int:
        return self.jobs[job_id][8]


class StorageReader:
    """Reads the market's storage from the py-evm state, by the artifact's storage layout."""

    def __init__(self, chain: Chain) -> None:
        self.backend = chain.tester.backend
        self.address = to_canonical_address(chain.market.address)
        layout = artifact()["storageLayout"]
        self.types: dict[str, Any] = layout["types"]
        self.vars = {v["label"]: v for v in layout["storage"]}
        self.state: Any = None

    def refresh(self) -> None:
        chain = self.backend.chain
        self.state = chain.get_vm(chain.get_canonical_head()).state

    def balance(self) -> int:
        return int(self.state.get_balance(self.address))

    def _slot(self, var: str, *keys: Any) -> tuple[int, str]:
        slot, typ = int(self.vars[var]["slot"]), self.vars[var]["type"]
        for key in keys:
            info = self.types[typ]
            key_type = "address" if info["key"] == "t_address" else "uint256"
            slot = int.from_bytes(keccak(encode([key_type, "uint256"], [key, slot])), "big")
            typ = info["value"]
        return slot, typ

    def _word(self, slot: int) -> int:
        return int(self.state.get_storage(self.address, slot))

    def read(self, var: str, *keys: Any) -> dict[str, int] | int:
        """A struct as {member: value}, or a plain value."""
        slot, typ = self._slot(var, *keys)
        members = self.types[typ].get("members")
        if members is None:
            return self._word(slot)
        words: dict[int, int] = {}
        out = {}
        for m in members:
            offset = int(m["slot"])
            if offset not in words:
                words[offset] = self._word(slot + offset)
            size = int(self.types[m["type"]]["numberOfBytes"])
            out[m["label"]] = (words[offset] >> (8 * m["offset"])) & ((1 << (8 * size)) - 1)
        return out


JOB_FIELDS = ("termsDigest", "status", "round", "filled", "committed", "revealed", "winner", "flags", "deadline")


SEEN: Counter[str] = Counter()


def _note(what: str) -> None:
    SEEN[what] += 1
    event(what)


class _Recorded:
    """A Market whose transactions count their events and reverts (SEEN, hypothesis statistics)."""

    def __init__(self, market: Any) -> None:
        self._market = market

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._market, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = method(*args, **kwargs)
            except errors.ContractError as exc:
                _note(f"{name} reverted: {exc.error_name}")
                raise
            for e in getattr(result, "events", ()):
                _note(e.name)
            return result

        return call


class MarketMachine(RuleBasedStateMachine):
    def __init__(self, chain: Chain, probe: Any) -> None:
        super().__init__()
        self.chain = chain
        self.probe = probe
        self.snapshot = chain.tester.take_snapshot()
        # Reverting rebuilds the pending block from the head with the test's clock (see
        # test_market_invariants): the one left by earlier tests bears the wall clock, and
        # the first example's blocks would hash differently from its replays.
        chain.tester.revert_to_snapshot(self.snapshot)
        chain.market._terms.clear()
        self.h = Harness(chain)
        self.clients = chain.clients
        self.providers = chain.providers[:N_PROVIDERS]
        self.registered = [*chain.providers, chain.wasm_only, chain.docker_only]
        self.accounts = list(chain.accounts)
        self.jobs: list[Tracked] = []
        self.frozen: dict[int, tuple[Any, ...]] = {}
        self.reader = StorageReader(chain)
        # The bidders are the verifier pool too: drawn seats go to them (never to a job's holders).
        self.h.set_pool(self.providers)
        self.view = self._read()

    def teardown(self) -> None:
        try:
            # The fast storage reader must agree with the public views.
            assert self._read() == self._read_views()
        finally:
            self.chain.tester.revert_to_snapshot(self.snapshot)
            self.chain.market._terms.clear()

    # ------------------------------------------------------------------ reads

    def _read(self) -> View:
        r = self.reader
        r.refresh()
        jobs: dict[int, tuple[int, ...]] = {}
        slots: dict[int, list[SlotView]] = {}
        bonds: dict[int, int] = {}
        pools: dict[int, int] = {}
        for t in self.jobs:
            job = r.read("_jobs", t.job_id)
            assert isinstance(job, dict)
            # bytes20 is left-aligned in its word, as getJob returns it.
            job["termsDigest"] <<= 96
            jobs[t.job_id] = tuple(job[f] for f in JOB_FIELDS)
            slots[t.job_id] = []
            for i in range(_slot_end(t.terms)):
                slot = r.read("_slots", t.job_id, i)
                assert isinstance(slot, dict)
                sealed = r.read("_sealed", t.job_id, i)
                provider = to_checksum_address(slot["provider"].to_bytes(20, "big"))
                slots[t.job_id].append(
                    SlotView(provider, slot["price"], SlotState(slot["state"]), int(sealed), 1 + slot["extraVotes"])  # type: ignore[arg-type,operator]
                )
            bonds[t.job_id] = r.read("_challenges", t.job_id)["bond"]  # type: ignore[index]
            pools[t.job_id] = int(r.read("_slashPool", t.job_id))  # type: ignore[arg-type]
        stakes = {}
        for p in self.registered:
            record = r.read("_providers", p)
            assert isinstance(record, dict)
            stakes[p] = (record["free"], record["locked"])
        credits = {}
        for a in self.accounts:
            stored = int(r.read("_credits", a))  # type: ignore[arg-type]
            credits[a] = stored - 1 if stored else 0
        return View(jobs, slots, bonds, pools, stakes, credits)

    def _read_views(self) -> View:
        """The same through the public views, in one eth_call through MarketProbe."""
        ids = [t.job_id for t in self.jobs]
        counts = [_slot_end(t.terms) for t in self.jobs]
        out = self.probe.functions.read(self.h.market.address, ids, counts, self.registered, self.accounts).call()
        n, at = len(ids), 0
        jobs = {}
        for job_id in ids:
            jobs[job_id] = tuple(out[at : at + 9])
            at += 9
        slots: dict[int, list[SlotView]] = {}
        for job_id, count in zip(ids, counts, strict=True):
            slots[job_id] = []
            for _ in range(count):
                w = out[at : at + 5]  # provider, price, state, extraVotes, sealed
                at += 5
                provider = to_checksum_address(w[0].to_bytes(20, "big"))
                slots[job_id].append(SlotView(provider, w[1], SlotState(w[2]), w[4], 1 + w[3]))
        bonds = dict(zip(ids, out[at : at + n], strict=True))
        at += n
        pools = dict(zip(ids, out[at : at + n], strict=True))
        at += n
        stakes = {}
        for p in self.registered:
            stakes[p] = (out[at], out[at + 1])
            at += 2
        credits = dict(zip(self.accounts, out[at : at + len(self.accounts)], strict=True))
        assert at + len(self.accounts) == len(out)
        return View(jobs, slots, bonds, pools, stakes, credits)

    def _as(self, account: str) -> Any:
        return _Recorded(self.h.as_(account))

    def _with_status(self, *statuses: JobStatus) -> list[Tracked]:
        return [t for t in self.jobs if self.view.status(t.job_id) in statuses]

    def _biddable(self) -> list[Tracked]:
        # Open jobs, except children whose parents are not finalized yet (the unit tests
        # cover that refusal; here it would only waste steps).
        done = {t.job_id for t in self._with_status(JobStatus.FINALIZED)}
        return [
            t
            for t in self._with_status(JobStatus.OPEN)
            if self.view.jobs[t.job_id][2] == 0 and set(t.terms.parents) <= done
        ]

    def _drawable(self) -> list[Tracked]:
        # Audit and verification rounds waiting for seats, and audit decisions.
        return [
            t
            for t in self._live()
            if (self.view.status(t.job_id) == JobStatus.OPEN and self.view.jobs[t.job_id][2] != 0)
            or (self.view.status(t.job_id) == JobStatus.RUNNING and self.view.jobs[t.job_id][7] & FLAG_DRAW_PENDING)
        ]

    def _live(self) -> list[Tracked]:
        return [t for t in self.jobs if not self.view.status(t.job_id).terminal]

    def _challengeable(self) -> list[Tracked]:
        return [
            t
            for t in self._with_status(JobStatus.SUCCEEDED)
            if t.terms.verifiers and not self.view.jobs[t.job_id][7] & FLAG_VERIFY_OPENED
        ]

    def _cancellable(self) -> list[Tracked]:
        # Open in the main round with nothing committed: cancel may work (or say NotCancellable).
        return [
            t
            for t in self._with_status(JobStatus.OPEN)
            if self.view.jobs[t.job_id][2] == 0 and self.view.jobs[t.job_id][4] == 0
        ]

    def _timeout_targets(self) -> list[Tracked]:
        # Running and Revealing jobs, and Open ones with a bid or in a verification round
        # (an empty job in its first round just fails: cancel covers that ground).
        live = (JobStatus.OPEN, JobStatus.RUNNING, JobStatus.REVEALING)
        return [
            t
            for t in self._with_status(*live)
            if self.view.jobs[t.job_id][1] != JobStatus.OPEN
            or self.view.jobs[t.job_id][2] != 0
            or self.view.jobs[t.job_id][3] != 0
        ]

    def _orphans(self) -> list[Tracked]:
        dead = (JobStatus.FAILED, JobStatus.CANCELLED)
        return [t for t in self._cancellable() if t.terms.parents and self.view.status(t.terms.parents[0]) in dead]

    def _owed(self) -> list[str]:
        return [a for a in (*self.providers, *self.clients) if self.view.credits[a]]

    # ------------------------------------------------------------------ rules
    # Rules act in bulk (several bids, commits or reveals at once) so that random
    # sequences of ~30 steps carry jobs through whole lifecycles.

    @initialize(template=st.integers(0, len(TEMPLATES) - 1), client=st.integers(0, 2))
    def first_job(self, template: int, client: int) -> None:
        self.post(template, client, False, 0)

    @precondition(lambda self: len(self._live()) < 3)
    @rule(
        template=st.integers(0, len(TEMPLATES) - 1),
        client=st.integers(0, 2),
        with_parent=st.sampled_from([False, False, True]),
        extra=st.integers(0, 1_000),
    )
    def post(self, template: int, client: int, with_parent: bool, extra: int) -> None:
        parents = (self.jobs[-1].job_id,) if with_parent and self.jobs else ()
        terms = JobTerms.create(
            client=self.clients[client],
            spec_cid=SPEC_CID,
            max_price=10,
            max_units=1_000,
            collateral=COLLATERAL + extra,
            parents=parents,
            **TIMING,
            **TEMPLATES[template],
        )
        tx = self._as(terms.client).post_job_tx(SPEC_CID, terms)
        self.jobs.append(Tracked(int(tx.event("JobPosted").args["jobId"]), terms))

    @precondition(lambda self: self._biddable())
    @rule(data=st.data())
    def bid(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._biddable()))
        held = {s.provider for s in self.view.slots[job.job_id]}
        candidates = [p for p in self.providers if p not in held]
        if not candidates:
            return
        # Hypothesis favours the first choice: usually every remaining slot, sometimes one.
        if data.draw(st.sampled_from(["fill", "one"])) == "one":
            candidates = [data.draw(st.sampled_from(candidates))]
        for provider in data.draw(st.permutations(candidates)):
            price = data.draw(st.integers(1, 10))
            try:
                tx = self._as(provider).bid(job.job_id, price, job.terms)
            except (
                errors.DeadlinePassed,
                errors.ParentNotFinalized,
                errors.BidNotCompetitive,
                errors.Unbonding,
                errors.WrongStatus,
            ):
                return
            if tx.named("BiddingClosed"):
                return

    @precondition(lambda self: self._drawable())
    @rule(data=st.data())
    def draw(self, data: st.DataObject) -> None:
        """Carry out a pending draw, one seat at a time from a pool of one fresh provider.

        Hypothesis replays rule sequences and must see the same outcomes, but a draw is random
        (a block hash). With one eligible member per seat the outcome is fixed: who sits where
        is the same on every replay. The unit tests cover the draw's odds; this machine checks
        the money and the pool through every path a draw opens.
        """
        job = data.draw(st.sampled_from(self._drawable()))
        client = job.terms.client
        for _ in range(job.terms.verifiers + 1):
            view = self.h.market.job(job.job_id)
            pending = view.status == JobStatus.RUNNING and view.flags & FLAG_DRAW_PENDING
            if not pending and (view.status != JobStatus.OPEN or view.round == 0):
                return
            holders = {s.provider for s in self.h.market.slots(job.job_id, job.terms)}
            fresh = [p for p in self.providers if p not in holders and p != client][:1]
            self.h.set_pool(fresh)  # mines on to the next epoch, whose snapshot has the new pool
            for _attempt in range(3):  # a draw armed in an earlier epoch re-arms, maybe twice
                try:
                    tx = self._as(self.h.deployer).draw(job.job_id, job.terms)
                except (errors.DeadlinePassed, errors.NoDraw, errors.WrongStatus):
                    return
                for e in tx.named("SlotAssigned"):
                    drawn = to_checksum_address(e.args["provider"])
                    assert drawn != client and drawn not in holders, f"job {job.job_id}: {drawn} drawn twice"
                if tx.named("SlotAssigned") or not tx.named("DrawPending"):
                    break
            if not tx.named("SlotAssigned"):
                return  # nobody eligible (unbonding, stake locked): the round waits for its deadline

    @precondition(lambda self: self._with_status(JobStatus.OPEN))
    @rule(data=st.data())
    def withdraw_bid(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._with_status(JobStatus.OPEN)))
        held = [i for i, s in enumerate(self.view.slots[job.job_id]) if s.state == SlotState.ASSIGNED]
        if not held:
            return
        index = data.draw(st.sampled_from(held))
        holder = self.view.slots[job.job_id][index].provider
        with contextlib.suppress(errors.BidFinal):  # a full round, or one after a reopening
            self._as(holder).withdraw_bid(job.job_id, index, job.terms)

    @precondition(lambda self: self._with_status(JobStatus.RUNNING))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._with_status(JobStatus.RUNNING)))
        slots = [i for i, s in enumerate(self.view.slots[job.job_id]) if s.state == SlotState.ASSIGNED]
        if slots and data.draw(st.sampled_from(["all", "one"])) == "one":
            slots = [data.draw(st.sampled_from(slots))]
        for index in slots:
            holder = self.view.slots[job.job_id][index].provider
            cid = data.draw(st.sampled_from([GOOD, GOOD, GOOD, GOOD, BAD, OTHER]))
            if job.terms.safety == SafetyClass.DETERMINISTIC:
                usage = 100 if cid == GOOD else data.draw(st.sampled_from([100, 7]))
            else:
                usage = data.draw(st.sampled_from([90, 100, 120, 5_000]))
            salt = self.h.salt()
            value = commitment(job.job_id, holder, cid, usage, salt)
            try:
                tx = self._as(holder).commit(job.job_id, index, value, job.terms)
            except (errors.DeadlinePassed, errors.WrongStatus):
                return
            job.answers[index] = Answer(cid, usage, salt)
            if tx.named("CommitsClosed"):
                return

    @precondition(lambda self: self._with_status(JobStatus.REVEALING))
    @rule(data=st.data())
    def reveal(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._with_status(JobStatus.REVEALING)))
        slots = [i for i, s in enumerate(self.view.slots[job.job_id]) if s.state == SlotState.COMMITTED]
        if slots and data.draw(st.sampled_from(["all", "one"])) == "one":
            slots = [data.draw(st.sampled_from(slots))]
        for index in slots:
            a = job.answers[index]
            market = self._as(self.view.slots[job.job_id][index].provider)
            if data.draw(st.sampled_from([False] * 9 + [True])):
                # A lie about the usage never opens the commitment.
                try:
                    market.reveal(job.job_id, index, a.cid, a.usage + 1, a.salt, job.terms)
                except (errors.CommitmentMismatch, errors.DeadlinePassed):
                    continue
                raise AssertionError("a reveal of another usage than committed was accepted")
            try:
                tx = market.reveal(job.job_id, index, a.cid, a.usage, a.salt, job.terms)
            except (errors.DeadlinePassed, errors.WrongStatus):
                return
            if tx.named("JobSucceeded") or tx.named("JobFailed") or tx.named("RoundOpened"):
                return

    @precondition(lambda self: self._timeout_targets())
    @rule(data=st.data())
    def timeout(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._timeout_targets()))
        self.h.travel_to(self.view.deadline(job.job_id))
        # Every live phase has a permissionless exit once its deadline passed: this must not revert.
        self._as(self.h.deployer).timeout(job.job_id, job.terms)

    @precondition(lambda self: self._with_status(JobStatus.SUCCEEDED))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._with_status(JobStatus.SUCCEEDED)))
        deadline = self.view.deadline(job.job_id)
        self.h.travel_to(deadline)
        winner = self.view.jobs[job.job_id][6]
        if job.terms.reveals_sealed(winner):
            # A sealed result settles by its publication; unpublished for a reveal window,
            # finalize fails the job and slashes its sealed slots.
            if data.draw(st.booleans()):
                holder = self.view.slots[job.job_id][winner].provider
                self._as(holder).publish(job.job_id, job.answers[winner].cid, job.terms)
                return
            self.h.travel_to(deadline + job.terms.reveal_window)
        self._as(self.h.deployer).finalize(job.job_id, job.terms)

    @precondition(lambda self: self._challengeable())
    @rule(data=st.data())
    def challenge(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._challengeable()))
        with contextlib.suppress(errors.NotChallengeable, errors.DeadlinePassed):
            self._as(job.terms.client).challenge(job.job_id, job.terms)

    @precondition(lambda self: self._cancellable())
    @rule(data=st.data(), by_client=st.booleans())
    def cancel(self, data: st.DataObject, by_client: bool) -> None:
        job = data.draw(st.sampled_from(self._cancellable()))
        sender = job.terms.client if by_client else self.clients[(self.clients.index(job.terms.client) + 1) % 3]
        try:
            self._as(sender).cancel(job.job_id, job.terms)
        except errors.NotCancellable:
            pass
        except errors.NotClient:
            assert not by_client
        else:
            assert by_client

    @precondition(lambda self: self._orphans())
    @rule(data=st.data())
    def cancel_orphan(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._orphans()))
        # Anyone may cancel a child whose parent failed: this must not revert.
        tx = self._as(self.h.deployer).cancel_orphan(job.job_id, 0, job.terms)
        assert tx.named("JobCancelled")

    @precondition(lambda self: self._owed())
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from([*self._owed(), self.h.deployer]))
        credit = int(self.h.market.credit_of(account))
        wallet = self.h.balance(account)
        if credit == 0:
            try:
                self._as(account).withdraw()
            except errors.NothingToWithdraw:
                return
            raise AssertionError("withdraw paid an account with no credit")
        tx = self._as(account).withdraw()
        assert [e.args["amount"] for e in tx.named("Withdrawn")] == [credit]
        assert self.h.balance(account) - wallet + self.h.gas_cost(tx) == credit  # exactly the credit, never more

    @rule(
        action=st.sampled_from(["wait", "add", "unbond", "unstake"]),
        who=st.integers(N_PROVIDERS - 2, N_PROVIDERS - 1),
        seconds=st.integers(1, 60),
    )
    def idle(self, action: str, who: int, seconds: int) -> None:
        """Time passes, or one of the last two providers moves its stake."""
        market = self._as(self.providers[who])
        if action == "wait":
            self.h.advance(seconds)
        elif action == "add":
            market.add_stake(COLLATERAL)
        elif action == "unbond":
            market.begin_unbonding()
        else:
            record = self.reader.read("_providers", self.providers[who])
            assert isinstance(record, dict)
            if record["unbondingAt"] and not record["locked"]:
                self.h.travel_to(record["unbondingAt"])  # a long wait: deadlines pass everywhere
            with contextlib.suppress(errors.StakeLocked):
                market.unstake(COLLATERAL)

    # Hypothesis has no rule weights: these aliases make the lifecycle steps likelier
    # than the disruptions, so more jobs get through to their end.

    @precondition(lambda self: self._biddable())
    @rule(data=st.data())
    def bid_more(self, data: st.DataObject) -> None:
        self.bid(data)

    @precondition(lambda self: self._with_status(JobStatus.RUNNING))
    @rule(data=st.data())
    def commit_more(self, data: st.DataObject) -> None:
        self.commit(data)

    @precondition(lambda self: self._with_status(JobStatus.REVEALING))
    @rule(data=st.data())
    def reveal_more(self, data: st.DataObject) -> None:
        self.reveal(data)

    # ------------------------------------------------------------- invariants

    @invariant()
    def market_is_consistent(self) -> None:
        self.view = v = self._read()
        # Money: every wei the contract holds is owed to someone, exactly.
        escrow = sum(int(t.terms.escrow) for t in self.jobs if not v.status(t.job_id).terminal)
        stake = sum(free + locked for free, locked in v.stakes.values())
        owed = escrow + sum(v.bonds.values()) + sum(v.pools.values()) + stake + sum(v.credits.values())
        assert self.reader.balance() == owed

        # Finality: a terminal job never changes again and holds nothing.
        for t in self.jobs:
            record = (v.jobs[t.job_id], tuple((s.provider, s.price, s.state, s.sealed) for s in v.slots[t.job_id]))
            if t.job_id in self.frozen:
                assert record == self.frozen[t.job_id], f"terminal job {t.job_id} changed"
            elif v.status(t.job_id).terminal:
                self.frozen[t.job_id] = record
                assert v.bonds[t.job_id] == 0 and v.pools[t.job_id] == 0
                assert not [s for s in v.slots[t.job_id] if s.state in LIVE], f"job {t.job_id} holds live slots"

        # Locks: locked stake is exactly the collateral of live slots (one per vote).
        expected = dict.fromkeys(self.registered, 0)
        for t in self.jobs:
            for s in v.slots[t.job_id]:
                if s.state in LIVE:
                    expected[s.provider] += t.terms.collateral * s.votes
        assert {p: locked for p, (_, locked) in v.stakes.items()} == expected

        # The verifier pool: each member weighs its whole stake while opted in and not
        # unbonding, and the tree's total is the sum of its members' weights.
        weights = 0
        for p in self.registered:
            record = self.reader.read("_providers", p)
            assert isinstance(record, dict)
            opted = record["capabilities"] & Capability.VERIFIER and not record["unbondingAt"]
            assert record["poolWeight"] == (record["free"] + record["locked"] if opted else 0), p
            weights += record["poolWeight"]
        assert self.h.market.pool()[1] == weights


def test_market_invariants(
    chain: Chain, test_contracts: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Draws take their randomness from block hashes, and py-evm stamps a new block with the wall
    # clock: hypothesis replays a sequence of rules and must see the same draws. Blocks are
    # stamped one second after their parent instead (time travel still moves the clock).
    monkeypatch.setattr(eth_headers, "eth_now", lambda: 0)
    SEEN.clear()
    outer = chain.tester.take_snapshot()
    try:
        probe = deploy(chain.w3, test_contracts["MarketProbe"], sender=chain.accounts[-1])
        in_big_frame(
            run_state_machine_as_test,
            lambda: MarketMachine(chain, probe),
            settings=settings(
                # Shrinking a long failing sequence takes minutes on py-evm: opt in with
                # CHAIN_SCHEDULER_SHRINK=1 when debugging a failure.
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
                + ([Phase.shrink] if os.environ.get("CHAIN_SCHEDULER_SHRINK") else []),
                max_examples=25,
                stateful_step_count=40,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        chain.tester.revert_to_snapshot(outer)
        chain.market._terms.clear()
    print("events and reverts seen:", sorted(SEEN.items()))
    # A machine that never got anywhere would pass vacuously: it must have run whole lifecycles.
    for name in (
        "BiddingClosed",
        "ResultRevealed",
        "JobSucceeded",
        "JobFinalized",
        "SlotSlashed",
        "Withdrawn",
        "DrawPending",
    ):
        assert SEEN[name] > 0, f"no {name} in any example: the machine is not reaching that far"
    assert SEEN["JobFailed"] + SEEN["JobCancelled"] > 0
