"""Deadlines: a permissionless exit from every phase, with reassignment where allowed."""

from __future__ import annotations

import pytest
from chain_harness import BAD, COLLATERAL, GOOD, STAKE, Harness, destructive_terms, events, names, reverts

from chain_scheduler import FailReason, JobStatus, Round, SlotState, errors

PAY = 10 * 100  # MAX_PRICE × the default usage


def test_timeout_before_the_deadline(h: Harness) -> None:
    run = h.post()
    deadline = run.job.deadline
    with reverts(errors.DeadlineNotReached, jobId=run.job_id, deadline=deadline, now_=lambda t: t < deadline):
        run.timeout()


def test_fill_timeout_fails_and_refunds(h: Harness) -> None:
    run = h.post(k=3, m=2)
    bidder = h.providers[0]
    run.bid(bidder)

    tx = run.timeout_now()

    assert events(tx, "JobFailed") == [{"jobId": run.job_id, "reason": FailReason.NOT_FILLED, "refund": run.escrow}]
    assert run.status == JobStatus.FAILED
    assert h.credit(run.client) == run.escrow
    assert (h.provider(bidder).free, h.provider(bidder).locked) == (STAKE, 0)
    assert run.slot(0).state == SlotState.SETTLED


def test_timeout_is_permissionless(h: Harness) -> None:
    run = h.post()
    run.past_deadline()
    tx = run.timeout(sender=h.outsiders[0])
    assert names(tx) == ["JobFailed"]


@pytest.mark.parametrize("phase", ["failed", "succeeded", "finalized", "cancelled"])
def test_timeout_outside_a_live_phase(h: Harness, phase: str) -> None:
    if phase == "failed":
        run = h.post()
        run.timeout_now()
        actual = JobStatus.FAILED
    elif phase == "cancelled":
        run = h.post()
        run.cancel()
        actual = JobStatus.CANCELLED
    else:
        run = h.drive(phase)
        actual = JobStatus.SUCCEEDED if phase == "succeeded" else JobStatus.FINALIZED
    h.advance(10_000)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.RUNNING, actual=actual):
        run.timeout()


def test_commit_timeout_slashes_and_reopens_the_slot_then_the_job_completes(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    run.commit(1)
    late = run.holders[2]

    tx = run.timeout_now()

    assert names(tx) == ["SlotSlashed"]
    assert events(tx, "SlotSlashed") == [
        {"jobId": run.job_id, "slot": 2, "provider": late, "amount": COLLATERAL, "reopened": True}
    ]
    at = h.w3.eth.get_block(tx.block_number)["timestamp"]
    job = run.job
    assert (job.status, job.round, job.filled, job.committed, job.deadline) == (
        JobStatus.OPEN,
        Round.MAIN,
        2,
        2,
        at + run.terms.fill_timeout,
    )
    # The slashed record stays until a fresh provider takes the slot (see
    # test_reopened_slot_is_for_a_fresh_provider).
    reopened = run.slot(2)
    assert (reopened.state, reopened.provider) == (SlotState.SLASHED, late)
    p = h.provider(late)
    assert (p.free, p.locked, p.slashed) == (STAKE - COLLATERAL, 0, 1)
    assert h.market.slash_pool_of(run.job_id) == COLLATERAL

    # A fresh provider takes the slot, bidding closes again and the job completes.
    (fresh,) = run.fresh(1)
    tx = run.bid(fresh)
    assert names(tx) == ["SlotAssigned", "BiddingClosed"]
    assert events(tx, "SlotAssigned")[0]["slot"] == 2
    tx = run.commit(2)
    assert names(tx) == ["ResultCommitted", "CommitsClosed"]
    run.reveal_all()
    assert run.status == JobStatus.SUCCEEDED
    tx = run.finalize()
    assert len(events(tx, "ProviderPaid")) == 3
    share = COLLATERAL // 4
    assert h.credit(fresh) == 10 * 100 + share
    assert h.credit(run.client) == run.escrow - 3 * 1000 + COLLATERAL - 3 * share


def test_all_commits_missed_reopens_every_slot(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    tx = run.timeout_now()
    assert [e["reopened"] for e in events(tx, "SlotSlashed")] == [True, True, True]
    assert (run.status, run.job.filled, run.job.committed) == (JobStatus.OPEN, 0, 0)
    # Nobody comes back: the fill timeout fails the job; the pool goes to the client.
    tx = run.timeout_now()
    assert events(tx, "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NOT_FILLED, "refund": run.escrow + 3 * COLLATERAL}
    ]


def test_destructive_commit_timeout_never_reopens(h: Harness) -> None:
    run = h.drive("running", **destructive_terms())
    holder = run.holders[0]

    tx = run.timeout_now()

    assert names(tx) == ["SlotSlashed", "JobFailed"]
    assert events(tx, "SlotSlashed") == [
        {"jobId": run.job_id, "slot": 0, "provider": holder, "amount": COLLATERAL, "reopened": False}
    ]
    assert events(tx, "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_COMMITS, "refund": run.escrow + COLLATERAL}
    ]
    assert run.status == JobStatus.FAILED
    assert run.slot(0).state == SlotState.SLASHED
    assert h.credit(run.client) == run.escrow + COLLATERAL


def test_reveal_timeout_slashes_and_tallies_the_rest(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    run.reveal(0)
    run.reveal(2)
    silent = run.holders[1]

    tx = run.timeout_now()

    assert names(tx) == ["SlotSlashed", "JobSucceeded"]
    assert events(tx, "SlotSlashed") == [
        {"jobId": run.job_id, "slot": 1, "provider": silent, "amount": COLLATERAL, "reopened": False}
    ]
    assert run.status == JobStatus.SUCCEEDED
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 2]
    share = COLLATERAL // 3
    assert h.credit(run.holders[0]) == 1000 + share
    assert h.credit(run.client) == run.escrow - 2000 + COLLATERAL - 2 * share
    assert h.provider(silent).slashed == 1


def test_reveal_timeout_without_quorum_fails(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    run.reveal(0)
    tx = run.timeout_now()
    assert names(tx) == ["SlotSlashed", "SlotSlashed", "ProviderPaid", "JobFailed"]
    assert events(tx, "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_QUORUM, "refund": run.escrow - PAY}
    ]
    # The one provider that revealed cannot be shown wrong: released, not slashed, paid for
    # its result, and it gets the collateral of the two that withheld their reveals (not the
    # client: a client holding those slots through its own accounts would otherwise get the
    # revealed result for free).
    p = h.provider(run.holders[0])
    assert (p.free, p.locked, p.slashed) == (STAKE, 0, 0)
    assert h.credit(run.holders[0]) == PAY + 2 * COLLATERAL
    assert h.credit(run.client) == run.escrow - PAY


@pytest.mark.parametrize("sybil_reveals", ["nothing", "garbage"])
def test_the_result_is_never_free_for_a_client_holding_a_slot(h: Harness, sybil_reveals: str) -> None:
    # A k=m job: the client's own provider account takes slot 1 and either withholds its reveal
    # or reveals garbage, so that no quorum forms; it reads slot 0's result from its reveal.
    honest, sybil = h.providers[4], h.providers[5]
    run = h.post(k=2, m=2)
    run.fill([honest, sybil])
    run.commit(0)
    run.commit(1, BAD)
    run.reveal(0)
    tx = run.reveal(1) if sybil_reveals == "garbage" else run.timeout_now()
    assert events(tx, "JobFailed")[0]["reason"] == FailReason.NO_QUORUM
    # The honest replica is paid for the result the client read, and a withheld reveal also
    # costs the sybil its collateral, which goes to the honest replica.
    side_before = STAKE + run.escrow
    side_after = h.provider(sybil).free + h.credit(sybil) + h.credit(run.client)
    withheld = COLLATERAL if sybil_reveals == "nothing" else 0
    assert h.credit(honest) == PAY + withheld
    assert side_before - side_after == PAY + withheld > 0


def test_reveal_timeout_nobody_revealed(h: Harness) -> None:
    run = h.drive("revealing")
    tx = run.timeout_now()
    assert events(tx, "JobFailed")[0]["reason"] == FailReason.NO_QUORUM
    assert h.provider(run.holders[0]).slashed == 1


def test_window_mode_reopen_never_displaces_a_committed_slot(h: Harness) -> None:
    # Given a bid-window job whose slot 2 missed its commit and was reopened
    run = h.drive("running", k=3, m=2, bid_window=50, prices=[9, 5, 5])
    run.commit(0)  # slot 0 (the dearest, price 9) commits
    run.commit(1)
    run.timeout_now()
    d, e = run.fresh(2)
    # When a fresh provider fills it, the reopened round is first-come: bidding closes
    run.bid(d, 5)
    assert run.status == JobStatus.RUNNING
    # Then a cheaper bid cannot displace the committed slot 0
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.RUNNING):
        h.as_(e).bid(run.job_id, 1, run.terms)
    assert run.slot(0).state == SlotState.COMMITTED


def test_window_mode_reopen_leaves_no_collateral_locked(h: Harness) -> None:
    run = h.drive("running", k=3, m=2, bid_window=50, prices=[9, 5, 5])
    run.commit(0)
    run.commit(1)
    run.timeout_now()
    d, e = run.fresh(2)
    run.bid(d, 5)  # slot 2; bidding closes at once
    with pytest.raises(errors.WrongStatus):
        h.as_(e).bid(run.job_id, 1, run.terms)
    run.commit(2)
    run.reveal_all()
    run.finalize()
    assert run.status == JobStatus.FINALIZED
    for provider in (d, e, *run.holders.values()):
        assert h.provider(provider).locked == 0, provider


def test_bad_answers_are_tallied_even_after_reassignment(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    run.commit(0, GOOD)
    run.commit(1, BAD)
    run.timeout_now()
    run.fill()
    run.commit(2, GOOD)
    run.reveal_all()
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [1]


def test_reopened_slot_is_for_a_fresh_provider(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    run.commit(1)
    late = run.holders[2]
    run.timeout_now()
    with reverts(errors.AlreadyInJob, jobId=run.job_id, provider=late):
        h.as_(late).bid(run.job_id, 5, run.terms)


def test_reopening_is_bounded_then_the_job_fails_and_the_client_keeps_the_griefers_collateral(h: Harness) -> None:
    # Given a k=1 job whose holder never commits, and griefers who keep taking the reopened slot
    run = h.drive("running")
    griefers = [run.holders[0]]
    for _ in range(2):
        tx = run.timeout_now()
        assert [e["reopened"] for e in events(tx, "SlotSlashed")] == [True]
        (griefer,) = run.fresh(1, exclude=griefers)
        run.bid(griefer)
        griefers.append(griefer)

    # When the third holder misses its commit too
    tx = run.timeout_now()

    # Then the slot is not reopened again: the job fails and the client gets its escrow
    # back with every griefer's collateral.
    assert names(tx) == ["SlotSlashed", "JobFailed"]
    assert events(tx, "SlotSlashed")[0]["reopened"] is False
    assert events(tx, "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_COMMITS, "refund": run.escrow + 3 * COLLATERAL}
    ]
    assert [h.provider(g).slashed for g in griefers] == [1, 1, 1]


def test_after_the_last_reopening_the_committed_replicas_go_on(h: Harness) -> None:
    # Given a k=3 m=2 job whose third slot was reopened twice and missed again
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    run.commit(1)
    for _ in range(2):
        run.timeout_now()
        run.fill()
    tx = run.timeout_now()

    # Then the two committed replicas reveal and settle without it.
    assert names(tx) == ["SlotSlashed", "CommitsClosed"]
    run.reveal_all()
    assert run.status == JobStatus.SUCCEEDED
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 1]
