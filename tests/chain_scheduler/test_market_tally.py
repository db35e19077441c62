"""Tally and settlement: who is paid what, who is slashed, where the pool goes."""

from __future__ import annotations

from chain_harness import BAD, COLLATERAL, GOOD, MAX_UNITS, STAKE, Harness, docker_terms, events, names, reverts

from chain_scheduler import FailReason, JobStatus, SlotState, errors


def test_single_provider_lifecycle_pays_price_times_usage(h: Harness) -> None:
    run = h.drive("succeeded", prices=[7], results=[(GOOD, 640)])
    provider = run.holders[0]
    assert h.provider(provider).locked == COLLATERAL  # held through the challenge window

    tx = run.finalize()

    assert names(tx) == ["ProviderPaid", "JobFinalized"]
    assert events(tx, "ProviderPaid") == [
        {"jobId": run.job_id, "slot": 0, "provider": provider, "amount": 7 * 640, "units": 640}
    ]
    assert events(tx, "JobFinalized") == [
        {
            "jobId": run.job_id,
            "winnerSlot": 0,
            "paid": 7 * 640,
            "refund": run.escrow - 7 * 640,
            "challengeUpheld": False,
        }
    ]
    assert h.credit(provider) == 7 * 640
    assert h.credit(run.client) == run.escrow - 7 * 640
    p = h.provider(provider)
    assert (p.free, p.locked, p.succeeded, p.slashed, p.audited) == (STAKE, 0, 1, 0, 0)
    assert run.slot(0).state == SlotState.SETTLED
    assert run.status == JobStatus.FINALIZED


def test_finalize_waits_for_the_challenge_window(h: Harness) -> None:
    run = h.drive("succeeded", challenge_window=500)
    deadline = run.job.deadline
    with reverts(errors.DeadlineNotReached, jobId=run.job_id, deadline=deadline, now_=lambda t: t < deadline):
        run.finalize(wait=False)


def test_finalize_needs_a_succeeded_job(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.REVEALING):
        run.finalize(wait=False)
    run.reveal_all()
    run.finalize()
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.FINALIZED):
        run.finalize(wait=False)


def test_k3_m2_one_wrong_provider_is_slashed_and_the_pool_shared(h: Harness) -> None:
    # Given three replicas at different prices, the third one wrong.
    run = h.drive("succeeded", k=3, m=2, prices=[4, 6, 9], results=[(GOOD, 100), (GOOD, 100), (BAD, 100)])
    a, b, c = (run.holders[i] for i in range(3))
    assert run.job.winner == 0

    tx = run.finalize()

    assert names(tx) == ["SlotSlashed", "ProviderPaid", "ProviderPaid", "JobFinalized"]
    assert events(tx, "SlotSlashed") == [
        {"jobId": run.job_id, "slot": 2, "provider": c, "amount": COLLATERAL, "reopened": False}
    ]
    assert events(tx, "ProviderPaid") == [
        {"jobId": run.job_id, "slot": 0, "provider": a, "amount": 400, "units": 100},
        {"jobId": run.job_id, "slot": 1, "provider": b, "amount": 600, "units": 100},
    ]
    paid = 1000
    refund = run.escrow - paid
    assert events(tx, "JobFinalized")[0] == {
        "jobId": run.job_id,
        "winnerSlot": 0,
        "paid": paid,
        "refund": refund,
        "challengeUpheld": False,
    }
    # The pool (c's collateral) is shared by the client and the two winners; dust to the client.
    share = COLLATERAL // 3
    assert h.credit(a) == 400 + share
    assert h.credit(b) == 600 + share
    assert h.credit(run.client) == refund + COLLATERAL - 2 * share
    assert h.credit(c) == 0
    pc = h.provider(c)
    assert (pc.free, pc.locked, pc.slashed, pc.succeeded) == (STAKE - COLLATERAL, 0, 1, 0)
    for p in (a, b):
        assert (h.provider(p).free, h.provider(p).locked, h.provider(p).succeeded) == (STAKE, 0, 1)
    assert [run.slot(i).state for i in range(3)] == [SlotState.SETTLED, SlotState.SETTLED, SlotState.SLASHED]
    assert h.market.slash_pool_of(run.job_id) == 0


def test_deterministic_replicas_must_agree_on_usage(h: Harness) -> None:
    run = h.drive("succeeded", k=3, m=2, results=[(GOOD, 101), (GOOD, 100), (GOOD, 100)])
    assert run.job.winner == 1
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [0]
    assert [(e["slot"], e["units"]) for e in events(tx, "ProviderPaid")] == [(1, 100), (2, 100)]


def test_deterministic_disagreeing_usage_is_no_quorum(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, results=[(GOOD, 100), (GOOD, 101), (GOOD, 102)])
    txs = run.reveal_all()
    # Nobody can be shown wrong without a quorum: collateral comes back unslashed, and each
    # revealed result is paid at the lower median usage (the client has read them all).
    paid = 3 * 10 * 101
    assert events(txs[-1], "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_QUORUM, "refund": run.escrow - paid}
    ]
    assert [(e["slot"], e["units"]) for e in events(txs[-1], "ProviderPaid")] == [(0, 101), (1, 101), (2, 101)]
    for p in run.holders.values():
        assert (h.provider(p).free, h.provider(p).locked, h.provider(p).slashed) == (STAKE, 0, 0)
        assert h.credit(p) == 10 * 101
    assert h.credit(run.client) == run.escrow - paid


def test_nondeterministic_winners_are_paid_the_lower_median(h: Harness) -> None:
    run = h.drive(
        "succeeded", k=3, m=2, prices=[5, 6, 7], results=[(GOOD, 300), (GOOD, 100), (GOOD, 200)], **docker_terms()
    )
    tx = run.finalize()
    assert [(e["slot"], e["amount"], e["units"]) for e in events(tx, "ProviderPaid")] == [
        (0, 5 * 200, 200),
        (1, 6 * 200, 200),
        (2, 7 * 200, 200),
    ]
    assert events(tx, "SlotSlashed") == []


def test_nondeterministic_two_winners_take_the_lower_of_two(h: Harness) -> None:
    run = h.drive("succeeded", k=3, m=2, results=[(GOOD, 300), (BAD, 1), (GOOD, 120)], **docker_terms())
    tx = run.finalize()
    assert [(e["slot"], e["units"]) for e in events(tx, "ProviderPaid")] == [(0, 120), (2, 120)]
    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [1]


def test_nondeterministic_usage_is_capped_at_max_units(h: Harness) -> None:
    run = h.drive("succeeded", k=3, m=2, results=[(GOOD, 5 * MAX_UNITS)] * 3, **docker_terms())
    tx = run.finalize()
    assert {e["units"] for e in events(tx, "ProviderPaid")} == {MAX_UNITS}
    assert events(tx, "JobFinalized")[0]["refund"] == 0  # three slots paid in full


def test_deterministic_usage_is_capped_at_max_units(h: Harness) -> None:
    run = h.drive("succeeded", results=[(GOOD, MAX_UNITS + 1)])
    tx = run.finalize()
    assert events(tx, "ProviderPaid")[0]["units"] == MAX_UNITS


def test_zero_usage_pays_nothing_but_settles(h: Harness) -> None:
    run = h.drive("succeeded", results=[(GOOD, 0)])
    tx = run.finalize()
    assert events(tx, "ProviderPaid")[0]["amount"] == 0
    assert events(tx, "JobFinalized")[0]["refund"] == run.escrow
    assert h.provider(run.holders[0]).succeeded == 1


def test_without_a_challenge_window_the_last_reveal_settles_the_job(h: Harness) -> None:
    # Given a k=3 m=2 job with no challenge window, its third replica wrong
    run = h.drive("revealing", k=3, m=2, challenge_window=0, prices=[4, 6, 9],
                  results=[(GOOD, 100), (GOOD, 100), (BAD, 100)])  # fmt: skip
    a, b, c = (run.holders[i] for i in range(3))
    run.reveal_all([0, 1])

    # When the last reveal comes in
    tx = run.reveal(2)

    # Then that transaction settles everything: no separate finalize, no window to wait
    assert names(tx) == [
        "ResultRevealed", "JobSucceeded", "SlotSlashed", "ProviderPaid", "ProviderPaid", "JobFinalized",
    ]  # fmt: skip
    assert run.status == JobStatus.FINALIZED
    share = COLLATERAL // 3
    assert h.credit(a) == 4 * 100 + share
    assert h.credit(b) == 6 * 100 + share
    assert h.credit(run.client) == run.escrow - 10 * 100 + COLLATERAL - 2 * share
    assert (h.provider(c).slashed, h.provider(c).locked) == (1, 0)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.FINALIZED):
        run.finalize(wait=False)


def test_min_units_is_the_floor_of_what_each_winner_is_paid(h: Harness) -> None:
    # Given a job whose terms bill each paid replica at least 400 units, and a failure
    # result of 3 units of work the three replicas agree on
    run = h.drive("succeeded", k=3, m=2, min_units=400, results=[(GOOD, 3)] * 3)

    tx = run.finalize()

    # Then each is paid price × 400, and nobody is slashed
    assert [(e["units"], e["amount"]) for e in events(tx, "ProviderPaid")] == [(400, 400 * 10)] * 3
    assert events(tx, "SlotSlashed") == []


def test_min_units_above_max_units_is_refused(h: Harness) -> None:
    with reverts(errors.BadTerm, field=9):
        h.post(min_units=1001)
