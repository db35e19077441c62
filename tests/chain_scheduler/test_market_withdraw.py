"""Pull payments: withdraw pays exactly the credit, once."""

from __future__ import annotations

from chain_harness import Harness, events, reverts

from chain_scheduler import errors


def test_nothing_to_withdraw(h: Harness) -> None:
    for account in (h.outsiders[0], h.providers[0], h.client):
        with reverts(errors.NothingToWithdraw, account=account):
            h.as_(account).withdraw()


def test_withdraw_pays_the_credit_exactly_once(h: Harness) -> None:
    run = h.drive("finalized", results=[("bafkreigood", 640)])
    provider, client = run.holders[0], run.client
    for account, credit in ((provider, 10 * 640), (client, run.escrow - 10 * 640)):
        assert h.credit(account) == credit
        wallet, vault = h.balance(account), h.contract_balance()

        tx = h.as_(account).withdraw()

        assert events(tx, "Withdrawn") == [{"account": account, "amount": credit}]
        assert h.balance(account) == wallet + credit - h.gas_cost(tx)
        assert h.contract_balance() == vault - credit
        assert h.credit(account) == 0
        with reverts(errors.NothingToWithdraw, account=account):
            h.as_(account).withdraw()


def test_credits_accumulate_across_jobs(h: Harness) -> None:
    first = h.post()
    second = h.post()
    first.cancel()
    second.cancel()
    assert h.credit(h.client) == first.escrow + second.escrow
    tx = h.as_(h.client).withdraw()
    assert events(tx, "Withdrawn")[0]["amount"] == first.escrow + second.escrow
    # Credited again after a withdrawal: the next withdraw pays only the new credit.
    third = h.post()
    third.cancel()
    assert h.credit(h.client) == third.escrow
    tx = h.as_(h.client).withdraw()
    assert events(tx, "Withdrawn")[0]["amount"] == third.escrow
