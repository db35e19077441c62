"""Typed binding of the ChainScheduler contract: one method per contract function.

Example:
    >>> market = Market.deploy(w3=w3, account=w3.eth.accounts[0])
    >>> client = market.with_account(w3.eth.accounts[1])
    >>> terms = JobTerms.create(client=client.account, spec_cid=cid, max_price=10,
    ...                         max_units=10_000, collateral=10**15)
    >>> job_id = client.post_job(cid, terms)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TimeExhausted

from chain_scheduler import errors
from chain_scheduler._abi import abi, bytecode
from chain_scheduler._model import (
    Job,
    JobId,
    JobStatus,
    JobTerms,
    Provider,
    Round,
    Slot,
    SlotState,
    Wei,
    result_hash,
)
from chain_scheduler._revert import decode_revert
from chain_scheduler._rpc import rpc_call
from chain_scheduler._sender import TxSender

logger = logging.getLogger(__name__)

#: Gas for the deployment: the market and the extension it creates (about 7.3M together).
DEPLOY_GAS = 10_000_000
#: Gas sent with each transaction unless told otherwise. Explicit gas skips the
#: estimation round trip; a revert then shows as a failed receipt, which is replayed
#: as a call to decode the reason.
DEFAULT_GAS = 3_000_000

#: Placeholder address of a binding that has not deployed its contract yet.
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True, slots=True)
class MarketEvent:
    """A decoded contract event and where it was found."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int

    @property
    def job_id(self) -> JobId | None:
        value = self.args.get("jobId")
        return None if value is None else JobId(int(value))

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the log, for idempotent handlers."""
        return (self.tx_hash, self.log_index)


@dataclass(frozen=True, slots=True)
class TxResult:
    """A mined transaction: its hash, gas and the contract events it emitted."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[MarketEvent] = field(default_factory=list)

    def event(self, name: str) -> MarketEvent:
        """The first event of this name (raises LookupError when absent)."""
        for e in self.events:
            if e.name == name:
                return e
        raise LookupError(f"no {name} event in transaction {self.tx_hash}")

    def named(self, name: str) -> list[MarketEvent]:
        return [e for e in self.events if e.name == name]


class Market:
    """The ChainScheduler contract, bound to one sending account.

    Args:
        w3: A connected Web3 instance.
        address: The contract address.
        account: The sender: an address the node signs for (devnet, eth-tester) or a
            ``LocalAccount`` holding a private key.
        gas: Gas limit per transaction; None estimates each one.
        receipt_timeout: Seconds to wait for a receipt.
        sender: Sends every transaction (local nonces, journal, replacement of stuck
            ones, its own receipt timeout); it must hold ``account``'s key. None sends
            directly.
    """

    def __init__(
        self,
        *,
        w3: Web3,
        address: str,
        account: str | LocalAccount,
        gas: int | None = DEFAULT_GAS,
        receipt_timeout: float = 120.0,
        sender: TxSender | None = None,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self._signer = account if isinstance(account, LocalAccount) else None
        self.account = to_checksum_address(account.address if isinstance(account, LocalAccount) else account)
        if sender is not None and sender.address != self.account:
            raise ValueError(f"The sender signs for {sender.address}, not for {self.account}: pass the same account.")
        self._sender = sender
        self.gas = gas
        self.receipt_timeout = receipt_timeout
        self.contract: Contract = w3.eth.contract(address=self.address, abi=abi())
        self._events_by_topic = {
            HexBytes(event_abi_to_log_topic(item)): item["name"]  # type: ignore[arg-type]
            for item in abi()
            if item.get("type") == "event"
        }
        self._terms: dict[int, JobTerms] = {}

    # ------------------------------------------------------------ construction

    @classmethod
    def deploy(
        cls,
        *,
        w3: Web3,
        account: str | LocalAccount,
        unbonding_delay: int = 3600,
        gas: int | None = DEFAULT_GAS,
        sender: TxSender | None = None,
    ) -> Market:
        """Deploy a fresh contract and return its binding for ``account``."""
        factory = w3.eth.contract(abi=abi(), bytecode=bytecode())
        # The constructor does no I/O, so a binding at no address yet can send the deployment.
        deployer = cls(w3=w3, address=ZERO_ADDRESS, account=account, gas=gas, sender=sender)
        receipt = deployer._send_raw(factory.constructor(unbonding_delay), value=0, gas=DEPLOY_GAS)
        return cls(w3=w3, address=receipt["contractAddress"], account=account, gas=gas, sender=sender)

    def with_account(self, account: str | LocalAccount, *, sender: TxSender | None = None) -> Market:
        """The same contract, sending from another account (shares the terms cache)."""
        other = Market(
            w3=self.w3,
            address=self.address,
            account=account,
            gas=self.gas,
            receipt_timeout=self.receipt_timeout,
            sender=sender,
        )
        other._terms = self._terms
        return other

    # ----------------------------------------------------------------- reads

    def job_count(self) -> int:
        return int(self._call(self.contract.functions.jobCount()))

    def job(self, job_id: int) -> Job:
        raw = self._call(self.contract.functions.getJob(job_id))
        return Job(
            job_id=JobId(job_id),
            terms_digest=bytes(raw[0]),
            status=JobStatus(raw[1]),
            round=Round(raw[2]),
            filled=raw[3],
            committed=raw[4],
            revealed=raw[5],
            winner=raw[6],
            flags=raw[7],
            deadline=raw[8],
        )

    def slot(self, job_id: int, index: int) -> Slot:
        raw, sealed = self._call(self.contract.functions.getSlot(job_id, index))
        return Slot(
            job_id=JobId(job_id),
            index=index,
            provider=to_checksum_address(raw[0]),
            price=raw[1],
            state=SlotState(raw[2]),
            sealed=bytes(sealed),
            votes=1 + raw[3],
        )

    def slots(self, job_id: int, terms: JobTerms) -> list[Slot]:
        """Every slot the job may use (main, audit, verifiers)."""
        # Indexes: main 0..k-1, audit k, verifiers k+1..k+verifiers. The audit index is
        # reserved even when the job has no audit, so the range is not terms.slot_count.
        return [self.slot(job_id, i) for i in range(terms.k + 1 + terms.verifiers)]

    def provider(self, address: str) -> Provider:
        raw = self._call(self.contract.functions.getProvider(to_checksum_address(address)))
        return Provider(
            address=to_checksum_address(address),
            free=Wei(raw[0]),
            locked=Wei(raw[1]),
            succeeded=raw[2],
            slashed=raw[3],
            capabilities=raw[4],
            unbonding_at=raw[5],
            audited=raw[6],
            registered=raw[7],
            pool_index=raw[8],
            pool_weight=Wei(raw[9]),
        )

    def pool(self) -> tuple[int, Wei]:
        """The verifier pool: members (leaves used) and their total weight (wei of stake)."""
        members, weight = self._call(self.contract.functions.poolOf())
        return int(members), Wei(weight)

    def entrants_of(self, job_id: int) -> list[tuple[str, Wei]]:
        """A lottery job's entrants and their weights (stake when they entered), in entry order."""
        providers, weights = self._call(self.contract.functions.entrantsOf(job_id))
        return [(to_checksum_address(p), Wei(w)) for p, w in zip(providers, weights, strict=True)]

    @functools.cached_property
    def pool_epoch(self) -> int:
        """Blocks per pool epoch: seat draws read the pool as it stood when the epoch began, and a
        seat draw armed in an earlier epoch re-arms (the contract's ``POOL_EPOCH``)."""
        return int(self._call(self.contract.functions.POOL_EPOCH()))

    def draw_block_of(self, job_id: int) -> int:
        """The block whose hash the job's pending draw uses (0: it never had one)."""
        return int(self._call(self.contract.functions.drawBlockOf(job_id)))

    def credit_of(self, address: str) -> Wei:
        return Wei(self._call(self.contract.functions.creditOf(to_checksum_address(address))))

    def slash_pool_of(self, job_id: int) -> Wei:
        return Wei(self._call(self.contract.functions.slashPoolOf(job_id)))

    def challenge_bond_of(self, job_id: int) -> Wei:
        return Wei(self._call(self.contract.functions.challengeBondOf(job_id)))

    def escrow_for(self, terms: JobTerms) -> Wei:
        return Wei(self._call(self.contract.functions.escrowFor(terms.as_abi())))

    def unbonding_delay(self) -> int:
        return int(self._call(self.contract.functions.unbondingDelay()))

    def terms_of(self, job_id: int) -> JobTerms:
        """The job's terms, read once from its JobPosted event and cached."""
        cached = self._terms.get(job_id)
        if cached is not None:
            return cached
        posted = self.job_posted(job_id)
        terms = JobTerms.from_abi(posted.args["terms"])
        self._terms[job_id] = terms
        return terms

    def job_posted(self, job_id: int) -> MarketEvent:
        """The JobPosted event of a job (spec CID, terms, escrow)."""
        found = self.events(names=("JobPosted",), job_id=job_id)
        if not found:
            raise errors.UnknownJob(jobId=job_id)
        return found[0]

    # ---------------------------------------------------------------- events

    def events(
        self,
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        names: Sequence[str] | None = None,
        job_id: int | None = None,
    ) -> list[MarketEvent]:
        """Decoded contract events in a block range, optionally by name and job."""
        topics: list[Any] = []
        if names:
            topics.append([self._topic(n) for n in names])
        if job_id is not None:
            if not topics:
                topics.append(None)
            topics.append("0x" + job_id.to_bytes(32, "big").hex())
        params: dict[str, Any] = {"address": self.address, "fromBlock": from_block, "toBlock": to_block}
        if topics:
            params["topics"] = topics
        logs = self._rpc(lambda: self.w3.eth.get_logs(params))  # type: ignore[arg-type]
        return self.decode_logs(logs)

    def decode_logs(self, logs: Iterable[Any]) -> list[MarketEvent]:
        out = []
        for log in logs:
            if to_checksum_address(log["address"]) != self.address or not log["topics"]:
                continue
            name = self._events_by_topic.get(HexBytes(log["topics"][0]))
            if name is None:
                continue
            decoded = getattr(self.contract.events, name)().process_log(log)
            out.append(
                MarketEvent(
                    name=name,
                    args=_plain(dict(decoded["args"])),
                    block_number=int(log["blockNumber"]),
                    tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
                    log_index=int(log["logIndex"]),
                )
            )
        return out

    def _topic(self, name: str) -> str:
        for topic, event_name in self._events_by_topic.items():
            if event_name == name:
                return topic.to_0x_hex()
        raise ValueError(f"no event named {name}")

    # ------------------------------------------------------------- providers

    def register(self, capabilities: int, stake: int) -> TxResult:
        return self._transact(self.contract.functions.register(int(capabilities)), value=stake)

    def add_stake(self, amount: int) -> TxResult:
        return self._transact(self.contract.functions.addStake(), value=amount)

    def set_capabilities(self, capabilities: int) -> TxResult:
        return self._transact(self.contract.functions.setCapabilities(int(capabilities)))

    def begin_unbonding(self) -> TxResult:
        return self._transact(self.contract.functions.beginUnbonding())

    def unstake(self, amount: int) -> TxResult:
        return self._transact(self.contract.functions.unstake(amount))

    # ------------------------------------------------------------------ jobs

    def post_job(self, spec_cid: str, terms: JobTerms, *, value: int | None = None) -> JobId:
        """Post a job with its escrow; returns the new job id."""
        result = self.post_job_tx(spec_cid, terms, value=value)
        return JobId(int(result.event("JobPosted").args["jobId"]))

    def post_job_tx(self, spec_cid: str, terms: JobTerms, *, value: int | None = None) -> TxResult:
        escrow = terms.escrow if value is None else value
        result = self._transact(self.contract.functions.postJob(spec_cid, terms.as_abi()), value=escrow)
        self._terms[int(result.event("JobPosted").args["jobId"])] = terms
        return result

    def bid(self, job_id: int, price: int, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.bid(job_id, terms.as_abi(), price))

    def enter(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        """Enter a lottery job's draw (a :meth:`bid` on such a job does the same)."""
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.enter(job_id, terms.as_abi()))

    def withdraw_bid(self, job_id: int, slot: int, terms: JobTerms | None = None) -> TxResult:
        """Leave ``slot`` of a round that has not filled; its collateral is free again."""
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.withdrawBid(job_id, terms.as_abi(), slot))

    def draw(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        """Carry out the job's pending draw: an audit decision, or audit / verifier seats."""
        terms = terms or self.terms_of(job_id)
        fn = self.contract.functions.draw(job_id, terms.as_abi())
        gas = self.gas
        if gas is None:
            # The draw uses the hash of the block it was armed in, which may still be the head:
            # an estimate against "latest" runs as if in that block and reverts DrawTooEarly.
            # "pending" is the block the transaction lands in.
            estimate = self._rpc(lambda: _decoded(lambda: fn.estimate_gas({"from": self.account}, "pending")))
            gas = int(estimate * 1.2) + 10_000
        return self._transact(fn, gas=gas)

    def close_bidding(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.closeBidding(job_id, terms.as_abi()))

    def commit(self, job_id: int, slot: int, commitment: bytes, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.commit(job_id, terms.as_abi(), slot, commitment))

    def reveal(
        self,
        job_id: int,
        slot: int,
        result_cid: str,
        usage: int,
        salt: bytes,
        terms: JobTerms | None = None,
        *,
        envelope: bytes = b"",
    ) -> TxResult:
        """Reveal a committed result the way its slot must.

        Main and audit slots of a job with verifiers reveal sealed: only ``keccak256(cid)``
        and ``envelope`` (the CID encrypted to the client, see :mod:`chain_scheduler.sealing`)
        go on chain. Every other slot reveals the CID; ``envelope`` is then ignored.
        """
        terms = terms or self.terms_of(job_id)
        if terms.reveals_sealed(slot):
            fn = self.contract.functions.revealSealed(
                job_id, terms.as_abi(), slot, result_hash(result_cid), usage, salt, envelope
            )
        else:
            fn = self.contract.functions.reveal(job_id, terms.as_abi(), slot, result_cid, usage, salt)
        return self._transact(fn)

    def publish(self, job_id: int, result_cid: str, terms: JobTerms | None = None) -> TxResult:
        """Put a succeeded job's result CID on chain (``ResultPublished``) once its challenge
        window is over, and settle the job as :meth:`finalize` does: a result revealed sealed
        is settled only this way. Anyone holding the CID may; it must hash to the accepted result."""
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.publish(job_id, terms.as_abi(), result_cid))

    def timeout(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.timeout(job_id, terms.as_abi()))

    def finalize(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        """Settle a succeeded job after its challenge window. A sealed result settles by
        :meth:`publish` instead; a reveal window later, finalize fails such a job unpublished."""
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.finalize(job_id, terms.as_abi()))

    def cancel(self, job_id: int, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.cancel(job_id, terms.as_abi()))

    def cancel_orphan(self, job_id: int, parent_index: int, terms: JobTerms | None = None) -> TxResult:
        terms = terms or self.terms_of(job_id)
        return self._transact(self.contract.functions.cancelOrphan(job_id, terms.as_abi(), parent_index))

    def challenge(
        self, job_id: int, terms: JobTerms | None = None, *, bond: int | None = None, unread: bool = False
    ) -> TxResult:
        """Challenge a succeeded job's result (the client only), paying ``bond`` (the collateral).

        ``unread``: the client could not open the sealed result's envelope
        (``challengeUnread``): if the result stands, the bond comes back instead of going
        to the accused."""
        terms = terms or self.terms_of(job_id)
        value = terms.collateral if bond is None else bond
        fn = self.contract.functions.challengeUnread if unread else self.contract.functions.challenge
        return self._transact(fn(job_id, terms.as_abi()), value=value)

    def withdraw(self) -> TxResult:
        return self._transact(self.contract.functions.withdraw())

    # ------------------------------------------------------------- plumbing

    def _call(self, fn: Any) -> Any:
        def run() -> Any:
            try:
                return fn.call({"from": self.account})
            except Exception as exc:
                decoded = decode_revert(exc)
                if decoded is None:
                    raise
                raise decoded from exc

        return self._rpc(run)

    def _transact(self, fn: Any, *, value: int = 0, gas: int | None = None) -> TxResult:
        receipt = self._send_raw(fn, value=value, gas=self.gas if gas is None else gas)
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=self.decode_logs(receipt["logs"]),
        )

    def _send_raw(self, fn: Any, *, value: int, gas: int | None) -> Any:
        params: dict[str, Any] = {"from": self.account, "value": value}
        if gas is not None:
            params["gas"] = gas
        if self._sender is not None:
            return self._send_via_sender(fn, params)
        try:
            if self._signer is None:
                tx_hash = self._rpc(lambda: fn.transact(params))
            else:
                params["nonce"] = self._rpc(lambda: self.w3.eth.get_transaction_count(self.account, "pending"))
                tx = self._rpc(lambda: fn.build_transaction(params))
                signed = self._signer.sign_transaction(tx)
                tx_hash = self._rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except errors.ChainSchedulerError:
            raise
        except Exception as exc:
            decoded = decode_revert(exc)
            if decoded is None:
                raise
            raise decoded from exc
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.01)
        except TimeExhausted as exc:
            raise errors.TransactionFailed(
                f"Transaction {HexBytes(tx_hash).to_0x_hex()} was not mined within "
                f"{self.receipt_timeout:.0f}s; check the node, then look it up by hash.",
                tx_hash=HexBytes(tx_hash).to_0x_hex(),
            ) from exc
        if receipt["status"] != 1:
            raise self._explain_failure(fn, params, receipt)
        return receipt

    def _send_via_sender(self, fn: Any, params: dict[str, Any]) -> Any:
        """Build the transaction here, let the sender sign, journal, send and await it."""
        assert self._sender is not None
        # The sender sets nonce, fees and chain id; these placeholders only stop
        # build_transaction from asking the node for values that are replaced anyway.
        template = {**params, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0, "chainId": 0, "nonce": 0}
        try:
            tx = self._rpc(lambda: fn.build_transaction(template))
        except errors.ChainSchedulerError:
            raise
        except Exception as exc:
            decoded = decode_revert(exc)
            if decoded is None:
                raise
            raise decoded from exc
        receipt = self._sender.send(dict(tx), label=_label(fn))
        if receipt["status"] != 1:
            raise self._explain_failure(fn, params, receipt)
        return receipt

    def _explain_failure(self, fn: Any, params: dict[str, Any], receipt: Any) -> errors.ChainSchedulerError:
        """Replay a failed transaction as a call to decode why it reverted."""
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        call_params = {k: v for k, v in params.items() if k in ("from", "value", "gas")}
        try:
            # On the state after the failed transaction's own block: its changes were
            # reverted, and the block's timestamp is the one its deadline checks saw.
            fn.call(call_params, block_identifier=int(receipt["blockNumber"]))
        except Exception as exc:  # noqa: BLE001 - any failure is the explanation we want
            decoded = decode_revert(exc)
            if decoded is not None:
                if isinstance(decoded, errors.TransactionFailed):
                    decoded.tx_hash = tx_hash
                return decoded
        return errors.TransactionFailed(
            f"Transaction {tx_hash} reverted (gas used {receipt['gasUsed']}); the replay did not "
            "say why. Was it out of gas?",
            tx_hash=tx_hash,
        )

    def _rpc(self, call: Callable[[], Any]) -> Any:
        return rpc_call(call)


def _decoded(call: Callable[[], Any]) -> Any:
    """``call()``, with a contract revert raised as its decoded error."""
    try:
        return call()
    except Exception as exc:
        decoded = decode_revert(exc)
        if decoded is None:
            raise
        raise decoded from exc


def _label(fn: Any) -> str:
    """``"commit job_id=7"``: what a transaction does, for the sender's log and journal."""
    name = getattr(fn, "fn_name", None)
    if name is None:
        return "deploy"
    inputs = (getattr(fn, "abi", None) or {}).get("inputs") or []
    args = getattr(fn, "args", None) or ()
    if inputs and args and inputs[0].get("name") == "jobId":
        return f"{name} job_id={args[0]}"
    return str(name)


def _plain(value: Any) -> Any:
    """web3's AttributeDicts and HexBytes as plain Python values."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, HexBytes):
        return bytes(value)
    return value
