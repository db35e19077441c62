"""The provider daemon: watch the market, bid, run, commit, reveal, keep jobs moving, collect pay.

One :class:`ProviderNode` serves one provider account. Its loop thread does, on
every tick:

1. **watch**: read the next block range of market events from the persisted
   cursor (:class:`chain_scheduler.EventWatcher` over :class:`NodeState`);
2. **decide and bid**: a posted job, an audit or verification round, or a main
   slot reopened after a missed commit is a chance to bid; the job is re-read
   from the contract (events are hints, the contract is the truth) and
   :func:`compute_node.decide` says whether to take it;
3. **reconcile** every job the node is in against the contract: when bidding has
   closed, run the job in a worker thread (at most ``capacity`` at once) through
   the :class:`JobRunner`, which fetches inputs, executes, stores the outputs and
   the receipt; the result *and the salt* are written to the state file before
   the commit is sent; once commits close with a reveal deadline, reveal;
4. **keep**: as keeper, call ``timeout`` when a phase deadline of one of its jobs
   has passed and ``finalize`` once its challenge window is over;
5. **withdraw** its credit once it reaches a threshold.

Durability: the cursor, the jobs and their salts and results, and every signed
transaction live in :class:`NodeState` (SQLite, fsynced) before the step that
needs them, so ``kill -9`` at any point loses nothing; on restart the pending
transactions are finished (:meth:`TxSender.resume`) and each job in flight
continues from its record (a node killed between commit and reveal reveals).

Only the loop thread sends transactions; worker threads only execute and record.

An RPC node that stops answering puts the node in :attr:`NodeStatus.DEGRADED`:
it logs once per outage, retries with exponential backoff, and carries on when
the node returns. Shutdown is graceful: :meth:`ProviderNode.request_stop` stops
bidding, lets running jobs finish (and commits their results), then the loop
ends; :meth:`ProviderNode.abort` ends it at once (the state file still holds
everything needed to resume).

Example:
    >>> node = ProviderNode(market=market, sender=sender, state=NodeState(path),
    ...                     runner=runner, policy=NodePolicy(price=2, capacity=2))
    >>> node.start()
    >>> ...
    >>> node.stop(timeout=30)
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from chain_scheduler import (
    Capability,
    EventWatcher,
    JobId,
    JobStatus,
    JobTerms,
    Market,
    MarketEvent,
    Provider,
    Round,
    SlotState,
    TxSender,
    commitment,
    decode_revert,
    errors,
    hash_commitment,
    result_hash,
)
from chain_scheduler import Job as ChainJob
from chain_scheduler import Slot as ChainSlot
from compute_node._behaviour import Behaviour
from compute_node._policy import NodePolicy, decide, decide_failure
from compute_node._runner import JobRunner, RunOutcome, Verdict
from compute_node._state import JobPhase, JobRecord, NodeState, StateError, Watch, WatchKind
from compute_node.executors._docker import DockerExecutorError
from storage import BackendError

logger = logging.getLogger(__name__)

#: Chain ids of local development chains (anvil, hardhat, ganache): the only chains
#: on which a node may run a cheating behaviour.
DEVNET_CHAIN_IDS = frozenset({31337, 1337})

#: Blocks read again when the chain turns out to have replaced the head the node last saw.
_REORG_DEPTH = 256
#: Most times the node leaves one job's unfilled round before it gives the job up.
_MAX_LEAVES = 3
#: Seconds a keeper waits past a deadline of a job it is not in, plus up to this much again
#: (spread by address), so the job's own providers go first and keepers rarely race.
_KEEPER_GRACE = 2.0
#: Job statuses that have a phase deadline a keeper may enforce with ``timeout``.
_TIMED = frozenset({JobStatus.OPEN, JobStatus.RUNNING, JobStatus.REVEALING})
#: Bit 6 of a job's flags: the audit decision waits for a draw.
FLAG_DRAW_PENDING = 64


class NodeStatus(enum.StrEnum):
    """What the node is doing, for logs and status displays."""

    CREATED = "created"
    STARTING = "starting"  # connecting to the chain, resuming pending transactions
    RUNNING = "running"
    DEGRADED = "degraded"  # the RPC node does not answer; retrying with backoff
    DRAINING = "draining"  # stop requested: no new bids, running jobs finish
    STOPPED = "stopped"
    FAILED = "failed"  # a configuration the node refuses to run with; see `error`


class NodeRefused(Exception):
    """The node will not run with this configuration on this chain (it stops; not retried)."""


@dataclass(frozen=True, slots=True)
class _Posted:
    """What a job's ``JobPosted`` event tells the node."""

    terms: JobTerms
    spec_cid: str


class _ChainClock:
    """The chain's time: the latest block's timestamp plus the wall time since it was first seen.

    A devnet mines only on transactions, so the latest timestamp alone can lag far
    behind the time the next block (our transaction) will carry.
    """

    def __init__(self) -> None:
        self._number = -1
        self._timestamp = 0
        self._seen = 0.0

    def observe(self, number: int, timestamp: int) -> None:
        if number != self._number:
            self._number, self._timestamp, self._seen = number, timestamp, time.monotonic()

    def now(self) -> int:
        return self._timestamp + int(time.monotonic() - self._seen)


class ProviderNode:
    """The provider daemon for one account (see the module docstring for the loop).

    Args:
        market: The contract binding, sending as the provider through ``sender``.
        sender: The provider's transaction sender, journalling into ``state``.
        state: The node's durable state (opened by :meth:`start`).
        runner: Fetches, executes, stores and meters a job.
        policy: What the node bids for and at what price.
        behaviour: How the node behaves; anything but honest needs ``devnet=True``
            and a devnet chain id (31337, 1337).
        devnet: The operator says this is a devnet (``compute-node run --devnet``).
        poll_interval: Seconds between ticks when the node is caught up.
        confirmations: Blocks the watcher stays behind the head.
        start_block: First block to watch on a fresh state (None: ``lookback``
            blocks before the head when the node first connects).
        lookback: Blocks before the head a fresh node starts watching from.
        withdraw_threshold: Withdraw the credit once it reaches this many wei (None: never).
        keeper: Call ``timeout`` and ``finalize`` for the node's jobs.
        max_backoff: Longest pause between retries while the RPC node is down.
        keeper_retry: Seconds before retrying a refused keeper or job transaction.
        fill_wait: Seconds the node holds a slot of a round that has not filled before it
            leaves (``withdrawBid``) and frees the collateral; it bids again when another
            provider joins.

    Example:
        >>> node = ProviderNode(market=market, sender=sender, state=state, runner=runner,
        ...                     policy=NodePolicy(price=2))
        >>> node.start(); node.join()
    """

    def __init__(
        self,
        *,
        market: Market,
        sender: TxSender,
        state: NodeState,
        runner: JobRunner,
        policy: NodePolicy,
        behaviour: Behaviour = Behaviour.HONEST,
        devnet: bool = False,
        poll_interval: float = 1.0,
        confirmations: int = 0,
        start_block: int | None = None,
        lookback: int = 1000,
        withdraw_threshold: int | None = 10**16,
        keeper: bool = True,
        max_backoff: float = 30.0,
        keeper_retry: float = 2.0,
        fill_wait: float = 10.0,
    ) -> None:
        behaviour = Behaviour(behaviour)
        if behaviour != Behaviour.HONEST and not devnet:
            raise ValueError(
                f"Behaviour {behaviour.value!r} cheats and is for devnets only: pass devnet=True "
                "(compute-node run --devnet) on a local chain, or run honest."
            )
        if market.account != sender.address:
            raise ValueError(f"The market sends as {market.account} but the sender signs for {sender.address}.")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.market = market
        self.sender = sender
        self.state = state
        self.runner = runner
        self.policy = policy
        self.behaviour = behaviour
        self.devnet = devnet
        self.poll_interval = poll_interval
        self.confirmations = confirmations
        self.start_block = start_block
        self.lookback = lookback
        self.withdraw_threshold = withdraw_threshold
        self.keeper = keeper
        self.max_backoff = max_backoff
        self.keeper_retry = keeper_retry
        self.fill_wait = fill_wait
        self.address = to_checksum_address(market.account)

        self.status = NodeStatus.CREATED
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()
        self._records: dict[int, JobRecord] = {}
        self._posted: dict[int, _Posted] = {}
        self._workers: dict[int, threading.Thread] = {}
        # Jobs to come back to without a slot in them (bid later, parents, left, keep): a
        # mirror of the state file's table, whose changes are written before the cursor moves.
        self._watches: dict[tuple[int, WatchKind], Watch] = {}
        self._watch_dirty: set[tuple[int, WatchKind]] = set()
        # Jobs whose bidding closed while every execution slot was busy: they run in deadline order.
        self._queued: set[int] = set()
        self._providers: set[str] = set()
        self._eligible_cache: dict[str, tuple[float, Any]] = {}
        self._hold: dict[tuple[int, str], float] = {}
        # Which jobs a tick re-reads from the contract: those an event, our own transaction or a
        # finished run touched, those whose phase deadline (chain time) or retry hold (monotonic)
        # has come, and every job at each sweep (a safety net). Re-reading every job at every
        # tick cost a third of a daemon's CPU under load (bench/e2e.py).
        self._dirty: set[int] = set()
        self._deadline_of: dict[int, int] = {}
        self._retry_at: dict[int, float] = {}
        self._next_sweep = 0.0
        self._said: set[tuple[int, str]] = set()
        #: Whether the node put itself in the verifier pool (it leaves when it stops).
        self._in_pool = False
        #: When the node first saw each armed draw it may carry out (monotonic seconds).
        self._draw_seen: dict[int, float] = {}
        self._clock = _ChainClock()
        self._head: tuple[int, bytes] | None = None  # the last head known to descend from the ones before
        self._next_fork_check = 0.0
        self._watcher: EventWatcher | None = None
        self._connected = False
        self._needs_resume = True
        self._check_credit = True
        self._next_credit_check = 0.0
        self._pruned_at = 0
        self._registered_warned = False

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the state file and start the loop thread (which connects, with retries)."""
        if self._thread is not None:
            raise RuntimeError("ProviderNode.start() was already called; make a new node to run again.")
        self.state.open()
        with self._lock:
            self._records = {int(r.job_id): r for r in self.state.in_flight()}
        self._watches = {(int(w.job_id), w.kind): w for w in self.state.watched()}
        if self._records:
            logger.info("resuming %d job(s) in flight: %s", len(self._records), sorted(self._records))
        self.status = NodeStatus.STARTING
        self._thread = threading.Thread(target=self._run, name=f"provider-{self.address[:10]}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop bidding, let running jobs finish and commit, then end the loop (returns at once)."""
        if not self._stopping.is_set():
            logger.info("stop requested: no new bids; finishing %d running job(s)", self._executing())
        self._stopping.set()
        self._wake.set()

    def abort(self) -> None:
        """End the loop after its current step; running executions are abandoned (they resume on restart)."""
        self._stopping.set()
        self._abort.set()
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop gracefully, waiting up to ``timeout`` seconds, then abort.

        Returns:
            True when the loop has ended.
        """
        self.request_stop()
        if self.join(timeout):
            return True
        logger.warning("running jobs did not finish within %.0fs; abandoning them (they resume on restart)", timeout)
        self.abort()
        return self.join(10.0)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def jobs(self) -> list[JobRecord]:
        """The jobs in flight, as the node last recorded them."""
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.job_id)

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        backoff = self.poll_interval
        outage_since: float | None = None
        try:
            while not self._abort.is_set():
                drained = self._stopping.is_set() and self._executing() == 0
                try:
                    caught_up = self._tick()
                except NodeRefused as exc:
                    self.error = str(exc)
                    self.status = NodeStatus.FAILED
                    logger.error("%s", exc)
                    return
                except (errors.ChainUnavailable, OSError) as exc:
                    self._needs_resume = True
                    if drained:
                        logger.warning("stopping while the RPC node is unavailable (%s)", _one_line(exc))
                        break
                    if outage_since is None:
                        outage_since = time.monotonic()
                        self.status = NodeStatus.DEGRADED
                        logger.warning(
                            "RPC node %s unavailable (%s); retrying with backoff up to %.0fs",
                            _endpoint(self.market), _one_line(exc), self.max_backoff,
                        )  # fmt: skip
                    else:
                        logger.info("RPC node still unavailable after %.0fs; next try in %.1fs",
                                    time.monotonic() - outage_since, backoff)  # fmt: skip
                    self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                except StateError:
                    raise
                except Exception:
                    logger.exception("unexpected error in the node loop; retrying in %.1fs", backoff)
                    self._pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if outage_since is not None:
                    logger.warning("RPC node back after %.0fs", time.monotonic() - outage_since)
                    outage_since = None
                backoff = self.poll_interval
                self.status = NodeStatus.DRAINING if self._stopping.is_set() else NodeStatus.RUNNING
                if drained:
                    break
                if caught_up:
                    self._pause(self.poll_interval)
        except Exception as exc:
            self.error = f"{exc.__class__.__name__}: {exc}"
            self.status = NodeStatus.FAILED
            logger.exception("node loop failed")
            return
        self._finish()

    def _pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _finish(self) -> None:
        aborted = self._abort.is_set()
        in_flight = self.jobs()
        try:
            pending = self.state.pending()
        except StateError:
            pending = []
        if pending and not aborted:
            logger.info("flushing %d pending transaction(s) before stopping", len(pending))
            try:
                self.sender.resume()
                pending = self.state.pending()
            except errors.ChainSchedulerError as exc:
                logger.warning("could not flush pending transactions (%s); they are sent on restart", exc)
        self.status = NodeStatus.STOPPED
        logger.info(
            "node stopped%s: %d job(s) in flight resume on restart, %d pending transaction(s) journalled",
            " at once" if aborted else "", len(in_flight), len(pending),
        )  # fmt: skip

    def _tick(self) -> bool:
        """One pass: connect if needed, read events, reconcile jobs, withdraw. True when caught up."""
        if not self._connected:
            self._connect()
        if self._stopping.is_set() and self._in_pool:
            self._set_pool(self.market.provider(self.address), join=False)
        if self._needs_resume:
            finished = self.sender.resume()
            for tx, receipt in finished:
                logger.info("resumed %s: %s", tx.label, "mined" if receipt is not None else "dropped")
            self._needs_resume = False
        w3 = self.market.w3
        latest = self._rpc(lambda: w3.eth.get_block("latest"))
        self._clock.observe(int(latest["number"]), int(latest["timestamp"]))
        self._check_fork(latest)
        assert self._watcher is not None
        caught_up = True
        if not self._stopping.is_set():
            # While stopping no event is read, so the cursor stays put and a restart sees them.
            batch = self._watcher.poll(head=int(latest["number"]))
            if batch.rewound_from is not None:
                self._on_rewind(batch.rewound_from, int(latest["number"]))
            for event in batch.events:
                self._on_event(event)
            self._flush_watches()  # durable before the cursor passes the events that made them
            batch.commit()
            self._prune(batch.to_block)
            self._retry_deferred()
            self._keep_others()
            self._draw_pending(int(latest["number"]))
            self._flush_watches()
            caught_up = batch.caught_up
        for record in self._due_jobs():
            if self._abort.is_set():
                break
            if self._held(int(record.job_id), "reconcile"):
                continue
            try:
                self._reconcile(record)
            except (errors.ChainUnavailable, OSError, NodeRefused, StateError):
                raise
            except errors.ChainSchedulerError as exc:
                logger.warning("job_id=%s: %s", record.job_id, exc)
            except Exception:
                # One job's trouble must not stall the others: log it, look again later.
                self._hold[(int(record.job_id), "reconcile")] = time.monotonic() + 30.0
                logger.exception("job_id=%s: unexpected error; looking at the job again in 30s", record.job_id)
        self._maybe_withdraw()
        return caught_up

    def _connect(self) -> None:
        chain_id = int(self._rpc(lambda: self.market.w3.eth.chain_id))
        if self.devnet and chain_id not in DEVNET_CHAIN_IDS:
            raise NodeRefused(
                f"--devnet was given but chain id {chain_id} is not a devnet ({sorted(DEVNET_CHAIN_IDS)}). "
                "Drop --devnet (and any cheating behaviour) to run on this chain."
            )
        code = self._rpc(lambda: self.market.w3.eth.get_code(self.market.address))
        if not code:
            raise NodeRefused(f"No contract at {self.market.address} on chain {chain_id}: check --contract and --rpc.")
        self.sender.start()
        if self._watcher is None:
            start = self.start_block
            if start is None and self.state.load() is None:
                head = int(self._rpc(lambda: self.market.w3.eth.block_number))
                start = max(0, head - self.lookback)
            self._watcher = EventWatcher(
                market=self.market, cursor=self.state, start_block=start or 0, confirmations=self.confirmations
            )
        provider = self.market.provider(self.address)
        if provider.registered:
            self._set_pool(provider, join=Round.VERIFY in self.policy.rounds)
        logger.info(
            "node %s ready on chain %d, contract %s: behaviour %s, price %d, capacity %d, "
            "watching from block %d, stake free %d locked %d%s",
            self.address, chain_id, self.market.address, self.behaviour.value, self.policy.price,
            self.policy.capacity, self._watcher.next_block(), provider.free, provider.locked,
            "" if provider.registered else " (NOT REGISTERED: run compute-node register)",
        )  # fmt: skip
        self._connected = True

    def _set_pool(self, provider: Provider, *, join: bool) -> None:
        """Join or leave the verifier pool (the VERIFIER capability bit). A node joins when it
        starts with --verify and leaves when it begins to stop, so that a node that is not
        running is not drawn for a seat it would miss (and be slashed for)."""
        self._in_pool = join
        if bool(provider.capabilities & Capability.VERIFIER) == join:
            return
        bits = provider.capabilities | Capability.VERIFIER if join else provider.capabilities & ~Capability.VERIFIER
        try:
            self.market.set_capabilities(int(bits))
        except errors.ContractError as exc:
            logger.warning("could not %s the verifier pool: %s", "join" if join else "leave", exc)
            return
        if join:
            logger.info("joined the verifier pool: may be drawn to audit and verify jobs (weight: the whole stake)")
        else:
            logger.info("left the verifier pool: no more audit or verifier seats will be drawn for this node")

    def _rpc(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (ConnectionError, OSError) as exc:
            raise errors.ChainUnavailable(f"{exc.__class__.__name__}: {exc}") from exc

    # ---------------------------------------------------------------- events

    def _on_event(self, event: MarketEvent) -> None:
        job_id = event.job_id
        if job_id is not None and job_id in self._records:
            self._touch(job_id)
        try:
            if event.name == "JobPosted" and job_id is not None:
                terms = JobTerms.from_abi(event.args["terms"])
                self._posted[job_id] = _Posted(terms=terms, spec_cid=str(event.args["specCid"]))
                self._keep_until(job_id, self._clock.now() + terms.fill_timeout)
                self._consider(job_id, Round.MAIN, event)
            elif event.name == "RoundOpened" and job_id is not None:
                # Audit and verification seats are drawn (DrawPending), never bid for.
                self._keep_until(job_id, int(event.args["fillDeadline"]))
            elif event.name == "DrawPending" and job_id is not None:
                if self.keeper:
                    self._set_watch(
                        Watch(job_id=JobId(job_id), kind=WatchKind.DRAW, round=int(event.args["round"]),
                              count=int(event.args["afterBlock"]))
                    )  # fmt: skip
            elif event.name == "SlotSlashed" and job_id is not None and event.args.get("reopened"):
                self._keep_until(job_id, self._clock.now() + self._job_posted(job_id).terms.fill_timeout)
                self._consider(job_id, Round.MAIN, event)
            elif event.name == "BiddingClosed" and job_id is not None:
                self._keep_until(job_id, int(event.args["commitDeadline"]))
                self._note_seed(job_id, bytes(event.args["seed"]))
            elif event.name == "CommitsClosed" and job_id is not None and event.args["revealDeadline"]:
                self._keep_until(job_id, int(event.args["revealDeadline"]))
            elif event.name == "JobSucceeded" and job_id is not None:
                self._keep_until(job_id, int(event.args["challengeDeadline"]))
            elif event.name == "SlotAssigned" and job_id is not None:
                if to_checksum_address(event.args["provider"]) != self.address:
                    self._joined(job_id)
                elif Round(event.args["round"]) != Round.MAIN or self._is_entrant(job_id):
                    self._drawn(job_id, int(event.args["slot"]), Round(event.args["round"]))
            elif event.name == "VoteAdded" and job_id is not None:
                if to_checksum_address(event.args["provider"]) == self.address:
                    # Nothing more to run: the slot commits and reveals once for all its votes.
                    logger.info("job_id=%s drawn for another seat: slot %d holds %d votes (a collateral per vote)",
                                job_id, int(event.args["slot"]), int(event.args["votes"]))  # fmt: skip
            elif event.name == "ProviderRegistered":
                self._providers.add(to_checksum_address(event.args["provider"]))
                for watch in self._watched(WatchKind.LEFT):
                    self._consider(watch.job_id, Round(watch.round), None)
            elif event.name == "ResultPublished" and job_id is not None:
                self._parent_ended(job_id)
            elif event.name in ("ProviderPaid", "Withdrawn", "JobFinalized", "JobFailed", "JobCancelled"):
                self._check_credit = True
                if job_id is not None and event.name != "ProviderPaid":
                    self._forget(job_id)
                    self._parent_ended(job_id)
        except (errors.ChainUnavailable, OSError, NodeRefused):
            raise
        except errors.ChainSchedulerError as exc:
            logger.warning("job_id=%s: handling %s failed: %s", job_id, event.name, exc)
        except StateError:
            raise
        except Exception:
            # A poison event must not stall the cursor forever.
            logger.exception("job_id=%s: handling %s at block %d failed", job_id, event.name, event.block_number)

    def _note_seed(self, job_id: int, seed: bytes) -> None:
        with self._lock:
            record = self._records.get(job_id)
            if record is not None and record.seed is None and record.slot is not None:
                self._save(replace(record, seed=seed))

    def _consider(self, job_id: int, round_: Round, event: MarketEvent | None) -> None:
        """A chance to bid for a slot of ``round_``: decide, then bid."""
        if self._stopping.is_set():
            return
        if event is not None and self.state.is_handled(event.tx_hash, event.log_index):
            return
        outcome = self._try_bid(job_id, round_)
        if outcome == "defer":
            self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.DEFER, round=int(round_)))
        elif outcome == "bid":
            self._unwatch(job_id, WatchKind.DEFER, WatchKind.LEFT, WatchKind.PARENTS)
        # What we decided to come back to is on disk before the event counts as handled: a
        # kill -9 in between would otherwise skip the event on replay and forget the job. (A kept
        # job is re-added by the replayed event itself, before this check: it waits for the batch.)
        if any(kind != WatchKind.KEEP for _job, kind in self._watch_dirty):
            self._flush_watches()
        if event is not None:
            self.state.mark_handled(event.tx_hash, event.log_index, block=event.block_number)

    def _is_entrant(self, job_id: int) -> bool:
        record = self._record(job_id)
        return record is not None and record.phase == JobPhase.ENTERED

    def _drawn(self, job_id: int, slot: int, round_: Round) -> None:
        """The pool drew us for an audit or verifier seat, or a lottery drew us as a replica:
        our collateral is locked, run the job."""
        terms = self._job_posted(job_id).terms
        existing = self._record(job_id)
        if existing is not None and existing.slot == slot and existing.terms_digest == terms.digest:
            return  # the event again (a restart replays from the cursor)
        self._save(
            JobRecord(job_id=JobId(job_id), phase=JobPhase.ASSIGNED, slot=slot, round=int(round_),
                      terms_digest=terms.digest)
        )  # fmt: skip
        logger.info(
            "job_id=%s drawn from the %s: %s seat, slot %d, collateral %d wei locked",
            job_id, "lottery's entrants" if round_ == Round.MAIN else "verifier pool", round_.name.lower(), slot,
            terms.collateral,
        )  # fmt: skip
        self._touch(job_id)
        self._wake.set()

    def _draw_pending(self, head: int) -> None:
        """Carry out armed draws whose block hash exists now (any keeper may; the first one wins)."""
        now = time.monotonic()
        for watch in self._watched(WatchKind.DRAW):
            job_id = int(watch.job_id)
            # The armed block is mined (we read its event): a draw sent now lands in a later one.
            if head < watch.count or self._held(job_id, "draw"):
                continue
            # Keepers spread their first try over half a second so they rarely race.
            first = self._draw_seen.setdefault(job_id, now)
            if now < first + 0.5 * self._spread(job_id):
                continue
            try:
                terms = self._job_posted(job_id).terms
            except errors.UnknownJob:
                self._forget(job_id)
                continue
            job = self.market.job(job_id)
            lottery = terms.lottery and job.round == Round.MAIN and job.filled == 0  # replicas to draw
            armed = (job.status == JobStatus.OPEN and (job.round != Round.MAIN or lottery)) or (
                job.status == JobStatus.RUNNING and job.flags & FLAG_DRAW_PENDING
            )
            if not armed or job.terms_digest != terms.digest or self._clock.now() >= job.deadline:
                self._unwatch(job_id, WatchKind.DRAW)  # drawn by another keeper, or timeout's now
                self._draw_seen.pop(job_id, None)
                continue
            try:
                result = self.market.draw(job_id, terms)
            except (errors.ContractError, errors.TransactionFailed) as exc:
                self._hold_for(job_id, "draw")
                logger.info("job_id=%s draw refused (another keeper first?): %s", job_id, exc)
                continue
            self._unwatch(job_id, WatchKind.DRAW)
            self._draw_seen.pop(job_id, None)
            seats = [f"{e.args['slot']}:{e.args['provider']}" for e in result.named("SlotAssigned")]
            seats += [f"{e.args['slot']}:{e.args['provider']}x{e.args['votes']}" for e in result.named("VoteAdded")]
            epoch = self.market.pool_epoch
            if not seats and result.named("DrawPending") and watch.count // epoch == result.block_number // epoch:
                # Nobody eligible in the pool yet: re-armed. Do not spend a transaction per poll.
                # (A draw armed in an earlier epoch re-arms too; its next draw goes at once.)
                self._hold[(job_id, "draw")] = time.monotonic() + max(5.0, self.keeper_retry)
            logger.info(
                "job_id=%s keeper: draw (%s%s)", job_id, ", ".join(e.name for e in result.events) or "no events",
                f"; seats {' '.join(seats)}" if seats else "",
            )  # fmt: skip

    def _joined(self, job_id: int) -> None:
        """Another provider took a slot: a round we left may fill now, so bid again."""
        left = self._watches.get((job_id, WatchKind.LEFT))
        if left is not None:
            self._consider(job_id, Round(left.round), None)

    def _parent_ended(self, parent: int) -> None:
        """A job ended: its children that waited for it get another look (they may be biddable now)."""
        for watch in self._watched(WatchKind.PARENTS):
            if parent in self._job_posted(watch.job_id).terms.parents:
                self._unwatch(watch.job_id, WatchKind.PARENTS)
                self._consider(watch.job_id, Round(watch.round), None)

    def _retry_deferred(self) -> None:
        for watch in self._watched(WatchKind.DEFER):
            if self._busy() or self._stopping.is_set():
                return
            self._unwatch(watch.job_id, WatchKind.DEFER)
            self._consider(watch.job_id, Round(watch.round), None)

    # --------------------------------------------------------------- watches

    def _watched(self, kind: WatchKind) -> list[Watch]:
        return sorted((w for (_, k), w in self._watches.items() if k == kind), key=lambda w: w.job_id)

    def _set_watch(self, watch: Watch) -> None:
        key = (int(watch.job_id), watch.kind)
        known = self._watches.get(key)
        if known != watch:
            self._watches[key] = watch
            # A kept job's deadline moves with every phase; after a restart the stored one only
            # makes the keeper look a little early and re-read it, so only adds are written.
            if known is None or watch.kind != WatchKind.KEEP:
                self._watch_dirty.add(key)

    def _unwatch(self, job_id: int, *kinds: WatchKind) -> None:
        for kind in kinds:
            if self._watches.pop((job_id, kind), None) is not None:
                self._watch_dirty.add((job_id, kind))

    def _forget(self, job_id: int) -> None:
        """The job ended: nothing to come back to."""
        self._unwatch(job_id, *WatchKind)

    def _keep_until(self, job_id: int, deadline: int) -> None:
        """As keeper, look at the job again once ``deadline`` (chain time) has passed."""
        if self.keeper:
            self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.KEEP, deadline=deadline))

    def _flush_watches(self) -> None:
        """Write the watch changes of this tick in one durable transaction."""
        if not self._watch_dirty:
            return
        dirty, self._watch_dirty = self._watch_dirty, set()
        self.state.watch(*(self._watches[key] for key in dirty if key in self._watches))
        self.state.unwatch(*(key for key in dirty if key not in self._watches))

    def _try_bid(self, job_id: int, round_: Round) -> str:
        """Bid if the job is open for ``round_`` and the policy agrees: "bid", "skip" or "defer"."""
        existing = self._record(job_id)
        posted = self._job_posted(job_id)
        if existing is not None and existing.terms_digest not in (None, posted.terms.digest):
            existing = None  # the id was reused after the chain lost the job we took part in: a new job
        if existing is not None and not (existing.phase == JobPhase.ABANDONED and existing.slot is None):
            return "skip"  # one slot per job: verifiers must be fresh, and we hold or held one
        terms = posted.terms
        if round_ != Round.MAIN:
            return "skip"  # audit and verifier seats are drawn from the pool, not bid for
        job = self.market.job(job_id)
        if job.status != JobStatus.OPEN or job.round != round_ or self._clock.now() >= job.deadline:
            logger.debug("job_id=%s not open for %s bids (status %s)", job_id, round_.name.lower(), job.status.name)
            return "skip"
        waiting = [p for p in terms.parents if self.market.job(p).status != JobStatus.FINALIZED]
        if waiting:
            # The contract refuses bids until every parent is Finalized: look again when one ends
            # (a Failed or Cancelled parent leaves the child to be cancelled as an orphan).
            self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.PARENTS, round=int(round_)))
            logger.info("job_id=%s waits for parent job(s) %s to finalize", job_id, ", ".join(map(str, waiting)))
            return "skip"
        _first, count = _slot_range(round_, terms)
        window = round_ == Round.MAIN and terms.bid_window > 0 and job.committed == 0
        if job.filled >= count and not window:
            logger.debug("job_id=%s: every %s slot is taken", job_id, round_.name.lower())
            return "skip"
        provider = self.market.provider(self.address)
        if not provider.registered:
            if not self._registered_warned:
                logger.warning("%s is not a registered provider: run compute-node register", self.address)
                self._registered_warned = True
            return "skip"
        decision = decide(
            self.policy, terms, round=round_, free_stake=provider.free, locked_stake=provider.locked,
            running=self._load(), pending=self._hopes(),
        )  # fmt: skip
        logger.info("job_id=%s %s round: %s", job_id, round_.name.lower(), decision.reason)
        if not decision.take:
            return "defer" if decision.retry else "skip"
        if round_ == Round.MAIN and terms.k > 1:
            eligible = self._eligible_providers(terms)
            if eligible < terms.k:
                # It cannot fill: holding a slot would only lock collateral until the fill timeout.
                # A provider that registers later makes us look again (LEFT watches are re-read).
                self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.LEFT, round=int(round_)))
                logger.info("job_id=%s declined: k=%d but only %d registered provider(s) can take it",
                            job_id, terms.k, eligible)  # fmt: skip
                return "skip"
        try:
            check = self.runner.precheck(terms=terms, spec_cid=posted.spec_cid)
        except errors.ResultUnpublished as exc:
            # A sealed parent result is published by its winner after finalizing: look again then.
            self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.PARENTS, round=int(round_)))
            logger.info("job_id=%s waits for parent job %s's result to be published", job_id, exc.job_id)
            return "skip"
        except (BackendError, errors.ChainUnavailable, OSError) as exc:
            logger.warning("job_id=%s: could not check the job now (%s); deciding again later", job_id, _one_line(exc))
            return "defer"
        if not check.bid:
            logger.warning("job_id=%s declined: %s", job_id, check.reason)
            return "skip"
        if check.verdict is Verdict.FAIL:
            # Every replica will agree on the same failure result: it is paid like any result
            # (at least minUnits), and nobody is slashed for it, but it must pay for its gas.
            gas_price = int(self._rpc(lambda: self.market.w3.eth.gas_price))
            covered = decide_failure(self.policy, terms, price=decision.price, gas_price=gas_price)
            if not covered.take:
                logger.info("job_id=%s declined: %s (%s)", job_id, covered.reason, check.reason)
                return "skip"
            logger.info("job_id=%s will end in a failure result (%s): %s", job_id, check.failure, check.reason)
        self._bid(job_id, round_, terms, decision.price)
        return "bid"

    def _eligible_providers(self, terms: JobTerms) -> int:
        """Registered providers (us included) whose capabilities fit and who are not leaving.

        Stake is not looked at: providers already holding a slot of the job have locked theirs.
        Each provider is re-read at most every 10 s.
        """
        if not self._providers:
            found = self.market.events(names=("ProviderRegistered",))
            self._providers = {to_checksum_address(e.args["provider"]) for e in found} | {self.address}
        now = time.monotonic()
        count = 0
        for address in self._providers:
            cached = self._eligible_cache.get(address)
            if cached is None or now - cached[0] > 10.0:
                cached = (now, self.market.provider(address))
                self._eligible_cache[address] = cached
            p = cached[1]
            required = terms.required_capabilities
            if p.registered and not p.unbonding_at and p.capabilities & required == required:
                count += 1
        return count

    def _bid(self, job_id: int, round_: Round, terms: JobTerms, price: int) -> None:
        record = self._save(
            JobRecord(job_id=JobId(job_id), phase=JobPhase.BIDDING, round=int(round_), terms_digest=terms.digest)
        )
        try:
            result = self.market.bid(job_id, price, terms)
        except errors.ContractError as exc:
            self._save(replace(record, phase=JobPhase.ABANDONED, error=f"bid refused: {exc}"))
            logger.info("job_id=%s bid refused: %s", job_id, exc)
            return
        except errors.TransactionFailed as exc:
            # Maybe mined later: the next reconcile looks for our slot.
            self._needs_resume = True
            logger.warning("job_id=%s bid not confirmed yet: %s", job_id, exc)
            return
        slot = None
        seed = None
        entered = False
        for e in result.events:
            if e.name == "SlotAssigned" and to_checksum_address(e.args["provider"]) == self.address:
                slot = int(e.args["slot"])
            elif e.name == "BiddingClosed":
                seed = bytes(e.args["seed"])
            elif e.name == "Entered" and to_checksum_address(e.args["provider"]) == self.address:
                entered = True
        if slot is None and entered:
            # A lottery job: the k replicas are drawn by stake from the entrants after the window.
            self._save(replace(record, phase=JobPhase.ENTERED))
            logger.info("job_id=%s entered the draw of its %d replicas (collateral locked)", job_id, terms.k)
            self._touch(job_id)
            return
        if slot is None:
            self._save(replace(record, phase=JobPhase.ABANDONED, error="bid mined without a slot"))
            logger.warning("job_id=%s bid mined but no slot was assigned to us", job_id)
            return
        self._save(replace(record, phase=JobPhase.ASSIGNED, slot=slot, seed=seed))
        logger.info("job_id=%s holds slot %d (%s round) at price %d", job_id, slot, round_.name.lower(), price)
        self._touch(job_id)
        self._wake.set()  # ours may have closed the bidding: start the run without waiting a poll

    # ------------------------------------------------------------- reconcile

    def _touch(self, job_id: int) -> None:
        """Look at this job again at the next tick."""
        with self._lock:
            self._dirty.add(job_id)

    def _due_jobs(self) -> list[JobRecord]:
        """The jobs this tick re-reads (see ``_dirty``), their marks cleared."""
        now_chain, now = self._clock.now(), time.monotonic()
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: r.job_id)
            if now >= self._next_sweep:
                self._next_sweep = now + max(2.0, 5 * self.poll_interval)
                self._dirty.clear()
                return records
            due = [
                r for r in records
                if (job_id := int(r.job_id)) in self._dirty
                or job_id not in self._deadline_of
                or now_chain >= self._deadline_of[job_id]
                or now >= self._retry_at.get(job_id, float("inf"))
            ]  # fmt: skip
            for r in due:
                self._dirty.discard(int(r.job_id))
                self._retry_at.pop(int(r.job_id), None)
            return due

    def _reconcile(self, record: JobRecord) -> None:
        """Bring one job forward from what the contract says now."""
        job_id = int(record.job_id)
        with self._lock:
            record = self._records.get(job_id, record)  # the tick's snapshot may be stale
        posted = self._job_posted(job_id)
        terms = posted.terms
        job = self.market.job(job_id)
        self._deadline_of[job_id] = job.deadline
        if job.terms_digest != terms.digest or (record.terms_digest and record.terms_digest != job.terms_digest):
            # The chain lost the blocks this job was in (restored from older state, or a reorg);
            # the id is free or names another job now, which the node sees as a new job.
            self._save(replace(record, phase=JobPhase.ABANDONED, slot=None, error="the job vanished from the chain"))
            self._posted.pop(job_id, None)
            logger.warning("job_id=%s vanished from the chain (lost blocks); forgetting our part in it", job_id)
            return
        if record.phase == JobPhase.ENTERED:
            self._await_draw(record, terms, job)
            return
        if record.phase == JobPhase.BIDDING or record.slot is None:
            self._find_slot(record, terms)
            return
        slot = self.market.slot(job_id, record.slot)
        if slot.provider != self.address:
            if record.phase == JobPhase.ASSIGNED:
                # No slot kept: the node never ran the job, so it may bid again if a slot reopens
                # (the contract's freshness rule looks at the current slot holders only).
                self._save(replace(record, phase=JobPhase.ABANDONED, slot=None, error="lost the slot to a cheaper bid"))
                logger.info("job_id=%s lost slot %d to a cheaper bid", job_id, record.slot)
            else:
                self._save(replace(record, phase=JobPhase.SETTLED, error="slot reassigned after a missed deadline"))
                logger.warning("job_id=%s slot %d was reassigned: we missed a deadline", job_id, record.slot)
            return
        if slot.state == SlotState.SLASHED:
            self._save(replace(record, phase=JobPhase.SETTLED, error="slashed"))
            logger.warning("job_id=%s slot %d SLASHED (collateral %d wei lost)", job_id, record.slot, terms.collateral)
            return
        if slot.state == SlotState.SETTLED:
            self._save(replace(record, phase=JobPhase.SETTLED, error=None))
            logger.info("job_id=%s settled: slot %d paid, collateral released", job_id, record.slot)
            self._check_credit = True
            return
        if job.status.terminal:
            self._save(replace(record, phase=JobPhase.SETTLED, error=f"job {job.status.name.lower()}"))
            logger.info("job_id=%s is %s; nothing more to do", job_id, job.status.name.lower())
            return
        my_round = _round_of(record.slot, terms)
        if slot.state == SlotState.ASSIGNED:
            if job.status == JobStatus.RUNNING and job.round == my_round:
                self._run_or_commit(record, posted, job, slot)
            elif job.status == JobStatus.OPEN and job.round == my_round == Round.MAIN:
                self._maybe_leave(record, terms, job)
        elif slot.state == SlotState.COMMITTED:
            if record.phase != JobPhase.COMMITTED:
                record = self._save(replace(record, phase=JobPhase.COMMITTED))
            if job.status == JobStatus.REVEALING:
                self._reveal(record, terms, job)
        elif slot.state == SlotState.REVEALED and record.phase != JobPhase.REVEALED:
            self._save(replace(record, phase=JobPhase.REVEALED))
        self._keep(job_id, terms, job)

    def _maybe_leave(self, record: JobRecord, terms: JobTerms, job: ChainJob) -> None:
        """Leave a round that has not filled after ``fill_wait`` s: an unfillable job locks nothing."""
        job_id = int(record.job_id)
        assert record.slot is not None
        _first, count = _slot_range(job.round, terms)
        waited = time.time() - record.updated_at
        if job.filled >= count or (job.flags >> 4) & 3 or waited < self.fill_wait:  # 3: reopen count bits
            with self._lock:
                self._retry_at[job_id] = time.monotonic() + max(self.fill_wait - waited, self.poll_interval)
            return
        if self._held(job_id, "leave"):
            return
        try:
            self.market.withdraw_bid(job_id, record.slot, terms)
        except errors.ContractError as exc:  # filled or reopened meanwhile: stay
            self._hold_for(job_id, "leave")
            logger.info("job_id=%s could not leave slot %d: %s", job_id, record.slot, exc)
            return
        left = self._watches.get((job_id, WatchKind.LEFT))
        times = (left.count if left else 0) + 1
        self._save(replace(record, phase=JobPhase.ABANDONED, slot=None, error=f"left: {count - job.filled} slot(s) "
                           f"still empty after {waited:.0f}s"))  # fmt: skip
        if times < _MAX_LEAVES:
            self._set_watch(Watch(job_id=JobId(job_id), kind=WatchKind.LEFT, round=int(job.round), count=times))
        logger.info("job_id=%s left slot %d: %d/%d slots filled after %.0fs; collateral freed",
                    job_id, record.slot, job.filled, count, waited)  # fmt: skip

    def _await_draw(self, record: JobRecord, terms: JobTerms, job: ChainJob) -> None:
        """An entrant of a lottery job: keep it moving until the draw, then see if we were drawn."""
        job_id = int(record.job_id)
        if job.status == JobStatus.OPEN and job.round == Round.MAIN and job.filled == 0:
            window_end = job.deadline - terms.fill_timeout + terms.bid_window
            if self._clock.now() < window_end:
                self._deadline_of[job_id] = window_end  # look again when entries close
            self._keep(job_id, terms, job)
            return
        for slot in self.market.slots(job_id, terms)[: terms.k]:
            if slot.provider == self.address and slot.state != SlotState.EMPTY:
                self._drawn(job_id, slot.index, Round.MAIN)
                return
        self._save(replace(record, phase=JobPhase.ABANDONED, error="not drawn in the lottery"))
        logger.info("job_id=%s: not drawn among the entrants; collateral released", job_id)

    def _find_slot(self, record: JobRecord, terms: JobTerms) -> None:
        """A bid whose outcome we did not see (crash, outage): look for our slot."""
        job_id = int(record.job_id)
        for slot in self.market.slots(job_id, terms):
            if slot.provider == self.address and slot.state != SlotState.EMPTY:
                self._save(
                    replace(record, phase=JobPhase.ASSIGNED, slot=slot.index, round=int(_round_of(slot.index, terms)))
                )
                logger.info("job_id=%s: our bid landed, slot %d", job_id, slot.index)
                return
        self._save(replace(record, phase=JobPhase.ABANDONED, error="bid did not land"))
        logger.info("job_id=%s: our bid did not land; deciding again", job_id)
        # The event that made us bid is handled: nothing else would bring the job back.
        self._consider(job_id, Round(record.round), None)

    def _run_or_commit(self, record: JobRecord, posted: _Posted, job: ChainJob, slot: ChainSlot) -> None:
        job_id = int(record.job_id)
        with self._lock:
            # The record the tick started from may be stale: a worker may have stored its result
            # (and left) since. Read both under the lock the worker saves and leaves under.
            record = self._records.get(job_id, record)
            executing = job_id in self._workers
        assert record.slot is not None
        if self.behaviour == Behaviour.COPYCAT:
            self._copy_commitment(record, posted.terms, job)
            return
        if record.result_cid is not None and record.salt is not None and record.usage is not None:
            self._commit(record, posted.terms, job)
            return
        if record.error is not None or executing or self._stopping.is_set() or self._held(job_id, "run"):
            return  # failed (waits for the timeout), executing, not starting new work, or retrying later
        if self._executing() >= self.policy.capacity:
            # Several held rounds filled at once: run them as execution slots free up.
            with self._lock:
                self._queued.add(job_id)
            self._say(job_id, "queued", "job_id=%s queued: every execution slot is busy (commit by %d)", job.deadline)
            return
        with self._lock:
            self._queued.discard(job_id)
        if record.seed is None:
            seed = self._find_seed(job_id)
            if seed is None:
                return
            record = self._save(replace(record, seed=seed))
        record = self._save(replace(record, phase=JobPhase.RUNNING))
        assert record.seed is not None
        worker = threading.Thread(
            target=self._execute,
            args=(record, posted, slot.price, job.deadline),
            name=f"job-{job_id}",
            daemon=True,  # abandoned on abort: the job re-runs after a restart
        )
        with self._lock:
            self._workers[job_id] = worker
        logger.info("job_id=%s running (slot %d, commit by %d)", job_id, record.slot, job.deadline)
        worker.start()

    def _find_seed(self, job_id: int) -> bytes | None:
        closed = self.market.events(names=("BiddingClosed",), job_id=job_id)
        return bytes(closed[-1].args["seed"]) if closed else None

    def _execute(self, record: JobRecord, posted: _Posted, price: int, deadline: int) -> None:
        """Worker thread: run the job and record the result with a fresh salt (no transactions here)."""
        job_id = int(record.job_id)
        assert record.seed is not None
        try:
            outcome = self.runner.run(
                job_id=job_id,
                terms=posted.terms,
                spec_cid=posted.spec_cid,
                seed=record.seed,
                price=price,
                behaviour=self.behaviour,
                time_left=deadline - self._clock.now(),  # the sandbox's safety net ends before the commit deadline
            )
        except (BackendError, DockerExecutorError, errors.ChainUnavailable, OSError) as exc:
            # The node's own infrastructure (store, engine, RPC, disk): retry later, record nothing.
            self._hold[(job_id, "run")] = time.monotonic() + max(self.keeper_retry, 5.0)
            logger.warning("job_id=%s could not run now (%s); retrying", job_id, _one_line(exc))
            with self._lock:
                self._workers.pop(job_id, None)
                self._retry_at[job_id] = self._hold[(job_id, "run")]
            self._wake.set()
            return
        except Exception as exc:
            logger.exception("job_id=%s execution crashed", job_id)
            outcome = RunOutcome(result_cid=None, usage=0, receipt={}, receipt_cid=None, error=_one_line(exc))
        try:
            with self._lock:
                current = self._records.get(job_id)
                if current is None or current.phase != JobPhase.RUNNING or current.result_cid is not None:
                    logger.info("job_id=%s finished after the node moved on; result dropped", job_id)
                    return
                if outcome.result_cid is None:
                    self._save(replace(current, error=outcome.error or "the job could not run"))
                    logger.warning("job_id=%s could not run: %s", job_id, outcome.error)
                    return
                # Durable before the commit is sent: after a crash the node reveals from this row.
                self._save(
                    replace(
                        current,
                        result_cid=outcome.result_cid,
                        usage=int(outcome.usage),
                        receipt_cid=outcome.receipt_cid,
                        salt=secrets.token_bytes(32),
                        error=None,
                    )
                )
            logger.info("job_id=%s result %s usage %d (receipt %s)", job_id, outcome.result_cid, outcome.usage,
                        outcome.receipt_cid)  # fmt: skip
        except StateError as exc:
            logger.warning("job_id=%s result not recorded (%s); it re-runs on restart", job_id, exc)
        finally:
            with self._lock:
                self._workers.pop(job_id, None)
                self._dirty.add(job_id)
                self._dirty.update(self._queued)  # a slot is free: the queued runs get a look
            self._wake.set()

    def _commit(self, record: JobRecord, terms: JobTerms, job: ChainJob) -> None:
        job_id = int(record.job_id)
        assert record.slot is not None and record.result_cid is not None
        assert record.salt is not None and record.usage is not None
        if self.behaviour == Behaviour.SLOW:
            if self._clock.now() < job.deadline:
                self._say(
                    job_id, "slow", "job_id=%s slow: holding the commit until after the deadline %d", job.deadline
                )
                return
            if (job_id, "slowlate") in self._said:
                return
            self._said.add((job_id, "slowlate"))  # one late attempt, which the contract refuses
        if self._held(job_id, "commit"):
            return
        sealed = commitment(job_id, self.address, record.result_cid, record.usage, record.salt)
        try:
            self.market.commit(job_id, record.slot, sealed, terms)
        except errors.ContractError as exc:
            self._hold_for(job_id, "commit")
            logger.warning("job_id=%s commit refused: %s", job_id, exc)
            return
        self._save(replace(record, phase=JobPhase.COMMITTED))
        logger.info("job_id=%s committed slot %d", job_id, record.slot)
        self._wake.set()  # ours may have closed the commits: look for the reveal at once, not a poll later

    def _reveal(self, record: JobRecord, terms: JobTerms, job: ChainJob) -> None:
        job_id = int(record.job_id)
        assert record.slot is not None
        if self.behaviour == Behaviour.SILENT:
            self._say(job_id, "silent", "job_id=%s silent: never revealing", None)
            return
        if self.behaviour == Behaviour.COPYCAT and record.slot < terms.k:
            self._reveal_copy(record, terms)
            return
        if self.behaviour == Behaviour.COPYCAT and record.result_cid is None:
            self._reveal_hash(record, terms)
            return
        if record.result_cid is None or record.salt is None or record.usage is None:
            self._say(job_id, "nosalt", "job_id=%s committed but the result and salt are not on record", None)
            return
        if self._held(job_id, "reveal"):
            return
        envelope = b""
        if terms.reveals_sealed(record.slot):
            # Only the CID's hash goes on chain; the client gets the CID encrypted to its key.
            spec_cid = self._job_posted(job_id).spec_cid
            envelope = self.runner.envelope(job_id=job_id, spec_cid=spec_cid, result_cid=record.result_cid)
        try:
            self.market.reveal(
                job_id, record.slot, record.result_cid, record.usage, record.salt, terms, envelope=envelope
            )
        except errors.ContractError as exc:
            self._hold_for(job_id, "reveal")
            logger.warning("job_id=%s reveal refused: %s", job_id, exc)
            return
        self._save(replace(record, phase=JobPhase.REVEALED))
        logger.info("job_id=%s revealed slot %d: %s usage %d", job_id, record.slot, record.result_cid, record.usage)

    def _publish(self, job_id: int, terms: JobTerms, job: ChainJob) -> bool:
        """Publish our sealed result once the challenge window is over, if it is the accepted
        one: that settles the job (a sealed result is paid for only once its CID is on chain).
        The winning slot's holder publishes at once, another holder of the same result (an
        agreeing replica, a verifier) after a keeper's grace. True when this is ours to do."""
        record = self._record(job_id)
        if record is None or record.result_cid is None or not terms.reveals_sealed(job.winner):
            return False
        if self._held(job_id, "publish"):
            return True  # a refused attempt: it passed the checks below, no need to read the chain again
        if self.market.slot(job_id, job.winner).result_digest != result_hash(record.result_cid)[:24]:
            return False  # not the accepted result, or not the result on record (a reused id)
        if record.slot != job.winner and self._clock.now() < job.deadline + self._keeper_grace(job_id):
            return True
        try:
            self.market.publish(job_id, record.result_cid, terms)
        except errors.ContractError as exc:
            self._hold_for(job_id, "publish")
            logger.warning("job_id=%s publishing the result refused (another holder first?): %s", job_id, exc)
            return True
        logger.info("job_id=%s published result %s; the job is settled", job_id, record.result_cid)
        return True

    # --------------------------------------------------------------- copycat

    def _others_commits(self, job_id: int) -> list[tuple[int, bytes]]:
        """(slot, commitment) of other providers' commit transactions in this job, oldest first."""
        out = []
        for e in self.market.events(names=("ResultCommitted",), job_id=job_id):
            if to_checksum_address(e.args["provider"]) == self.address:
                continue
            args = self._tx_args(e.tx_hash)
            out.append((int(e.args["slot"]), bytes(args["commitment"])))
        return out

    def _tx_args(self, tx_hash: str) -> dict[str, Any]:
        """The decoded arguments of a market transaction, read from its input data."""
        tx = self._rpc(lambda: self.market.w3.eth.get_transaction(HexBytes(tx_hash)))
        _fn, args = self.market.contract.decode_function_input(HexBytes(tx["input"]))
        return dict(args)

    def _main_results(self, job_id: int, terms: JobTerms) -> list[MarketEvent]:
        """The main slots' reveals of a job so far: results in the open, or sealed hashes."""
        found = self.market.events(names=("ResultRevealed", "ResultSealed"), job_id=job_id)
        return [e for e in found if int(e.args["slot"]) < terms.k]

    def _copy_result(self, record: JobRecord, terms: JobTerms) -> None:
        """COPYCAT on a drawn seat: commit the main result revealed so far, without running.

        A job with verifiers reveals its main results sealed, so all there is to copy is a
        hash: the copycat commits over it, and has no CID to reveal (:meth:`_reveal_hash`).
        """
        job_id, slot = int(record.job_id), record.slot
        assert slot is not None
        shown = self._main_results(job_id, terms)
        if not shown:
            self._say(job_id, "copywait", "job_id=%s copycat: no main result revealed to copy", None)
            return
        if self._held(job_id, "commit"):
            return
        last, salt = shown[-1], secrets.token_bytes(32)
        usage = int(last.args["usage"])
        if last.name == "ResultRevealed":
            cid = str(last.args["resultCid"])
            record = replace(record, result_cid=cid, usage=usage, salt=salt, phase=JobPhase.RUNNING)
            sealed = commitment(job_id, self.address, cid, usage, salt)
        else:
            copied = bytes(last.args["resultHash"])
            record = replace(record, usage=usage, salt=salt, phase=JobPhase.RUNNING, error="copycat: a sealed hash")
            sealed = hash_commitment(job_id, self.address, copied, usage, salt)
        record = self._save(record)
        try:
            self.market.commit(job_id, slot, sealed, terms)
        except errors.ContractError as exc:
            self._hold_for(job_id, "commit")
            logger.warning("job_id=%s copycat commit refused: %s", job_id, exc)
            return
        self._save(replace(record, phase=JobPhase.COMMITTED))
        logger.info("job_id=%s copycat: committed the main result of slot %s", job_id, last.args["slot"])

    def _reveal_hash(self, record: JobRecord, terms: JobTerms) -> None:
        """COPYCAT that copied a sealed hash: no CID opens its commitment; try the hash's hex."""
        job_id = int(record.job_id)
        assert record.slot is not None and record.salt is not None and record.usage is not None
        if (job_id, "copyreveal") in self._said:
            return
        self._said.add((job_id, "copyreveal"))
        sealed = [e for e in self._main_results(job_id, terms) if e.name == "ResultSealed"]
        guess = bytes(sealed[-1].args["resultHash"]).hex() if sealed else ""
        try:
            self.market.reveal(job_id, record.slot, guess, record.usage, record.salt, terms)
        except errors.ContractError as exc:
            logger.warning("job_id=%s copycat: the sealed main result left nothing to reveal: %s", job_id, exc)
            return
        logger.error("job_id=%s copycat: a reveal of the hash was ACCEPTED; sealing does not hold", job_id)

    def _copy_commitment(self, record: JobRecord, terms: JobTerms, job: ChainJob) -> None:
        """COPYCAT: commit the commitment hash another provider sent, without running anything."""
        job_id = int(record.job_id)
        assert record.slot is not None
        if record.slot > terms.k:
            self._copy_result(record, terms)
            return
        if record.phase != JobPhase.RUNNING:
            record = self._save(replace(record, phase=JobPhase.RUNNING))
        others = self._others_commits(job_id)
        if not others:
            self._say(job_id, "copywait", "job_id=%s copycat: waiting for another provider's commitment", None)
            return
        if self._held(job_id, "commit"):
            return
        source, sealed = others[0]
        assert record.slot is not None
        try:
            self.market.commit(job_id, record.slot, sealed, terms)
        except errors.ContractError as exc:
            self._hold_for(job_id, "commit")
            logger.warning("job_id=%s copycat commit refused: %s", job_id, exc)
            return
        self._save(replace(record, phase=JobPhase.COMMITTED, error=f"copycat: copied slot {source}'s commitment"))
        logger.info("job_id=%s copycat: committed slot %d's commitment %s", job_id, source, sealed.hex()[:16])

    def _reveal_copy(self, record: JobRecord, terms: JobTerms) -> None:
        """COPYCAT: try to open the copied commitment with the other provider's revealed values."""
        job_id = int(record.job_id)
        assert record.slot is not None
        if (job_id, "copyreveal") in self._said:
            return
        mine = self.market.slot(job_id, record.slot).sealed
        source = next((s for s, c in self._others_commits(job_id) if c == mine), None)
        revealed = [
            e for e in self.market.events(names=("ResultRevealed",), job_id=job_id) if int(e.args["slot"]) == source
        ]
        if not revealed:
            self._say(job_id, "copyrevealwait", "job_id=%s copycat: waiting for slot %s to reveal", source)
            return
        args = self._tx_args(revealed[0].tx_hash)
        self._said.add((job_id, "copyreveal"))
        try:
            self.market.reveal(job_id, record.slot, args["resultCid"], int(args["usage"]), bytes(args["salt"]), terms)
        except errors.ContractError as exc:
            logger.warning("job_id=%s copycat: revealing slot %s's result refused: %s", job_id, source, exc)
            return
        logger.error("job_id=%s copycat: the copied reveal was ACCEPTED; the commitment does not bind", job_id)

    # ---------------------------------------------------------------- keeper

    def _keep(self, job_id: int, terms: JobTerms, job: ChainJob) -> None:
        """Move the job past a passed deadline: publish our sealed result, timeout, close
        bidding, or finalize."""
        now = self._clock.now()
        if job.status == JobStatus.SUCCEEDED and now >= job.deadline and self._publish(job_id, terms, job):
            return
        if not self.keeper:
            return
        action: str | None = None
        if job.status == JobStatus.SUCCEEDED and now >= job.deadline:
            action = "finalize"
        elif job.status in _TIMED and now >= job.deadline:
            action = "timeout"
        elif (
            job.status == JobStatus.OPEN
            and job.round == Round.MAIN
            and terms.bid_window
            and (job.filled == terms.k or (terms.lottery and job.filled == 0))
            and now >= job.deadline - terms.fill_timeout + terms.bid_window
        ):
            action = "close_bidding"
        if action is None or self._held(job_id, action):
            return
        fn = {
            "finalize": self.market.contract.functions.finalize,
            "timeout": self.market.contract.functions.timeout,
            "close_bidding": self.market.contract.functions.closeBidding,
        }[action]
        # A dry run first: another keeper may have moved the job already.
        try:
            self._rpc(lambda: fn(job_id, terms.as_abi()).call({"from": self.address}, block_identifier="pending"))
        except errors.ChainUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a revert, decoded for the log; anything else: send anyway
            reason = decode_revert(exc)
            if reason is not None:
                self._hold_for(job_id, action)
                logger.debug("job_id=%s keeper %s not possible now: %s", job_id, action, reason)
                return
            logger.debug("job_id=%s keeper %s dry run failed (%s); sending anyway", job_id, action, _one_line(exc))
        send: Callable[[], Any] = {
            "finalize": lambda: self.market.finalize(job_id, terms),
            "timeout": lambda: self.market.timeout(job_id, terms),
            "close_bidding": lambda: self.market.close_bidding(job_id, terms),
        }[action]
        try:
            result = send()
        except errors.ContractError as exc:
            self._hold_for(job_id, action)
            logger.info("job_id=%s keeper %s refused (another keeper first?): %s", job_id, action, exc)
            return
        self._hold_for(job_id, action)
        logger.info(
            "job_id=%s keeper: %s (%s)", job_id, action, ", ".join(e.name for e in result.events) or "no events"
        )

    def _keep_others(self) -> None:
        """Keeper for jobs the node is not in: time out expired phases (an Open job nobody
        took, a round whose providers died) so no escrow stays locked."""
        if not self.keeper:
            return
        now = self._clock.now()
        for watch in self._watched(WatchKind.KEEP):
            job_id = int(watch.job_id)
            if job_id in self._records or watch.deadline is None or self._held(job_id, "keep"):
                continue  # our own jobs are kept by _reconcile
            if now < watch.deadline + self._keeper_grace(job_id):
                continue
            try:
                posted = self._job_posted(job_id)
            except errors.UnknownJob:
                self._forget(job_id)
                continue
            job = self.market.job(job_id)
            if job.status.terminal or job.terms_digest != posted.terms.digest:
                self._unwatch(job_id, WatchKind.KEEP)
                continue
            if job.deadline > watch.deadline:
                self._keep_until(job_id, job.deadline)  # moved on by events we have not read yet
                continue
            self._keep(job_id, posted.terms, job)
            self._hold_for(job_id, "keep")

    def _keeper_grace(self, job_id: int) -> float:
        """Seconds past a deadline before keeping another's job: 2 to 4, spread by address."""
        return _KEEPER_GRACE * (1.0 + self._spread(job_id))

    def _spread(self, job_id: int) -> float:
        """A number in [0, 1] fixed by address and job, so keepers take turns rather than race."""
        return hashlib.sha256(f"{self.address}:{job_id}".encode()).digest()[0] / 255

    def _check_fork(self, latest: Any) -> None:
        """Notice that the chain replaced blocks we read (a reorg, or a node restored from older
        state that has since mined past our cursor): the head no longer descends from the last one."""
        number, block_hash = int(latest["number"]), bytes(latest["hash"])
        seen = self._head
        if seen is None or seen == (number, block_hash) or number < seen[0]:
            self._head = (number, block_hash)
            return  # first look, nothing new, or a shorter chain (the watcher rewinds that itself)
        if number == seen[0]:
            ancestor = block_hash
        elif number == seen[0] + 1:
            ancestor = bytes(latest["parentHash"])
        elif time.monotonic() >= self._next_fork_check:
            # Several blocks since the head we verified: one extra read, at most once a second
            # (until then the old head stays the one to check against).
            self._next_fork_check = time.monotonic() + 1.0
            ancestor = bytes(self._rpc(lambda: self.market.w3.eth.get_block(seen[0]))["hash"])
        else:
            return
        self._head = (number, block_hash)
        if ancestor == seen[1]:
            return
        assert self._watcher is not None
        self._watcher.rewind(seen[0] - _REORG_DEPTH)
        self._on_rewind(seen[0], number)

    def _on_rewind(self, was: int, head: int) -> None:
        """The chain lost blocks the node had read: re-check every job in flight against it."""
        logger.warning("the chain is back at block %d (the node had read up to %d): re-checking %d job(s) "
                       "in flight", head, was, len(self._records))  # fmt: skip
        self._posted.clear()
        self.sender.start()  # our transactions in the lost blocks are gone: the nonce is the chain's again
        self._needs_resume = True
        with self._lock:
            self._dirty.update(self._records)
            self._next_sweep = 0.0

    # -------------------------------------------------------------- withdraw

    def _maybe_withdraw(self) -> None:
        if self.withdraw_threshold is None:
            return
        now = time.monotonic()
        if not self._check_credit and now < self._next_credit_check:
            return
        self._check_credit = False
        self._next_credit_check = now + 30.0
        credit = self.market.credit_of(self.address)
        if credit <= 0 or credit < self.withdraw_threshold:
            return
        try:
            self.market.withdraw()
        except errors.ContractError as exc:
            logger.warning("withdraw of %d wei refused: %s", credit, exc)
            return
        logger.info("withdrew %d wei of credit to %s", credit, self.address)

    # ------------------------------------------------------------- plumbing

    def _job_posted(self, job_id: int) -> _Posted:
        posted = self._posted.get(job_id)
        if posted is None:
            event = self.market.job_posted(job_id)
            posted = _Posted(terms=JobTerms.from_abi(event.args["terms"]), spec_cid=str(event.args["specCid"]))
            self._posted[job_id] = posted
        return posted

    def _record(self, job_id: int) -> JobRecord | None:
        with self._lock:
            record = self._records.get(job_id)
        return record if record is not None else self.state.get(job_id)

    def _save(self, record: JobRecord) -> JobRecord:
        with self._lock:
            stored = self.state.upsert(record)
            if stored.in_flight:
                self._records[int(stored.job_id)] = stored
            else:
                self._records.pop(int(stored.job_id), None)
                self._deadline_of.pop(int(stored.job_id), None)
                self._retry_at.pop(int(stored.job_id), None)
            return stored

    def _load(self) -> int:
        """Jobs executing or about to (bidding closed, no result yet): what capacity bounds."""
        with self._lock:
            return sum(
                1 for r in self._records.values()
                if r.phase in (JobPhase.ASSIGNED, JobPhase.RUNNING) and r.seed is not None and r.result_cid is None
            )  # fmt: skip

    def _busy(self) -> bool:
        """No room for another bid now (what ``decide`` would answer "later" to)."""
        return self._load() >= self.policy.capacity or self._hopes() >= self.policy.pending_bids

    def _hopes(self) -> int:
        """Bids whose rounds have not filled yet (no seed): they lock collateral, not capacity."""
        with self._lock:
            return sum(
                1 for r in self._records.values()
                if r.phase in (JobPhase.BIDDING, JobPhase.ENTERED) or (r.phase == JobPhase.ASSIGNED and r.seed is None)
            )  # fmt: skip

    def _executing(self) -> int:
        with self._lock:
            return sum(1 for t in self._workers.values() if t.is_alive())

    def _held(self, job_id: int, action: str) -> bool:
        return time.monotonic() < self._hold.get((job_id, action), 0.0)

    def _hold_for(self, job_id: int, action: str) -> None:
        until = time.monotonic() + self.keeper_retry
        self._hold[(job_id, action)] = until
        with self._lock:
            self._retry_at[job_id] = min(self._retry_at.get(job_id, until), until)

    def _say(self, job_id: int, key: str, message: str, arg: object) -> None:
        """Log a waiting state once per job."""
        if (job_id, key) in self._said:
            return
        self._said.add((job_id, key))
        if arg is None:
            logger.info(message, job_id)
        else:
            logger.info(message, job_id, arg)

    def _prune(self, block: int) -> None:
        if block - self._pruned_at < 5000:
            return
        self._pruned_at = block
        dropped = self.state.forget_handled_before(max(0, block - 5000))
        logger.debug("forgot %d handled-event keys before block %d", dropped, block - 5000)


def _slot_range(round_: Round, terms: JobTerms) -> tuple[int, int]:
    """First slot index and slot count of a round (the contract's ``_range``)."""
    if round_ == Round.MAIN:
        return 0, terms.k
    if round_ == Round.AUDIT:
        return terms.k, 1
    return terms.k + 1, terms.verifiers


def _round_of(slot: int, terms: JobTerms) -> Round:
    if slot < terms.k:
        return Round.MAIN
    return Round.AUDIT if slot == terms.k else Round.VERIFY


def _endpoint(market: Market) -> str:
    return str(getattr(market.w3.provider, "endpoint_uri", "") or market.w3.provider)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{exc.__class__.__name__}: {text}"
