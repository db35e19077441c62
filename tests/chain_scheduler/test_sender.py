"""TxSender against a real anvil node: nonces, replacement, lost responses, resume, failures.

One anvil node serves the module; each test signs with its own dev account (from
anvil's mnemonic) so nonces never interfere between tests.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound
from web3.types import RPCEndpoint, RPCResponse

from chain_scheduler import Capability, JobStatus, JobTerms, Market, PendingTx, TxSender, errors
from chain_scheduler._anvil import DEVNET_MNEMONIC, Anvil, find_anvil, free_port
from chain_scheduler._sender import DROPPED

Account.enable_unaudited_hdwallet_features()
ETH = 10**18


def dev_account(index: int) -> LocalAccount:
    return cast(LocalAccount, Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"))


class MemoryJournal:
    """An in-memory TxJournal that can 'crash' right after recording (before the broadcast)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.crash_on_record = False

    def record(self, nonce: int, tx_hash: str, raw_tx: bytes, label: str) -> None:
        if not any(r["tx_hash"] == tx_hash for r in self.rows):
            self.rows.append({"nonce": nonce, "tx_hash": tx_hash, "raw_tx": raw_tx, "label": label, "status": None})
        if self.crash_on_record:
            raise SimulatedCrash(tx_hash)

    def settled(self, nonce: int, tx_hash: str, status: int) -> None:
        for r in self.rows:
            if r["nonce"] == nonce and r["status"] is None:
                r["status"] = status
                r["mined"] = tx_hash

    def pending(self) -> list[PendingTx]:
        rows = sorted((r for r in self.rows if r["status"] is None), key=lambda r: r["nonce"])
        return [PendingTx(nonce=r["nonce"], tx_hash=r["tx_hash"], raw_tx=r["raw_tx"], label=r["label"]) for r in rows]

    def hashes(self, nonce: int) -> list[str]:
        return [r["tx_hash"] for r in self.rows if r["nonce"] == nonce]


class SimulatedCrash(Exception):
    """The process 'dies' between journal.record and the broadcast."""


class LostResponseProvider(HTTPProvider):
    """Delivers the next eth_sendRawTransaction, loses the answer and sends it again,
    as web3.py's retry does after a dropped response."""

    lose_next = False

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_sendRawTransaction" and self.lose_next:
            self.lose_next = False
            first = super().make_request(method, params)
            assert "result" in first, first  # it landed; the caller never sees this answer
        return super().make_request(method, params)


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    with Anvil(accounts=20) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def w3(node: Anvil) -> Web3:
    return node.web3()


def transfer(to: str, value: int = 1) -> dict[str, Any]:
    return {"to": to, "value": value, "gas": 21_000}


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    return w3.provider.make_request(RPCEndpoint(method), list(params))


def test_many_sequential_sends_use_consecutive_nonces(w3: Web3) -> None:
    # Given a sender and a journal
    account = dev_account(5)
    journal = MemoryJournal()
    sender = TxSender(w3=w3, account=account, journal=journal)
    sender.start()
    first = w3.eth.get_transaction_count(account.address)
    # When it sends 20 transactions, 10 of them from a second thread at the same time
    receipts: list[Any] = []

    def burst(n: int) -> None:
        for _ in range(n):
            receipts.append(sender.send(transfer(dev_account(6).address), label="transfer"))

    other = threading.Thread(target=burst, args=(10,))
    other.start()
    burst(10)
    other.join()
    # Then all were mined, each with its own nonce, in an unbroken sequence
    assert [r["status"] for r in receipts] == [1] * 20
    nonces = sorted(w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts)
    assert nonces == list(range(first, first + 20))
    assert w3.eth.get_transaction_count(account.address) == first + 20
    assert sender.next_nonce == first + 20
    assert journal.pending() == []
    assert all(r["status"] == 1 for r in journal.rows) and len(journal.rows) == 20


def test_stuck_transaction_is_replaced_with_higher_fees_and_mined_once(w3: Web3) -> None:
    # Given a node that stops mining
    account = dev_account(7)
    journal = MemoryJournal()
    sender = TxSender(w3=w3, account=account, journal=journal, stuck_after=0.3, poll_interval=0.05)
    sender.start()
    nonce = w3.eth.get_transaction_count(account.address)
    rpc(w3, "evm_setAutomine", False)
    try:
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(receipt=sender.send(transfer(account.address))))
        thread.start()
        # When the transaction sits unmined past stuck_after, a replacement is sent
        deadline = time.monotonic() + 15
        while len(journal.hashes(nonce)) < 2 or not _in_pool(w3, journal.hashes(nonce)[1]):
            # (journalled first, then broadcast: mine only once the node holds the replacement)
            assert time.monotonic() < deadline, "no replacement was sent"
            time.sleep(0.05)
        rpc(w3, "evm_mine")
        thread.join(timeout=15)
    finally:
        rpc(w3, "evm_setAutomine", True)
    # Then exactly one version of the nonce was mined: a replacement, with higher fees
    receipt = result["receipt"]
    hashes = journal.hashes(nonce)
    mined = HexBytes(receipt["transactionHash"]).to_0x_hex()
    assert receipt["status"] == 1 and mined in hashes[1:]
    landed = []
    for h in hashes:
        try:
            w3.eth.get_transaction_receipt(HexStr(h))
            landed.append(h)
        except TransactionNotFound:
            pass
    assert landed == [mined]
    first_fee = _fields(journal.rows[0]["raw_tx"])["maxFeePerGas"]
    assert w3.eth.get_transaction(HexStr(mined))["maxFeePerGas"] >= first_fee * 1.125
    assert w3.eth.get_transaction_count(account.address) == nonce + 1
    assert journal.pending() == []


def _in_pool(w3: Web3, tx_hash: str) -> bool:
    try:
        w3.eth.get_transaction(HexStr(tx_hash))
    except TransactionNotFound:
        return False
    return True


def test_nonce_too_low_for_a_transaction_that_landed_is_success(node: Anvil) -> None:
    # Given a connection that loses the answer to a send, so the send is repeated
    provider = LostResponseProvider(node.url, request_kwargs={"timeout": 10})
    w3 = Web3(provider)
    account = dev_account(8)
    journal = MemoryJournal()
    sender = TxSender(w3=w3, account=account, journal=journal)
    sender.start()
    nonce = w3.eth.get_transaction_count(account.address)
    provider.lose_next = True
    # When the repeated send answers "nonce too low" (the first one was mined)
    receipt = sender.send(transfer(account.address), label="lost answer")
    # Then the sender found the receipt by hash and reports success
    assert provider.lose_next is False  # the scenario really happened
    assert receipt["status"] == 1
    assert HexBytes(receipt["transactionHash"]).to_0x_hex() == journal.hashes(nonce)[0]
    assert journal.rows[0]["status"] == 1
    # And the nonce sequence is intact for the next transaction
    assert sender.send(transfer(account.address))["status"] == 1
    assert w3.eth.get_transaction_count(account.address) == nonce + 2


def test_crash_between_journal_and_broadcast_is_resumed(w3: Web3) -> None:
    # Given a transaction signed and journalled, then a crash before it was broadcast
    account = dev_account(9)
    journal = MemoryJournal()
    crashed = TxSender(w3=w3, account=account, journal=journal)
    nonce = w3.eth.get_transaction_count(account.address)
    journal.crash_on_record = True
    with pytest.raises(SimulatedCrash):
        crashed.send(transfer(dev_account(10).address, 12345), label="pay job_id=1")
    journal.crash_on_record = False
    assert w3.eth.get_transaction_count(account.address, "pending") == nonce  # never reached the node
    # When a new process starts a sender on the same journal
    sender = TxSender(w3=w3, account=account, journal=journal)
    sender.start()
    assert sender.next_nonce == nonce + 1  # new work never takes the journalled nonce
    resumed = sender.resume()
    # Then the journalled transaction is broadcast and mined, and settled in the journal
    assert len(resumed) == 1
    tx, receipt = resumed[0]
    assert receipt is not None and receipt["status"] == 1
    assert (tx.nonce, tx.label) == (nonce, "pay job_id=1")
    assert w3.eth.get_transaction(receipt["transactionHash"])["value"] == 12345
    assert journal.pending() == []
    assert sender.send(transfer(account.address))["status"] == 1
    assert w3.eth.get_transaction_count(account.address) == nonce + 2


def test_resume_settles_a_nonce_taken_by_another_transaction_as_dropped(w3: Web3) -> None:
    # Given a journalled, never-broadcast transaction whose nonce another transaction then used
    account = dev_account(11)
    journal = MemoryJournal()
    nonce = w3.eth.get_transaction_count(account.address)
    journal.crash_on_record = True
    with pytest.raises(SimulatedCrash):
        TxSender(w3=w3, account=account, journal=journal).send(transfer(account.address), label="lost")
    journal.crash_on_record = False
    TxSender(w3=w3, account=account).send(transfer(account.address, 2), label="other")  # takes `nonce`
    # When resuming
    sender = TxSender(w3=w3, account=account, journal=journal)
    resumed = sender.resume()
    # Then the entry is closed as dropped, and the sender continues at the right nonce
    assert [(tx.nonce, receipt) for tx, receipt in resumed] == [(nonce, None)]
    assert journal.rows[0]["status"] == DROPPED
    assert sender.next_nonce == nonce + 1
    assert sender.send(transfer(account.address))["status"] == 1


def test_account_without_funds_raises_out_of_funds(w3: Web3) -> None:
    # Given an account holding nothing
    broke: LocalAccount = Account.create()
    journal = MemoryJournal()
    sender = TxSender(w3=w3, account=broke, journal=journal)
    # When it tries to pay for a transaction
    with pytest.raises(errors.OutOfFunds) as caught:
        sender.send(transfer(dev_account(1).address, 5), label="register")
    # Then the error names the account, its balance and what it needs
    err = caught.value
    assert err.account == broke.address
    assert err.balance == 0
    assert err.needed > 21_000 and err.needed % 21_000 == 5  # gas × fee + value
    assert broke.address in str(err) and "register" in str(err) and f"{err.needed:,} wei" in str(err)
    assert isinstance(err, errors.ChainSchedulerError)
    # And the journal does not keep a transaction that can never be sent
    assert journal.pending() == [] and journal.rows[0]["status"] == DROPPED
    assert sender.next_nonce == 0


def test_node_down_raises_chain_unavailable() -> None:
    # Given a sender whose node goes away
    with Anvil() as anvil:
        w3 = anvil.web3()
        sender = TxSender(w3=w3, account=dev_account(2))
        sender.start()
        assert sender.send(transfer(dev_account(3).address))["status"] == 1
    # When it sends, or starts again
    with pytest.raises(errors.ChainUnavailable, match="did not answer"):
        sender.send(transfer(dev_account(3).address))
    with pytest.raises(errors.ChainUnavailable):
        TxSender(w3=w3, account=dev_account(2)).start()


def test_legacy_gas_price_when_the_node_has_no_base_fee() -> None:
    # Given a pre-London chain (blocks without a base fee)
    port = free_port()
    proc = subprocess.Popen(
        [str(find_anvil()), "--port", str(port), "--host", "127.0.0.1", "--hardfork", "berlin",
         "--mnemonic", DEVNET_MNEMONIC, "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 20
        while not _connected(w3):
            assert time.monotonic() < deadline and proc.poll() is None, "anvil --hardfork berlin did not start"
            time.sleep(0.05)
        assert w3.eth.get_block("latest").get("baseFeePerGas") is None
        # When sending
        receipt = TxSender(w3=w3, account=dev_account(1)).send(transfer(dev_account(2).address))
        # Then a legacy transaction with the node's gas price was mined
        tx = w3.eth.get_transaction(receipt["transactionHash"])
        assert receipt["status"] == 1 and tx["type"] == 0 and tx["gasPrice"] == w3.eth.gas_price
    finally:
        proc.terminate()
        proc.wait(10)


def test_market_binding_sends_through_the_sender(w3: Web3) -> None:
    # Given a market deployed and used only through senders (LocalAccounts, journalled)
    owner, provider_key, client_key = dev_account(12), dev_account(13), dev_account(14)
    journals = {a.address: MemoryJournal() for a in (owner, provider_key, client_key)}

    def sender_for(a: LocalAccount) -> TxSender:
        return TxSender(w3=w3, account=a, journal=journals[a.address])

    market = Market.deploy(w3=w3, account=owner, unbonding_delay=60, sender=sender_for(owner))
    provider = market.with_account(provider_key, sender=sender_for(provider_key))
    client = market.with_account(client_key, sender=sender_for(client_key))
    # When a provider registers and a client posts a job
    registered = provider.register(Capability.WASM, ETH)
    terms = JobTerms.create(
        client=client.account, spec_cid="bafkreispec", max_price=5, max_units=1000, collateral=ETH // 100
    )
    job_id = client.post_job("bafkreispec", terms)
    # Then both happened on chain, through the journal
    assert registered.event("ProviderRegistered").args["provider"] == provider_key.address
    assert market.provider(provider_key.address).registered
    assert market.job(job_id).status == JobStatus.OPEN
    assert [r["label"] for r in journals[client_key.address].rows] == ["postJob"]
    assert [r["label"] for r in journals[provider_key.address].rows] == ["register"]
    assert all(j.pending() == [] for j in journals.values())
    # And a revert is still decoded into the contract's error
    with pytest.raises(errors.AlreadyRegistered):
        provider.register(Capability.WASM, ETH)
    bid = provider.bid(job_id, 5)
    assert bid.event("SlotAssigned").args["provider"] == provider_key.address
    assert journals[provider_key.address].rows[-1]["label"] == f"bid job_id={job_id}"


def test_sender_must_match_the_market_account(w3: Web3) -> None:
    market = Market(w3=w3, address="0x" + "11" * 20, account=w3.eth.accounts[0])
    with pytest.raises(ValueError, match="signs for"):
        market.with_account(dev_account(15), sender=TxSender(w3=w3, account=dev_account(16)))


def _fields(raw: bytes) -> dict[str, Any]:
    from chain_scheduler._sender import _unsigned_fields

    return _unsigned_fields(raw)


def _connected(w3: Web3) -> bool:
    try:
        return bool(w3.is_connected())
    except OSError:
        return False


def test_a_lower_nonce_the_node_lost_is_sent_again_from_the_journal(w3: Web3) -> None:
    # Given a journalled transaction the node accepted and then lost (a restart without its pool)
    account = dev_account(17)
    journal = MemoryJournal()
    nonce = w3.eth.get_transaction_count(account.address)
    fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    lost = account.sign_transaction({**transfer(account.address, 7), **fees, "nonce": nonce, "chainId": 31337})
    lost_hash = HexBytes(lost.hash).to_0x_hex()
    journal.record(nonce, lost_hash, bytes(lost.raw_transaction), "lost")
    rpc(w3, "evm_setAutomine", False)
    try:
        w3.eth.send_raw_transaction(lost.raw_transaction)
        rpc(w3, "anvil_dropTransaction", lost_hash)
    finally:
        rpc(w3, "evm_setAutomine", True)
    assert w3.eth.get_transaction_count(account.address, "pending") == nonce
    # When the next transaction waits behind the gap
    sender = TxSender(w3=w3, account=account, journal=journal, stuck_after=0.2, poll_interval=0.05)
    receipt = sender.send(transfer(account.address, 8), label="next")
    # Then the lost one was sent again from the journal, and both were mined in order
    assert receipt["status"] == 1
    assert w3.eth.get_transaction(receipt["transactionHash"])["nonce"] == nonce + 1
    assert w3.eth.get_transaction_receipt(HexStr(lost_hash))["status"] == 1
    assert [(tx.tx_hash, r is not None) for tx, r in sender.resume()] == [(lost_hash, True)]
    assert journal.pending() == []
