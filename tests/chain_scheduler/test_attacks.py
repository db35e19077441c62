"""Attacks that must fail: re-entrancy, copied commitments, lying reveals, non-parties."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from chain_harness import (
    BAD,
    COLLATERAL,
    GOOD,
    SPEC_CID,
    STAKE,
    UNBONDING_DELAY,
    Harness,
    deploy,
    destructive_terms,
    events,
    reverts,
)
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract

from chain_scheduler import JobStatus, SlotState, commitment, decode_revert, errors

ACCEPT, REENTER, REENTER_AND_SWALLOW, REFUSE = 0, 1, 2, 3
GAS = 3_000_000


class Hostile:
    """A deployed ReentrantReceiver driven from an EOA, with reverts decoded like the binding's."""

    def __init__(self, h: Harness, artifact: dict[str, Any]) -> None:
        self.h = h
        self.operator = h.outsiders[2]
        self.contract: Contract = deploy(h.w3, artifact, h.market.address, sender=self.operator)
        self.address = to_checksum_address(self.contract.address)

    def _send(self, fn: Any, value: int = 0) -> Any:
        params = {"from": self.operator, "gas": GAS, "value": value}
        receipt = self.h.w3.eth.wait_for_transaction_receipt(fn.transact(params))
        if receipt["status"] != 1:
            try:
                fn.call(params, block_identifier=receipt["blockNumber"] - 1)
            except Exception as exc:
                decoded = decode_revert(exc)
                assert decoded is not None, exc
                raise decoded from exc
            raise AssertionError("the transaction failed but its replay did not")
        return receipt

    def market_call(self, name: str, *args: Any, value: int = 0) -> Any:
        data = self.h.market.contract.encode_abi(name, args=list(args))
        return self._send(self.contract.functions.exec(HexBytes(data)), value)

    def set_mode(self, mode: int) -> None:
        self._send(self.contract.functions.setMode(mode))

    def read(self, name: str) -> Any:
        return getattr(self.contract.functions, name)().call()


@pytest.fixture
def hostile(h: Harness, test_contracts: dict[str, dict[str, Any]]) -> Hostile:
    """A ReentrantReceiver holding 2 ether of credit (unstaked provider stake)."""
    bad = Hostile(h, test_contracts["ReentrantReceiver"])
    bad.market_call("register", 1, value=2 * 10**18)
    bad.market_call("beginUnbonding")
    h.advance(UNBONDING_DELAY)
    bad.market_call("unstake", 2 * 10**18)
    assert h.credit(bad.address) == 2 * 10**18
    return bad


# ------------------------------------------------------------------ re-entrancy


def test_reentering_withdraw_makes_the_payment_fail_and_keeps_the_credit(h: Harness, hostile: Hostile) -> None:
    hostile.set_mode(REENTER)
    vault = h.contract_balance()
    with reverts(errors.TransferFailed, account=hostile.address, amount=2 * 10**18):
        hostile.market_call("withdraw")
    assert h.credit(hostile.address) == 2 * 10**18
    assert h.contract_balance() == vault
    assert h.balance(hostile.address) == 0


def test_swallowed_reentry_is_refused_and_pays_once(h: Harness, hostile: Hostile) -> None:
    hostile.set_mode(REENTER_AND_SWALLOW)
    vault = h.contract_balance()

    receipt = hostile.market_call("withdraw")

    assert hostile.read("reentries") == 1
    reentrant = function_signature_to_4byte_selector("ChainSchedulerReentrantCall()")
    assert hostile.read("lastError") == reentrant
    assert h.balance(hostile.address) == 2 * 10**18
    assert h.contract_balance() == vault - 2 * 10**18
    assert h.credit(hostile.address) == 0
    withdrawn = [e for e in h.market.decode_logs(receipt["logs"]) if e.name == "Withdrawn"]
    assert [e.args for e in withdrawn] == [{"account": hostile.address, "amount": 2 * 10**18}]


def test_receiver_refusing_ether_keeps_its_credit(h: Harness, hostile: Hostile) -> None:
    hostile.set_mode(REFUSE)
    with reverts(errors.TransferFailed, account=hostile.address, amount=2 * 10**18):
        hostile.market_call("withdraw")
    hostile.set_mode(ACCEPT)
    hostile.market_call("withdraw")
    assert h.balance(hostile.address) == 2 * 10**18


def test_reentrant_client_refund(h: Harness, hostile: Hostile) -> None:
    # The receiver as a client: its refunded escrow is just as safe.
    terms = h.terms(client=hostile.address)
    hostile.market_call("postJob", SPEC_CID, terms.as_abi(), value=terms.escrow)
    job_id = h.market.job_count()
    hostile.market_call("cancel", job_id, terms.as_abi())
    assert h.credit(hostile.address) == 2 * 10**18 + terms.escrow
    hostile.set_mode(REENTER)
    with pytest.raises(errors.TransferFailed):
        hostile.market_call("withdraw")
    assert h.credit(hostile.address) == 2 * 10**18 + terms.escrow


# ------------------------------------------------------------- copied answers


def test_replayed_commitment_cannot_be_revealed_and_is_slashed(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    honest, copycat = run.holders[0], run.holders[1]
    run.commit(0, GOOD, 100)
    # The copycat commits the exact hash it saw in slot 0.
    copied = run.slot(0).sealed
    h.as_(copycat).commit(run.job_id, 1, copied, run.terms)
    run.commit(2, GOOD, 100)
    run.reveal(0)  # the honest reveal puts (cid, usage, salt) in public view
    a = run.answers[0]

    with reverts(errors.CommitmentMismatch, jobId=run.job_id, slot=1):
        h.as_(copycat).reveal(run.job_id, 1, a.cid, a.usage, a.salt, run.terms)
    # Replaying the honest reveal on the honest slot is not the copycat's to do.
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=0, caller=copycat):
        h.as_(copycat).reveal(run.job_id, 0, a.cid, a.usage, a.salt, run.terms)

    run.reveal(2)
    tx = run.timeout_now()
    assert events(tx, "SlotSlashed") == [
        {"jobId": run.job_id, "slot": 1, "provider": copycat, "amount": COLLATERAL, "reopened": False}
    ]
    run.finalize()
    assert h.provider(copycat).slashed == 1
    assert h.provider(copycat).free == STAKE - COLLATERAL
    assert h.provider(honest).succeeded == 1


def test_a_commitment_is_bound_to_its_provider(h: Harness) -> None:
    run = h.drive("running", k=2, m=2)
    p0, p1 = run.holders[0], run.holders[1]
    salt = h.salt()
    # p1 computes a commitment in p0's name (to claim p0's answer later): it opens nothing for p1.
    h.as_(p1).commit(run.job_id, 1, commitment(run.job_id, p0, GOOD, 100, salt), run.terms)
    run.commit(0, GOOD, 100)
    with reverts(errors.CommitmentMismatch, jobId=run.job_id, slot=1):
        h.as_(p1).reveal(run.job_id, 1, GOOD, 100, salt, run.terms)


def test_a_commitment_is_bound_to_its_job(h: Harness) -> None:
    first = h.drive("running")
    second = h.drive("running")
    provider = second.holders[0]
    salt = h.salt()
    h.as_(provider).commit(second.job_id, 0, commitment(first.job_id, provider, GOOD, 100, salt), second.terms)
    with reverts(errors.CommitmentMismatch, jobId=second.job_id, slot=0):
        h.as_(provider).reveal(second.job_id, 0, GOOD, 100, salt, second.terms)


def test_revealing_the_majority_answer_instead_of_ones_own(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, results=[(GOOD, 100), (GOOD, 100), (BAD, 100)])
    run.reveal(0)
    run.reveal(1)
    liar = run.holders[2]
    salt = run.answers[2].salt
    with reverts(errors.CommitmentMismatch, jobId=run.job_id, slot=2):
        h.as_(liar).reveal(run.job_id, 2, GOOD, 100, salt, run.terms)
    run.timeout_now()
    assert h.provider(liar).slashed == 1


def test_reporting_more_usage_than_committed(h: Harness) -> None:
    run = h.drive("revealing", results=[(GOOD, 100)])
    a = run.answers[0]
    with reverts(errors.CommitmentMismatch, jobId=run.job_id, slot=0):
        h.as_(run.holders[0]).reveal(run.job_id, 0, a.cid, 10_000, a.salt, run.terms)


# ------------------------------------------------------------------ non-parties


def test_non_parties_cannot_act_for_others(h: Harness) -> None:
    run = h.drive("running", k=3, m=2, verifiers=2, challenge_window=500)
    outsider = h.outsiders[0]
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=0, caller=outsider):
        h.as_(outsider).commit(run.job_id, 0, b"\x00" * 32, run.terms)
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=1, caller=run.holders[0]):
        h.as_(run.holders[0]).commit(run.job_id, 1, b"\x00" * 32, run.terms)
    for i in range(3):
        run.commit(i)
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=1, caller=run.holders[2]):
        run.reveal(1, sender=run.holders[2])
    run.reveal_all()
    for caller in (outsider, run.holders[0], h.clients[1]):
        with reverts(errors.NotClient, jobId=run.job_id, caller=caller):
            run.challenge(sender=caller)
    assert run.status == JobStatus.SUCCEEDED


def test_non_client_cannot_cancel(h: Harness) -> None:
    run = h.post()
    with reverts(errors.NotClient, jobId=run.job_id, caller=h.providers[0]):
        run.cancel(sender=h.providers[0])
    assert run.status == JobStatus.OPEN


def test_posting_in_someone_elses_name(h: Harness) -> None:
    terms = h.terms(client=h.clients[1])
    with reverts(errors.BadTerm, field=7):
        h.as_(h.clients[0]).post_job_tx(SPEC_CID, terms)


def test_nobody_withdraws_anothers_credit(h: Harness) -> None:
    run = h.post()
    run.cancel()
    with reverts(errors.NothingToWithdraw, account=h.outsiders[0]):
        h.as_(h.outsiders[0]).withdraw()
    assert h.credit(run.client) == run.escrow


def test_a_provider_cannot_bid_with_cheaper_terms(h: Harness) -> None:
    run = h.post(collateral=COLLATERAL)
    cheap = dataclasses.replace(run.terms, collateral=1)
    with reverts(errors.TermsMismatch, jobId=run.job_id, expected=run.terms.digest, actual=cheap.digest):
        h.as_(h.providers[0]).bid(run.job_id, 5, cheap)
    assert run.slot(0).state == SlotState.EMPTY


def test_destructive_job_with_replicas_is_refused(h: Harness) -> None:
    for k, m in ((2, 2), (3, 2)):
        terms = h.terms(k=k, m=m, **destructive_terms())
        with reverts(errors.DestructiveReplicated, k=k, verifiers=0, auditBps=0):
            h.as_(h.client).post_job_tx(SPEC_CID, terms)
    assert h.market.job_count() == 0


def test_stake_that_would_overflow_an_unlock_is_refused() -> None:
    """Free plus locked stake must fit 96 bits: else every unlock of this provider's collateral
    overflows, and a job it holds a slot in can never be failed or settled (the client's escrow
    held hostage)."""
    from chain_scheduler import JobTerms, Market
    from chain_scheduler._anvil import Anvil, advance_time

    with Anvil(accounts=3) as node:
        w3 = node.web3()
        deployer, client_addr, griefer = w3.eth.accounts[:3]
        w3.provider.make_request("anvil_setBalance", [griefer, hex(2**97)])  # type: ignore[arg-type]
        market = Market.deploy(w3=w3, account=deployer)
        client, provider = market.with_account(client_addr), market.with_account(griefer)
        provider.register(1, 10**18)
        # Given a k=2 job in which the griefer holds one slot (all its stake locked), never filled
        terms = JobTerms.create(client=client_addr, spec_cid=SPEC_CID, k=2, m=2, max_price=1, max_units=1,
                                collateral=10**18, fill_timeout=60)  # fmt: skip
        job_id = client.post_job(SPEC_CID, terms)
        provider.bid(job_id, 1, terms)

        # When it tops its free stake up so that the unlock of its collateral would overflow: refused
        with pytest.raises(errors.AmountTooLarge):
            provider.add_stake(2**96 - 10**18)

        # Then, with as much as fits, the fill timeout still fails the job and refunds the client
        provider.add_stake(2**96 - 1 - 10**18)
        advance_time(w3, terms.fill_timeout + 1)
        result = market.timeout(job_id, terms)
        assert [e.name for e in result.events] == ["JobFailed"]
        assert market.job(job_id).status == JobStatus.FAILED
        stake = market.provider(griefer)
        assert (stake.free, stake.locked) == (2**96 - 1, 0)


@pytest.mark.parametrize(
    "overrides",
    [{"k": 3, "m": 2}, {"verifiers": 2}, {"verifiers": 2, "audit_bps": 5000}],
    ids=["k3", "verifiers", "audit"],
)
def test_collateral_zero_is_refused_when_anyone_is_meant_to_be_checked(h: Harness, overrides: dict[str, int]) -> None:
    # Nobody could be slashed: replicas, audits and verifiers would check nothing.
    with reverts(errors.BadTerm, field=10):
        h.post(collateral=0, **overrides)


def test_collateral_zero_stays_possible_for_a_single_unchecked_replica(h: Harness) -> None:
    run = h.post(collateral=0)
    assert run.status == JobStatus.OPEN
