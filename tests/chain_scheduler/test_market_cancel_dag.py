"""Cancellation, DAG parents and orphan cancellation."""

from __future__ import annotations

import pytest
from chain_harness import COLLATERAL, STAKE, Harness, events, names, reverts

from chain_scheduler import JobStatus, SlotState, errors

# ---------------------------------------------------------------------- cancel


def test_client_cancels_an_open_job_for_a_full_refund(h: Harness) -> None:
    run = h.post(k=3, m=2)
    before = h.contract_balance()

    tx = run.cancel()

    assert names(tx) == ["JobCancelled"]
    assert events(tx, "JobCancelled") == [{"jobId": run.job_id, "refund": run.escrow}]
    assert run.status == JobStatus.CANCELLED
    assert h.credit(run.client) == run.escrow
    assert h.contract_balance() == before  # credited, not sent
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.CANCELLED):
        run.cancel()


def test_only_the_client_cancels(h: Harness) -> None:
    run = h.post()
    for caller in (h.clients[1], h.providers[0], h.outsiders[0]):
        with reverts(errors.NotClient, jobId=run.job_id, caller=caller):
            run.cancel(sender=caller)


def test_window_zero_not_cancellable_once_a_slot_is_assigned(h: Harness) -> None:
    run = h.post(k=3, m=2)
    run.bid(h.providers[0])
    with reverts(errors.NotCancellable, jobId=run.job_id):
        run.cancel()


def test_window_mode_cancel_releases_provisional_bidders(h: Harness) -> None:
    run = h.post(k=3, m=2, bid_window=100)
    bidders = h.providers[:2]
    for p in bidders:
        run.bid(p)
        assert h.provider(p).locked == COLLATERAL

    tx = run.cancel()

    assert events(tx, "JobCancelled") == [{"jobId": run.job_id, "refund": run.escrow}]
    for p in bidders:
        assert (h.provider(p).free, h.provider(p).locked) == (STAKE, 0)
    assert [run.slot(i).state for i in range(3)] == [SlotState.SETTLED, SlotState.SETTLED, SlotState.EMPTY]


def test_window_mode_cancel_with_every_slot_held_inside_the_window(h: Harness) -> None:
    run = h.post(k=2, m=2, bid_window=100)
    run.fill()
    run.cancel()
    assert all(h.provider(p).locked == 0 for p in run.holders.values())


@pytest.mark.parametrize("phase", ["running", "revealing", "succeeded", "finalized"])
def test_cancel_after_bidding_closed(h: Harness, phase: str) -> None:
    run = h.drive(phase, k=3, m=2)
    actual = {
        "running": JobStatus.RUNNING,
        "revealing": JobStatus.REVEALING,
        "succeeded": JobStatus.SUCCEEDED,
        "finalized": JobStatus.FINALIZED,
    }[phase]
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=actual):
        run.cancel()


def test_cancel_after_reassignment_is_refused(h: Harness) -> None:
    run = h.drive("running", k=3, m=2, bid_window=50)
    run.commit(0)
    run.timeout_now()  # slots 1 and 2 reopened; the job is Open again with a commitment
    assert run.status == JobStatus.OPEN
    with reverts(errors.NotCancellable, jobId=run.job_id):
        run.cancel()


def test_cancel_after_every_slot_was_reopened_refunds_the_pool_too(h: Harness) -> None:
    run = h.drive("running", k=2, m=2)
    run.timeout_now()
    tx = run.cancel()
    assert events(tx, "JobCancelled") == [{"jobId": run.job_id, "refund": run.escrow + 2 * COLLATERAL}]


# ------------------------------------------------------------------------- DAG


def test_bids_wait_for_parents_to_be_finalized(h: Harness) -> None:
    parent = h.drive("succeeded")
    other = h.post()
    child = h.post(parents=(other.job_id, parent.job_id))
    bidder = h.providers[5]
    with reverts(errors.ParentNotFinalized, jobId=child.job_id, parent=other.job_id, status=JobStatus.OPEN):
        h.as_(bidder).bid(child.job_id, 5, child.terms)
    other.fill()
    other.commit(0)
    other.reveal_all()
    other.finalize()
    with reverts(errors.ParentNotFinalized, jobId=child.job_id, parent=parent.job_id, status=JobStatus.SUCCEEDED):
        h.as_(bidder).bid(child.job_id, 5, child.terms)

    parent.finalize()
    tx = child.bid(bidder)

    assert names(tx) == ["SlotAssigned", "BiddingClosed"]


def test_parent_failed_lets_anyone_cancel_the_orphan(h: Harness) -> None:
    parent = h.post()
    child = h.post(client=h.clients[1], parents=(parent.job_id,), fill_timeout=10_000)
    parent.timeout_now()
    with reverts(errors.ParentNotFinalized, jobId=child.job_id, parent=parent.job_id, status=JobStatus.FAILED):
        h.as_(h.providers[0]).bid(child.job_id, 5, child.terms)

    tx = h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 0, child.terms)

    assert events(tx, "JobCancelled") == [{"jobId": child.job_id, "refund": child.escrow}]
    assert child.status == JobStatus.CANCELLED
    assert h.credit(h.clients[1]) == child.escrow
    assert h.credit(h.outsiders[0]) == 0


def test_parent_cancelled_lets_anyone_cancel_the_orphan(h: Harness) -> None:
    a = h.post()
    b = h.post()
    child = h.post(parents=(a.job_id, b.job_id))
    b.cancel()
    with reverts(errors.ParentNotFailed, jobId=child.job_id, parent=a.job_id, status=JobStatus.OPEN):
        h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 0, child.terms)
    tx = h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 1, child.terms)
    assert names(tx) == ["JobCancelled"]


@pytest.mark.parametrize("phase", ["posted", "running", "succeeded", "finalized"])
def test_parent_not_failed(h: Harness, phase: str) -> None:
    parent = h.drive(phase)
    child = h.post(parents=(parent.job_id,))
    status = parent.status
    with reverts(errors.ParentNotFailed, jobId=child.job_id, parent=parent.job_id, status=status):
        h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 0, child.terms)


def test_orphan_already_cancelled(h: Harness) -> None:
    parent = h.post()
    child = h.post(parents=(parent.job_id,))
    parent.cancel()
    child.cancel()
    with reverts(errors.WrongStatus, jobId=child.job_id, expected=JobStatus.OPEN, actual=JobStatus.CANCELLED):
        h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 0, child.terms)


def test_orphan_parent_index_out_of_range_reverts(h: Harness) -> None:
    parent = h.post()
    child = h.post(parents=(parent.job_id,))
    parent.cancel()
    with pytest.raises(errors.TransactionFailed):
        h.as_(h.outsiders[0]).cancel_orphan(child.job_id, 1, child.terms)
    assert child.status == JobStatus.OPEN
