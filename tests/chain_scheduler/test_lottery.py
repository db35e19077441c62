"""Lottery assignment: the k main replicas are drawn by stake from the providers that entered.

First-come and the cheapest-k auction let whoever is fastest or cheapest take every
replica, one operator with k accounts included. A client that wants independent
replicas posts ``lottery=True``: providers enter during the bid window (``bid`` enters),
and after it the replicas are drawn, weighted by each entrant's stake, from the hash of a
block that did not exist when the entries closed. That an operator gets its stake's share
and no more is measured in ``contracts/test/Attacks.t.sol``
(``test_lotteryDrawsReplicasByStakeNotByWhoEntersFirst``); with daemons, in
``tests/compute_node/test_node_rounds.py``.
"""

from __future__ import annotations

import time
from typing import Any

from chain_harness import COLLATERAL, MAX_PRICE, STAKE, Harness, Run, events, names, reverts

from chain_scheduler import FailReason, JobStatus, Round, errors

WINDOW = 60


def _lottery(h: Harness, **overrides: Any) -> Run:
    # After a snapshot revert the first block may carry the snapshot's old time and the next
    # the wall clock: bring the chain to the wall clock first, so the window is not skipped.
    h.travel_to(int(time.time()))
    params: dict[str, Any] = {"k": 2, "m": 2, "bid_window": WINDOW, "lottery": True}
    params.update(overrides)
    return h.post(**params)


def _enter(h: Harness, run: Run, providers: list[str]) -> None:
    for p in providers:
        tx = h.as_(p).bid(run.job_id, 3, run.terms)  # the price is ignored: drawn replicas get maxPrice
        assert names(tx) == ["Entered"]
        assert events(tx, "Entered")[0]["weight"] == h.provider(p).free + h.provider(p).locked


def test_entrants_lock_collateral_and_the_draw_seats_k_of_them_releasing_the_rest(h: Harness) -> None:
    run = _lottery(h)
    entrants = h.providers[:4]
    _enter(h, run, entrants)
    assert [p for p, _ in h.market.entrants_of(run.job_id)] == entrants
    assert all(h.provider(p).locked == COLLATERAL for p in entrants)
    assert run.job.filled == 0 and run.status == JobStatus.OPEN

    # Bidding cannot close inside the window; after it, closing arms the draw from this block
    with reverts(errors.BidWindowOpen, jobId=run.job_id, windowEnd=lambda v: v > h.now()):
        h.as_(h.deployer).close_bidding(run.job_id, run.terms)
    closed = run.close_after_window()
    assert names(closed) == ["DrawPending"]
    assert events(closed, "DrawPending")[0]["round"] == Round.MAIN
    # Nobody enters once the entries are closed, not even in the window's last second
    with reverts(errors.EntriesClosed, jobId=run.job_id):
        h.as_(h.providers[4]).bid(run.job_id, MAX_PRICE, run.terms)

    drawn = run.draw()
    seated = [e["provider"] for e in events(drawn, "SlotAssigned")]
    released = [e["provider"] for e in events(drawn, "EntryReleased")]
    assert len(seated) == 2 and set(seated) | set(released) == set(entrants) and not set(seated) & set(released)
    assert [e["price"] for e in events(drawn, "SlotAssigned")] == [MAX_PRICE, MAX_PRICE]
    assert names(drawn)[-1] == "BiddingClosed"
    assert run.status == JobStatus.RUNNING and run.job.filled == 2
    for p in entrants:
        assert h.provider(p).locked == (COLLATERAL if p in seated else 0)
        assert h.provider(p).free + h.provider(p).locked == STAKE
    # The drawn replicas run the job like any other
    run.commit_round()
    run.reveal_all()
    assert run.status == JobStatus.SUCCEEDED


def test_entries_are_checked_and_a_lottery_needs_a_window(h: Harness) -> None:
    with reverts(errors.BadTerm, field=11):
        h.post(k=1, m=1, lottery=True)
    run = _lottery(h)
    p = h.providers[0]
    _enter(h, run, [p])
    with reverts(errors.AlreadyInJob, jobId=run.job_id, provider=p):
        h.as_(p).bid(run.job_id, MAX_PRICE, run.terms)
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).bid(run.job_id, MAX_PRICE, run.terms)
    # After the window, with fewer than k entrants, closing is refused and entries stay open
    window_end = run.job.deadline - run.terms.fill_timeout + run.terms.bid_window
    h.travel_to(window_end)
    with reverts(errors.SlotsNotFilled, jobId=run.job_id, filled=1, needed=2):
        h.as_(h.deployer).close_bidding(run.job_id, run.terms)
    _enter(h, run, [h.providers[1]])
    assert names(h.as_(h.deployer).close_bidding(run.job_id, run.terms)) == ["DrawPending"]
    # `enter` on a job that is not a lottery is refused.
    plain = h.post(k=1, m=1, bid_window=WINDOW)
    with reverts(errors.EntriesClosed, jobId=plain.job_id):
        h.as_(h.providers[2]).enter(plain.job_id, plain.terms)


def test_a_lottery_that_never_fills_fails_and_frees_its_entrants(h: Harness) -> None:
    run = _lottery(h, k=3, m=2)
    entrants = h.providers[:2]
    _enter(h, run, entrants)
    tx = run.timeout_now()
    assert events(tx, "JobFailed")[0]["reason"] == FailReason.NOT_FILLED
    assert sorted(e["provider"] for e in events(tx, "EntryReleased")) == sorted(entrants)
    assert all(h.provider(p).locked == 0 for p in entrants)
    assert h.credit(run.client) == run.escrow


def test_a_client_may_cancel_a_lottery_before_the_draw_and_its_entrants_are_freed(h: Harness) -> None:
    run = _lottery(h)
    entrants = h.providers[:3]
    _enter(h, run, entrants)
    tx = run.cancel()
    assert sorted(e["provider"] for e in events(tx, "EntryReleased")) == sorted(entrants)
    assert all(h.provider(p).locked == 0 for p in entrants)
    assert run.status == JobStatus.CANCELLED
