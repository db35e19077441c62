"""One transaction sender per account: local nonces, fees, replacement, a journal.

A provider node sends many transactions from one key (bid, commit, reveal,
finalize, withdraw) and must never lose one. :class:`TxSender` signs locally,
tracks the account's nonce itself, writes every signed transaction to a
:class:`TxJournal` *before* broadcasting it, waits for the receipt, and replaces
a transaction that is not mined in time with the same nonce and higher fees.
After a crash, :meth:`TxSender.resume` re-broadcasts what the journal still holds.

Example:
    >>> sender = TxSender(w3=w3, account=account, journal=state)
    >>> sender.start()
    >>> sender.resume()            # finish what a previous run left pending
    >>> receipt = sender.send(fn.build_transaction({"from": account.address}), label="bid job_id=7")
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, TypeVar

import rlp  # type: ignore[import-untyped]
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxReceipt

from chain_scheduler import errors
from chain_scheduler._rpc import rpc_call

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Status passed to :meth:`TxJournal.settled` when the nonce was used by a
#: transaction this sender never signed (or the node refused ours for good).
DROPPED = -1

#: Fields the sender owns: whatever the caller put there is replaced.
_SENDER_FIELDS = ("nonce", "from", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "type", "chainId")


@dataclass(frozen=True, slots=True)
class PendingTx:
    """A signed transaction the journal holds until its nonce is settled.

    Attributes:
        nonce: The account nonce it uses (replacements share it).
        tx_hash: Its hash, ``0x``-prefixed.
        raw_tx: The signed bytes, ready to broadcast again.
        label: What it does, for logs (``"commit job_id=7"``).
    """

    nonce: int
    tx_hash: str
    raw_tx: bytes
    label: str


class TxJournal(Protocol):
    """Durable record of signed transactions, written before each broadcast.

    A crash between signing and sending then loses nothing: the next run's
    :meth:`TxSender.resume` broadcasts what is still pending.
    """

    def record(self, nonce: int, tx_hash: str, raw_tx: bytes, label: str) -> None:
        """Persist a signed transaction (durably) before it is broadcast."""
        ...

    def settled(self, nonce: int, tx_hash: str, status: int) -> None:
        """Every transaction of ``nonce`` is done: ``tx_hash`` was mined with ``status``
        (1 success, 0 reverted), or ``status`` is -1 (dropped: the nonce went to a
        transaction the journal never recorded, or the node refused ours for good)."""
        ...

    def pending(self) -> list[PendingTx]:
        """Transactions whose nonce is not settled, by nonce then in recording order."""
        ...


class TxSender:
    """Sends transactions for one local account, and makes sure each one lands.

    Args:
        w3: A connected Web3 instance.
        account: The key that signs.
        journal: Where signed transactions are recorded before broadcast (None: not
            durable, for scripts and tests).
        receipt_timeout: Seconds :meth:`send` waits for a receipt before raising
            :class:`~chain_scheduler.errors.TransactionFailed` (the transaction stays
            in the journal; :meth:`resume` picks it up).
        stuck_after: Seconds without a receipt after which the transaction is
            re-signed with the same nonce and higher fees and sent again.
        fee_bump: Factor applied to both fee fields on each replacement (nodes
            require at least 1.1).
        max_retries: Replacements per transaction, and re-signs after a nonce or
            fee refusal, before giving up.
        poll_interval: Longest pause between two receipt polls.
    """

    def __init__(
        self,
        *,
        w3: Web3,
        account: LocalAccount,
        journal: TxJournal | None = None,
        receipt_timeout: float = 120.0,
        stuck_after: float = 30.0,
        fee_bump: float = 1.125,
        max_retries: int = 5,
        poll_interval: float = 0.5,
    ) -> None:
        if fee_bump <= 1:
            raise ValueError(f"fee_bump must be above 1 (nodes want at least 1.1), got {fee_bump}")
        self.w3 = w3
        self.account = account
        self.address = to_checksum_address(account.address)
        self.journal = journal
        self.receipt_timeout = receipt_timeout
        self.stuck_after = stuck_after
        self.fee_bump = Fraction(str(fee_bump))
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None

    # ------------------------------------------------------------- lifecycle

    @property
    def started(self) -> bool:
        return self._chain_id is not None and self._next_nonce is not None

    @property
    def next_nonce(self) -> int | None:
        """The nonce the next new transaction will use (None before :meth:`start`)."""
        return self._next_nonce

    def start(self) -> None:
        """Read the chain id and the account's nonce from the node.

        The nonce also skips past anything the journal still holds, so a new
        transaction never takes the nonce of a pending one; call :meth:`resume`
        next to broadcast those.
        """
        with self._lock:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
            self._resync_nonce()
            logger.info("sender for %s starts at nonce %d", self.address, self._next_nonce)

    def _resync_nonce(self) -> None:
        nonce = int(self._rpc(lambda: self.w3.eth.get_transaction_count(self.address, "pending")))
        if self.journal is not None:
            for tx in self.journal.pending():
                nonce = max(nonce, tx.nonce + 1)
        self._next_nonce = nonce

    # ------------------------------------------------------------------ send

    def send(self, tx: dict[str, Any], *, label: str = "") -> TxReceipt:
        """Sign, journal, broadcast and wait for one transaction.

        Args:
            tx: Transaction fields (``to``, ``data``, ``value``, ``gas``...), for
                instance from ``fn.build_transaction(...)``. Nonce, fees, chain id
                and sender are set here, whatever ``tx`` says. Without ``gas`` the
                node estimates it.
            label: What the transaction does, for logs and the journal.

        Returns:
            The receipt of whichever signed version was mined. A reverted
            transaction is returned too (``status == 0``): the caller decodes why.

        Raises:
            OutOfFunds: The account cannot pay for gas and value.
            ChainUnavailable: The node did not answer (the journal keeps the
                transaction; :meth:`resume` finishes it).
            TransactionFailed: Not mined within ``receipt_timeout``, or its nonce was
                taken by a transaction this sender did not sign.
        """
        base = {k: v for k, v in tx.items() if k not in _SENDER_FIELDS}
        with self._lock:
            if not self.started:
                self.start()
            fees = self._current_fees()
            if "gas" not in base:
                base["gas"] = self._estimate_gas(base, fees, label)
            sent: list[PendingTx] = []
            nonce_errors = 0
            fee_errors = 0
            while True:
                assert self._next_nonce is not None
                nonce = self._next_nonce
                pending = self._sign({**base, **fees, "nonce": nonce}, label)
                sent.append(pending)
                try:
                    outcome = self._broadcast(pending, base, fees)
                except (errors.OutOfFunds, errors.TransactionFailed):
                    # Refused for good: nothing of this nonce is in the node's pool.
                    self._settle(nonce, pending.tx_hash, DROPPED)
                    raise
                if outcome == "sent":
                    self._next_nonce = nonce + 1
                    break
                if outcome == "underpriced":
                    fee_errors += 1
                    if fee_errors > self.max_retries:
                        self._settle(nonce, pending.tx_hash, DROPPED)
                        raise errors.TransactionFailed(
                            f"The node kept refusing the fees of {label or 'a transaction'} from "
                            f"{self.address} (nonce {nonce}) after {self.max_retries} bumps; "
                            "check the node's minimum gas price.",
                            tx_hash=pending.tx_hash,
                        )
                    fees = self._bumped(fees)
                    continue
                # "nonce too low": the nonce is used. By one of ours?
                receipt = self._find_receipt(sent)
                if receipt is not None:
                    self._next_nonce = nonce + 1
                    return receipt
                self._settle(nonce, pending.tx_hash, DROPPED)
                nonce_errors += 1
                if nonce_errors > self.max_retries:
                    raise errors.TransactionFailed(
                        f"Nonce of {self.address} keeps moving under {label or 'a transaction'}: is another "
                        "process sending from the same key? Give each node its own account.",
                        tx_hash=pending.tx_hash,
                    )
                logger.warning(
                    "nonce %d of %s was used by another transaction; resynchronising (%s)", nonce, self.address, label
                )
                sent.clear()
                self._resync_nonce()
        return self._wait(sent, base, fees, label)

    def resume(self) -> list[tuple[PendingTx, TxReceipt | None]]:
        """Finish the transactions a previous run left in the journal.

        Each pending nonce is looked up (any of its hashes may have been mined),
        else its latest signed version is broadcast again and awaited, replaced
        with higher fees when stuck like any other.

        Returns:
            For each pending nonce, the transaction that settled it and its receipt
            (None when the nonce went to a transaction the journal never recorded).
        """
        if self.journal is None:
            return []
        with self._lock:
            if not self.started:
                self.start()
        by_nonce: dict[int, list[PendingTx]] = {}
        for tx in self.journal.pending():
            by_nonce.setdefault(tx.nonce, []).append(tx)
        out: list[tuple[PendingTx, TxReceipt | None]] = []
        for nonce in sorted(by_nonce):
            sent = by_nonce[nonce]
            label = sent[-1].label
            receipt = self._find_receipt(sent)
            if receipt is None:
                latest = sent[-1]
                logger.info("resuming %s (nonce %d, %s)", label, nonce, latest.tx_hash)
                fields = _unsigned_fields(latest.raw_tx)
                fees: dict[str, int] = {}
                for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
                    if key in fields:
                        fees[key] = int(fields.pop(key))
                base = {k: v for k, v in fields.items() if k not in _SENDER_FIELDS}
                try:
                    outcome = self._broadcast(latest, base, fees)
                    if outcome == "underpriced":
                        # Fees moved while we were down: replace at once.
                        fees = self._bumped(fees)
                        sent.append(self._sign({**base, **fees, "nonce": nonce}, label))
                        outcome = self._broadcast(sent[-1], base, fees)
                except errors.OutOfFunds:
                    raise  # stays journalled: fund the account, then resume again
                except errors.TransactionFailed as exc:
                    logger.warning("dropping %s (nonce %d): %s", label, nonce, exc)
                    self._settle(nonce, latest.tx_hash, DROPPED)
                    out.append((latest, None))
                    continue
                if outcome == "nonce_used":
                    receipt = self._find_receipt(sent)
                    if receipt is None:
                        logger.warning("nonce %d of %s (%s) went to another transaction", nonce, self.address, label)
                        self._settle(nonce, latest.tx_hash, DROPPED)
                        out.append((latest, None))
                        continue
                else:
                    try:
                        receipt = self._wait(sent, base, fees, label)
                    except errors.TransactionFailed:
                        if self._nonce_used(nonce):
                            out.append((latest, None))
                            continue
                        raise
            mined = HexBytes(receipt["transactionHash"]).to_0x_hex()
            out.append((next((t for t in sent if t.tx_hash == mined), sent[-1]), receipt))
        with self._lock:
            self._resync_nonce()
        return out

    # ------------------------------------------------------------- internals

    def _sign(self, fields: dict[str, Any], label: str) -> PendingTx:
        assert self._chain_id is not None
        signed = self.account.sign_transaction({**fields, "chainId": self._chain_id})
        pending = PendingTx(
            nonce=int(fields["nonce"]),
            tx_hash=HexBytes(signed.hash).to_0x_hex(),
            raw_tx=bytes(signed.raw_transaction),
            label=label,
        )
        if self.journal is not None:
            self.journal.record(pending.nonce, pending.tx_hash, pending.raw_tx, label)
        return pending

    def _broadcast(self, tx: PendingTx, base: dict[str, Any], fees: dict[str, int]) -> str:
        """Send the raw bytes: ``sent``, ``underpriced`` (bump and retry) or ``nonce_used``."""
        try:
            self._rpc(lambda: self.w3.eth.send_raw_transaction(tx.raw_tx))
        except errors.ChainUnavailable:
            # It may or may not have arrived: ask the node for the nonce next time.
            self._next_nonce = None
            raise
        except Exception as exc:  # classified by the node's message below
            text = str(exc).lower()
            if "already known" in text or "already imported" in text:
                logger.debug("%s already in the node's pool (%s)", tx.tx_hash, tx.label)
                return "sent"
            if "nonce too low" in text or "nonce has already been used" in text or "old nonce" in text:
                return "nonce_used"
            if "underpriced" in text or "base fee" in text or "fee cap" in text or "gas price too low" in text:
                logger.info("node refused the fees of %s (%s): %s", tx.tx_hash, tx.label, exc)
                return "underpriced"
            if "insufficient funds" in text:
                raise self._out_of_funds(base, fees, tx.label) from exc
            raise errors.TransactionFailed(
                f"The node refused {tx.label or 'a transaction'} from {self.address}: {exc}", tx_hash=tx.tx_hash
            ) from exc
        logger.debug("sent %s nonce=%d %s", tx.tx_hash, tx.nonce, tx.label)
        return "sent"

    def _wait(self, sent: list[PendingTx], base: dict[str, Any], fees: dict[str, int], label: str) -> TxReceipt:
        """Poll every hash of the nonce until one is mined, replacing when stuck."""
        nonce = sent[-1].nonce
        started = last_sent = time.monotonic()
        pause = min(0.002, self.poll_interval)  # automine answers in a few ms; back off from there
        replacements = 0
        while True:
            receipt = self._find_receipt(sent)
            if receipt is not None:
                return receipt
            now = time.monotonic()
            if now - started >= self.receipt_timeout:
                raise errors.TransactionFailed(
                    f"{label or 'Transaction'} {sent[-1].tx_hash} from {self.address} (nonce {nonce}) was not "
                    f"mined within {self.receipt_timeout:.0f}s. It stays journalled; the next resume() "
                    "sends it again. Check the node is mining.",
                    tx_hash=sent[-1].tx_hash,
                )
            if now - last_sent >= self.stuck_after:
                if self._nonce_used(nonce):
                    # Re-check ours once more: the block may have landed between the two reads.
                    receipt = self._find_receipt(sent)
                    if receipt is not None:
                        return receipt
                    self._settle(nonce, sent[-1].tx_hash, DROPPED)
                    with self._lock:
                        self._next_nonce = None
                    raise errors.TransactionFailed(
                        f"Nonce {nonce} of {self.address} went to a transaction this node did not sign, "
                        f"so {label or 'the transaction'} was dropped. Is another process using the same key?",
                        tx_hash=sent[-1].tx_hash,
                    )
                if replacements < self.max_retries:
                    replacements += 1
                    fees = self._bumped(fees)
                    replacement = self._sign({**base, **fees, "nonce": nonce}, label)
                    sent.append(replacement)
                    logger.warning(
                        "%s (nonce %d) not mined after %.0fs; replacing with %s, fees %s",
                        label or "transaction",
                        nonce,
                        now - last_sent,
                        replacement.tx_hash,
                        fees,
                    )
                    try:
                        outcome = self._broadcast(replacement, base, fees)
                    except (errors.OutOfFunds, errors.TransactionFailed) as exc:
                        logger.warning("replacement of %s refused (%s); waiting for the original", label, exc)
                        outcome = "refused"
                    if outcome == "nonce_used":
                        continue  # mined meanwhile (ours, found on the next poll) or taken
                self._fill_gap(nonce)
                last_sent = now
            time.sleep(pause)
            pause = min(pause * 1.5, self.poll_interval)

    def _fill_gap(self, nonce: int) -> None:
        """Broadcast again the journalled transactions of lower nonces the node lost.

        A node restarted without its pool forgets pending transactions; ours then
        waits behind the gap forever. The journal still has them.
        """
        if self.journal is None:
            return
        known = int(self._rpc(lambda: self.w3.eth.get_transaction_count(self.address, "pending")))
        if known >= nonce:
            return
        latest: dict[int, PendingTx] = {}
        for tx in self.journal.pending():
            if known <= tx.nonce < nonce:
                latest[tx.nonce] = tx
        for gap_nonce in sorted(latest):
            tx = latest[gap_nonce]
            logger.warning("nonce %d (%s) is missing from the node's pool; sending it again", gap_nonce, tx.label)
            try:
                self._broadcast(tx, {}, {})
            except (errors.OutOfFunds, errors.TransactionFailed) as exc:
                logger.warning("could not resend %s: %s", tx.tx_hash, exc)

    def _find_receipt(self, sent: list[PendingTx]) -> TxReceipt | None:
        for tx in reversed(sent):
            try:
                receipt: TxReceipt = self._rpc(lambda tx=tx: self.w3.eth.get_transaction_receipt(tx.tx_hash))  # type: ignore[misc]
            except TransactionNotFound:
                continue
            if receipt is None or receipt.get("blockNumber") is None:
                continue
            self._settle(tx.nonce, tx.tx_hash, int(receipt["status"]))
            logger.info(
                "%s mined: %s block %d status %d", tx.label or "transaction", tx.tx_hash,
                receipt["blockNumber"], receipt["status"],
            )  # fmt: skip
            return receipt
        return None

    def _estimate_gas(self, base: dict[str, Any], fees: dict[str, int], label: str) -> int:
        try:
            return int(self._rpc(lambda: self.w3.eth.estimate_gas({**base, "from": self.address})))  # type: ignore[typeddict-item]
        except errors.ChainSchedulerError:
            raise
        except Exception as exc:
            if "insufficient funds" in str(exc).lower():
                raise self._out_of_funds({**base, "gas": 21_000}, fees, label) from exc
            raise  # a revert: the caller decodes it

    def _nonce_used(self, nonce: int) -> bool:
        mined = int(self._rpc(lambda: self.w3.eth.get_transaction_count(self.address, "latest")))
        return mined > nonce

    def _settle(self, nonce: int, tx_hash: str, status: int) -> None:
        if self.journal is not None:
            self.journal.settled(nonce, tx_hash, status)

    def _current_fees(self) -> dict[str, int]:
        """EIP-1559 fees from the node, or a legacy gas price when blocks have no base fee."""
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": int(self._rpc(lambda: self.w3.eth.gas_price))}
        tip = int(self._rpc(lambda: self.w3.eth.max_priority_fee))
        return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}

    def _bumped(self, old: dict[str, int]) -> dict[str, int]:
        """Old fees times ``fee_bump`` (at least +1 wei each), or today's fees if higher."""
        fresh = self._current_fees()
        if ("gasPrice" in old) != ("gasPrice" in fresh):
            fresh = {}
        out = {}
        for key, value in old.items():
            raised = max(value + 1, math.ceil(value * self.fee_bump))
            out[key] = max(raised, fresh.get(key, 0))
        if "maxFeePerGas" in out:
            out["maxFeePerGas"] = max(out["maxFeePerGas"], out["maxPriorityFeePerGas"])
        return out

    def _out_of_funds(self, base: dict[str, Any], fees: dict[str, int], label: str) -> errors.OutOfFunds:
        price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        gas = int(base.get("gas", 0))
        value = int(base.get("value", 0))
        needed = gas * price + value
        try:
            balance: int | None = int(self._rpc(lambda: self.w3.eth.get_balance(self.address)))
        except errors.ChainUnavailable:
            balance = None
        error = errors.OutOfFunds(
            account=self.address, needed=needed, balance=balance, gas=gas, fee_per_gas=price, value=value, label=label
        )
        logger.error("%s", error)
        return error

    def _rpc(self, call: Callable[[], T]) -> T:
        return rpc_call(call)


def _unsigned_fields(raw: bytes) -> dict[str, Any]:
    """The fields of a signed transaction, without its signature, ready to sign again."""
    if raw and raw[0] < 0x80:  # typed (EIP-2718) envelope
        fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        for key in ("v", "r", "s", "yParity"):
            fields.pop(key, None)
        return fields
    nonce, gas_price, gas, to, value, data, v, _r, _s = rlp.decode(raw)
    out: dict[str, Any] = {
        "nonce": _int(nonce),
        "gasPrice": _int(gas_price),
        "gas": _int(gas),
        "to": to_checksum_address(to) if to else None,
        "value": _int(value),
        "data": bytes(data),
    }
    if _int(v) >= 35:
        out["chainId"] = (_int(v) - 35) // 2
    if out["to"] is None:
        del out["to"]
    return out


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")
