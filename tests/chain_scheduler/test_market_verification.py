"""Verification rounds: escalation on no quorum, probabilistic audits, client challenges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from chain_harness import BAD, COLLATERAL, GOOD, OTHER, STAKE, Harness, Run, events, names, reverts

from chain_scheduler import Capability, FailReason, JobStatus, Round, SlotState, TxResult, errors, result_key

FLAG_AUDIT_DRAWN = 1
FLAG_AUDIT_OPENED = 2
FLAG_VERIFY_OPENED = 4
FLAG_CHALLENGED = 8
FLAG_DRAW_PENDING = 64
PAY = 10 * 100  # MAX_PRICE × the default usage


def _at(h: Harness, tx: TxResult) -> int:
    return int(h.w3.eth.get_block(tx.block_number)["timestamp"])


# ------------------------------------------------------------------ escalation


def _escalated(h: Harness, **overrides: Any) -> tuple[Run, TxResult]:
    run = h.drive("revealing", k=3, m=2, verifiers=3, results=[(GOOD, 100), (BAD, 100), (OTHER, 100)], **overrides)
    txs = run.reveal_all()
    return run, txs[-1]


def test_no_quorum_escalates_to_fresh_verifiers(h: Harness) -> None:
    run, last = _escalated(h)
    assert names(last) == ["ResultSealed", "RoundOpened", "DrawPending"]
    assert events(last, "RoundOpened") == [
        {"jobId": run.job_id, "round": Round.VERIFY, "slots": 3, "fillDeadline": _at(h, last) + run.terms.fill_timeout}
    ]
    assert events(last, "DrawPending") == [
        {"jobId": run.job_id, "round": Round.VERIFY, "afterBlock": last.block_number}
    ]
    job = run.job
    assert (job.status, job.round, job.filled, job.committed, job.revealed, job.flags) == (
        JobStatus.OPEN,
        Round.VERIFY,
        0,
        0,
        0,
        FLAG_VERIFY_OPENED,
    )
    # Verifier seats are drawn: nobody bids for them, fresh or not.
    for bidder in (run.holders[1], run.fresh(1)[0]):
        with reverts(errors.DrawnRound, jobId=run.job_id):
            h.as_(bidder).bid(run.job_id, 5, run.terms)
    # Not cancellable while verifiers are sought.
    with reverts(errors.NotCancellable, jobId=run.job_id):
        run.cancel()

    pool = run.fresh(3)
    bids = run.fill(pool)
    assert [e["slot"] for e in events(bids, "SlotAssigned")] == [4, 5, 6]
    assert {e["round"] for e in events(bids, "SlotAssigned")} == {Round.VERIFY}
    assert {e["provider"] for e in events(bids, "SlotAssigned")} == set(pool)
    assert {e["price"] for e in events(bids, "SlotAssigned")} == {run.terms.max_price}
    (closed,) = events(bids[-1], "BiddingClosed")
    main_seed = h.market.events(names=("BiddingClosed",), job_id=run.job_id)[0].args["seed"]
    assert (closed["round"], closed["seed"]) == (Round.VERIFY, main_seed)
    run.commit(4, GOOD)
    run.commit(5, GOOD)
    tx = run.commit(6, BAD)
    assert events(tx, "CommitsClosed") == [
        {
            "jobId": run.job_id,
            "round": Round.VERIFY,
            "audited": False,
            "revealDeadline": _at(h, tx) + run.terms.reveal_window,
        }
    ]
    txs = run.reveal_all()
    assert events(txs[-1], "JobSucceeded") == [
        {
            "jobId": run.job_id,
            "winnerSlot": 4,
            "resultKey": result_key(GOOD, 100),
            "challengeDeadline": _at(h, txs[-1]) + run.terms.challenge_window,
        }
    ]
    # An escalated result cannot be challenged: the verifier budget is spent.
    with reverts(errors.NotChallengeable, jobId=run.job_id):
        run.challenge()

    tx = run.finalize()

    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [1, 2, 6]
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 4, 5]
    share = 3 * COLLATERAL // 4
    assert h.credit(run.holders[0]) == PAY + share
    assert h.credit(run.holders[4]) == PAY + share
    assert h.credit(run.client) == run.escrow - 3 * PAY + 3 * COLLATERAL - 3 * share
    assert [h.provider(run.holders[i]).slashed for i in (1, 2, 6)] == [1, 1, 1]
    assert [h.provider(run.holders[i]).succeeded for i in (0, 4, 5)] == [1, 1, 1]


def test_every_round_gets_the_same_seed(h: Harness) -> None:
    # Main, audit and verify rounds of one job, and a reopened main round.
    run = h.drive("running", k=3, m=2, verifiers=2, audit_bps=10_000)
    run.commit(0, GOOD)
    run.commit(1, BAD)
    run.commit(2, OTHER)
    run.fill()  # the audit decision and the auditor
    run.commit(3, GOOD)
    run.reveal_all()  # no quorum: verifiers
    run.fill()
    closed = h.market.events(names=("BiddingClosed",), job_id=run.job_id)
    assert [e.args["round"] for e in closed] == [Round.MAIN, Round.AUDIT, Round.VERIFY]
    assert len({e.args["seed"] for e in closed}) == 1


def test_escalation_verifiers_without_majority_fail_the_job(h: Harness) -> None:
    run, _ = _escalated(h)
    run.fill()
    run.commit(4, GOOD)
    run.commit(5, BAD)
    run.commit(6, OTHER)
    txs = run.reveal_all()
    # Six revealed results, none a majority: each paid, nobody slashed.
    assert events(txs[-1], "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_QUORUM, "refund": run.escrow - 6 * PAY}
    ]
    assert len(events(txs[-1], "ProviderPaid")) == 6
    for p in run.holders.values():
        assert (h.provider(p).locked, h.provider(p).slashed) == (0, 0)


def test_escalation_unfilled_fails_the_job(h: Harness) -> None:
    run, _ = _escalated(h)
    # One pool member for three seats, with the free stake for one collateral: it takes a
    # seat, and cannot take the other two as votes.
    member = h.outsiders[0]
    h.as_(member).register(Capability.WASM, COLLATERAL + COLLATERAL // 2)  # joins the pool at the draw
    tx = run.draw([member], distinct=False)
    assert names(tx) == ["SlotAssigned", "DrawPending"]
    assert (run.status, run.job.filled) == (JobStatus.OPEN, 1)
    tx = run.timeout_now()
    # The three main replicas revealed (no quorum): paid; the drawn verifier never ran.
    assert events(tx, "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_QUORUM, "refund": run.escrow - 3 * PAY}
    ]
    for p in run.holders.values():
        assert h.provider(p).locked == 0


def test_escalation_verifier_missing_its_commit_is_slashed_and_redrawn(h: Harness) -> None:
    run, _ = _escalated(h)
    run.fill()
    run.commit(4, GOOD)
    run.commit(5, GOOD)
    missed = run.holders[6]
    tx = run.timeout_now()
    assert names(tx) == ["SlotSlashed", "DrawPending"]
    assert events(tx, "SlotSlashed")[0] == {
        "jobId": run.job_id,
        "slot": 6,
        "provider": missed,
        "amount": COLLATERAL,
        "reopened": True,
    }
    assert (run.status, run.job.round, run.job.filled, run.job.committed) == (JobStatus.OPEN, Round.VERIFY, 2, 2)
    # The one that missed stays out (its Slashed record is a slot of the job): the pool offers
    # it and a fresh provider, and the fresh one is drawn.
    (fresh,) = run.fresh(1, exclude=[missed])
    tx = run.draw([missed, fresh])
    assert [(e["slot"], e["provider"]) for e in events(tx, "SlotAssigned")] == [(6, fresh)]
    run.commit(6, GOOD)
    run.reveal_all()
    assert (run.status, run.job.winner) == (JobStatus.SUCCEEDED, 4)


def test_escalation_verifier_redrawn_at_most_twice(h: Harness) -> None:
    run, _ = _escalated(h)
    run.fill()
    run.commit(4, GOOD)
    run.commit(5, GOOD)
    for _ in range(2):
        tx = run.timeout_now()  # slot 6 never commits
        assert names(tx) == ["SlotSlashed", "DrawPending"]
        assert events(tx, "SlotSlashed")[0]["reopened"] is True
        run.fill()
    tx = run.timeout_now()
    assert names(tx) == ["SlotSlashed", "CommitsClosed"]
    assert events(tx, "SlotSlashed")[0]["reopened"] is False
    run.reveal_all()
    assert (run.status, run.job.winner) == (JobStatus.SUCCEEDED, 4)


def test_no_quorum_and_no_verifiers_fails_with_refund(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, results=[(GOOD, 100), (BAD, 100), (OTHER, 100)])
    txs = run.reveal_all()
    assert events(txs[-1], "JobFailed") == [
        {"jobId": run.job_id, "reason": FailReason.NO_QUORUM, "refund": run.escrow - 3 * PAY}
    ]
    assert h.credit(run.client) == run.escrow - 3 * PAY


# ----------------------------------------------------------------------- audits


def _audit_open(h: Harness, *, pool: Sequence[str] = (), **overrides: Any) -> tuple[Run, TxResult]:
    """A k=3 job, always audited, whose main commits are in: the audit decision is armed.
    ``pool`` is the verifier pool, set before the decision is armed."""
    run = h.drive("running", k=3, m=2, verifiers=2, audit_bps=10_000, **overrides)
    h.set_pool(pool)
    h.to_epoch_start(ahead=2)  # the decision's draw one block on also seats the auditor
    run.commit(0)
    run.commit(1)
    last = run.commit(2)
    return run, last


def test_audit_decision_waits_for_a_block_the_last_commit_cannot_know(h: Harness) -> None:
    auditor = h.providers[-1]
    run, last = _audit_open(h, pool=[auditor])

    # The last commit learns nothing: the decision uses the hash of its own block.
    assert names(last) == ["ResultCommitted", "DrawPending"]
    assert events(last, "DrawPending") == [{"jobId": run.job_id, "round": Round.AUDIT, "afterBlock": last.block_number}]
    job = run.job
    assert (job.status, job.round, job.committed, job.flags) == (JobStatus.RUNNING, Round.MAIN, 3, FLAG_DRAW_PENDING)
    assert job.deadline == _at(h, last) + run.terms.fill_timeout
    assert h.market.draw_block_of(run.job_id) == last.block_number
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.REVEALING, actual=JobStatus.RUNNING):
        run.reveal(0)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.RUNNING):
        run.cancel()

    tx = run.draw(sender=h.outsiders[0])  # anyone may draw
    assert names(tx) == ["CommitsClosed", "RoundOpened", "SlotAssigned", "BiddingClosed"]
    assert events(tx, "CommitsClosed") == [
        {"jobId": run.job_id, "round": Round.MAIN, "audited": True, "revealDeadline": 0}
    ]
    assert events(tx, "SlotAssigned")[0] == {
        "jobId": run.job_id,
        "round": Round.AUDIT,
        "slot": 3,
        "provider": auditor,
        "price": 10,
    }
    main_seed = h.market.events(names=("BiddingClosed",), job_id=run.job_id)[0].args["seed"]
    assert events(tx, "BiddingClosed")[0]["seed"] == main_seed
    assert events(tx, "BiddingClosed")[0]["round"] == Round.AUDIT
    with reverts(errors.NoDraw, jobId=run.job_id):
        run.draw()

    tx = run.commit(3)
    assert names(tx) == ["ResultCommitted", "CommitsClosed"]
    assert events(tx, "CommitsClosed") == [
        {
            "jobId": run.job_id,
            "round": Round.AUDIT,
            "audited": True,
            "revealDeadline": _at(h, tx) + run.terms.reveal_window,
        }
    ]
    assert (run.status, run.job.committed) == (JobStatus.REVEALING, 4)


def test_audit_decision_nobody_draws_timeout_does(h: Harness) -> None:
    run, _ = _audit_open(h, pool=[h.providers[-1]])
    tx = run.timeout_now()
    assert names(tx) == ["CommitsClosed", "RoundOpened", "SlotAssigned", "BiddingClosed"]


def test_a_draw_reads_the_pool_as_it_stood_when_its_epoch_began(h: Harness) -> None:
    # Whoever knows the hash could move stake into or out of the pool until the draw lands
    # where it wants. Seats are drawn from the pool as it stood at the start of the epoch
    # (before the hash existed), and a draw armed in an earlier epoch re-arms.
    run, _ = _escalated(h)
    pool = run.fresh(3)
    h.set_pool(pool)  # after the verification round was armed; mines on to the next epoch
    tx = run.draw()
    assert names(tx) == ["DrawPending"]
    assert events(tx, "DrawPending") == [{"jobId": run.job_id, "round": Round.VERIFY, "afterBlock": tx.block_number}]
    armed = tx.block_number
    # The hash is known now: the pool moves, in the same epoch, and the draw ignores it.
    h.as_(pool[0]).add_stake(10**18)
    tx = run.draw()
    assert tx.block_number // h.market.pool_epoch == armed // h.market.pool_epoch
    assert run.status == JobStatus.RUNNING
    assert len(events(tx, "SlotAssigned")) + len(events(tx, "VoteAdded")) == 3


def test_a_member_drawn_for_several_seats_holds_one_slot_with_a_vote_per_seat(h: Harness) -> None:
    # Each seat is a weighted draw over the pool: splitting stake over accounts wins no more
    # seats than one account. One member for three seats holds one slot with three votes.
    run, _ = _escalated(h)
    member = run.fresh(1)[0]
    tx = run.draw([member], distinct=False)
    assert names(tx) == ["SlotAssigned", "VoteAdded", "VoteAdded", "BiddingClosed"]
    assert [e["votes"] for e in events(tx, "VoteAdded")] == [2, 3]
    slot = h.market.slot(run.job_id, 4)
    assert (slot.provider, slot.votes, run.job.filled) == (member, 3, 1)
    assert h.provider(member).locked == 3 * COLLATERAL
    run.commit(4, GOOD)
    assert run.status == JobStatus.REVEALING  # one commit for all its votes
    run.reveal(4)
    tx = run.finalize()
    # Three votes for GOOD decide; it is paid, and shares the slash pool, once per vote.
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 4]
    assert [e["amount"] for e in events(tx, "ProviderPaid")] == [PAY, 3 * PAY]
    share = 2 * COLLATERAL // 5
    assert h.credit(member) == 3 * PAY + 3 * share
    assert h.provider(member).locked == 0


def test_the_audit_decision_is_taken_even_when_the_pool_moved(h: Harness) -> None:
    # The decision depends on the hash alone; only the auditor's seat waits for a new block.
    run, _ = _audit_open(h)
    h.set_pool([h.providers[-1]])
    tx = run.draw()
    assert names(tx) == ["CommitsClosed", "RoundOpened", "DrawPending"]
    tx = run.draw()
    assert [e["provider"] for e in events(tx, "SlotAssigned")] == [h.providers[-1]]


def test_audit_probability_half_audits_some_jobs_not_others(h: Harness) -> None:
    h.set_pool(h.providers[2:4])
    audited = []
    for _ in range(16):
        run = h.drive("running", k=1, m=1, verifiers=1, audit_bps=5_000, client=h.clients[0])
        run.commit(0)
        tx = run.draw()
        audited.append(names(tx)[0] == "CommitsClosed" and events(tx, "CommitsClosed")[0]["audited"])
    # Each decision is a fair coin from a block hash: all 16 alike has odds 2 in 65,536.
    assert 0 < sum(audited) < 16


def test_auditor_agrees_job_succeeds_auditor_paid_audited_counted(h: Harness) -> None:
    run, _ = _audit_open(h)
    run.fill()
    run.commit(3)
    txs = run.reveal_all()
    assert names(txs[-1]) == ["ResultSealed", "JobSucceeded"]

    tx = run.finalize()

    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 1, 2, 3]
    assert events(tx, "JobFinalized")[0]["refund"] == run.escrow - 4 * PAY
    for i in range(3):
        p = h.provider(run.holders[i])
        assert (p.succeeded, p.audited) == (1, 1)
    auditor = h.provider(run.holders[3])
    assert (auditor.succeeded, auditor.audited, auditor.locked) == (1, 0, 0)
    assert h.credit(run.holders[3]) == PAY


@pytest.mark.parametrize("verdict", [GOOD, BAD])
def test_auditor_disagrees_verifiers_decide(h: Harness, verdict: str) -> None:
    run, _ = _audit_open(h)
    run.fill()
    run.commit(3, BAD)
    txs = run.reveal_all()
    assert names(txs[-1]) == ["ResultSealed", "RoundOpened", "DrawPending"]
    assert events(txs[-1], "RoundOpened")[0]["round"] == Round.VERIFY
    assert events(txs[-1], "RoundOpened")[0]["slots"] == 2
    run.fill()
    run.commit(4, verdict)
    run.commit(5, verdict)
    txs = run.reveal_all()
    assert events(txs[-1], "JobSucceeded")[0]["winnerSlot"] == 4

    tx = run.finalize()

    slashed = [e["slot"] for e in events(tx, "SlotSlashed")]
    paid = [e["slot"] for e in events(tx, "ProviderPaid")]
    if verdict == GOOD:
        assert (slashed, paid) == ([3], [0, 1, 2, 4, 5])
    else:
        assert (slashed, paid) == ([0, 1, 2], [3, 4, 5])
    assert h.market.slash_pool_of(run.job_id) == 0


def test_audit_unfilled_main_replicas_reveal_unaudited(h: Harness) -> None:
    run, _ = _audit_open(h)
    tx = run.draw([])  # nobody in the pool: the audit round opens and waits for a member
    assert names(tx) == ["CommitsClosed", "RoundOpened", "DrawPending"]
    tx = run.timeout_now()
    assert names(tx) == ["CommitsClosed"]
    assert events(tx, "CommitsClosed") == [
        {
            "jobId": run.job_id,
            "round": Round.AUDIT,
            "audited": True,
            "revealDeadline": _at(h, tx) + run.terms.reveal_window,
        }
    ]
    run.reveal_all()
    assert run.status == JobStatus.SUCCEEDED
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 1, 2]
    assert events(tx, "JobFinalized")[0]["refund"] == run.escrow - 3 * PAY


def test_audited_counts_only_a_completed_audit(h: Harness) -> None:
    run, _ = _audit_open(h)
    run.draw([])
    run.timeout_now()  # nobody could be drawn
    run.reveal_all()
    run.finalize()
    assert [h.provider(run.holders[i]).audited for i in range(3)] == [0, 0, 0]


def test_auditor_missing_its_commit_is_slashed_and_redrawn(h: Harness) -> None:
    # Otherwise a main provider's own account, drawn as its auditor, could skip the audit.
    run, _ = _audit_open(h)
    (auditor,) = run.fresh(1)
    run.fill([auditor])
    tx = run.timeout_now()
    assert names(tx) == ["SlotSlashed", "DrawPending"]
    assert events(tx, "SlotSlashed")[0] == {
        "jobId": run.job_id,
        "slot": 3,
        "provider": auditor,
        "amount": COLLATERAL,
        "reopened": True,
    }
    assert (run.status, run.job.round) == (JobStatus.OPEN, Round.AUDIT)
    run.fill()
    assert run.holders[3] != auditor
    run.commit(3)
    run.reveal_all()
    tx = run.finalize()
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 1, 2, 3]
    share = COLLATERAL // 5
    assert h.credit(run.holders[0]) == PAY + share
    assert h.provider(auditor).slashed == 1


def test_audit_probability_zero_never_audits(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, verifiers=2, audit_bps=0)
    assert run.status == JobStatus.REVEALING
    closed = h.market.events(names=("CommitsClosed",), job_id=run.job_id)
    assert [e.args["audited"] for e in closed] == [False]


# ------------------------------------------------------------------- challenges


def _succeeded(h: Harness, **overrides: Any) -> Run:
    params: dict[str, Any] = {"verifiers": 2, "challenge_window": 500}
    params.update(overrides)
    return h.drive("succeeded", **params)


def test_challenge_opens_fresh_verifiers_and_holds_the_bond(h: Harness) -> None:
    run = _succeeded(h)
    before = h.contract_balance()

    tx = run.challenge()

    assert names(tx) == ["JobChallenged", "RoundOpened", "DrawPending"]
    assert events(tx, "JobChallenged") == [{"jobId": run.job_id, "bond": COLLATERAL, "unread": False}]
    assert events(tx, "RoundOpened") == [
        {"jobId": run.job_id, "round": Round.VERIFY, "slots": 2, "fillDeadline": _at(h, tx) + run.terms.fill_timeout}
    ]
    assert h.market.challenge_bond_of(run.job_id) == COLLATERAL
    assert h.contract_balance() == before + COLLATERAL
    job = run.job
    assert (job.status, job.round, job.flags) == (JobStatus.OPEN, Round.VERIFY, FLAG_VERIFY_OPENED | FLAG_CHALLENGED)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.OPEN):
        run.finalize(wait=False)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.OPEN):
        run.challenge()


def test_only_the_client_challenges(h: Harness) -> None:
    run = _succeeded(h)
    for caller in (run.holders[0], h.clients[1], h.outsiders[0]):
        with reverts(errors.NotClient, jobId=run.job_id, caller=caller):
            run.challenge(sender=caller)


@pytest.mark.parametrize("bond", [0, COLLATERAL - 1, COLLATERAL + 1])
def test_challenge_bond_must_equal_the_collateral(h: Harness, bond: int) -> None:
    run = _succeeded(h)
    with reverts(errors.WrongBond, expected=COLLATERAL, sent=bond):
        run.challenge(bond=bond)


def test_no_verifiers_not_challengeable(h: Harness) -> None:
    run = _succeeded(h, verifiers=0)
    with reverts(errors.NotChallengeable, jobId=run.job_id):
        run.challenge()


def test_challenge_after_the_window(h: Harness) -> None:
    run = _succeeded(h)
    deadline = run.past_deadline()
    with reverts(errors.DeadlinePassed, jobId=run.job_id, deadline=deadline, now_=lambda t: t >= deadline):
        run.challenge()


def test_challenge_before_success(h: Harness) -> None:
    run = h.drive("revealing", verifiers=2)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.SUCCEEDED, actual=JobStatus.REVEALING):
        run.challenge()


def test_challenge_upheld_slashes_the_original_winners_and_returns_the_bond(h: Harness) -> None:
    # Given a k=3 job whose quorum (slots 0, 1) was wrong and slot 2 right.
    run = _succeeded(h, k=3, m=2, results=[(BAD, 100), (BAD, 100), (GOOD, 100)])
    assert run.job.winner == 0
    run.challenge()
    run.fill()
    run.commit(4, GOOD)
    run.commit(5, GOOD)
    txs = run.reveal_all()
    assert events(txs[-1], "JobSucceeded") == [
        {"jobId": run.job_id, "winnerSlot": 4, "resultKey": result_key(GOOD, 100), "challengeDeadline": _at(h, txs[-1])}
    ]

    tx = run.finalize(wait=False)  # a challenge verdict is final at once

    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [0, 1]
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [2, 4, 5]
    assert events(tx, "JobFinalized") == [
        {"jobId": run.job_id, "winnerSlot": 4, "paid": 3 * PAY, "refund": run.escrow - 3 * PAY, "challengeUpheld": True}
    ]
    share = 2 * COLLATERAL // 4
    assert h.credit(run.client) == run.escrow - 3 * PAY + COLLATERAL + 2 * COLLATERAL - 3 * share
    for i in (2, 4, 5):
        assert h.credit(run.holders[i]) == PAY + share
    for i in (0, 1):
        p = h.provider(run.holders[i])
        assert (p.free, p.locked, p.slashed, p.succeeded) == (STAKE - COLLATERAL, 0, 1, 0)
    assert h.market.challenge_bond_of(run.job_id) == 0


def test_challenge_rejected_the_bond_is_lost(h: Harness) -> None:
    run = _succeeded(h)
    run.challenge()
    run.fill()
    # The binding lists every slot, the last verifier's included (index k + verifiers).
    listed = [(s.index, s.provider) for s in h.market.slots(run.job_id, run.terms)]
    assert listed[2:] == [(2, run.holders[2]), (3, run.holders[3])]
    run.commit(2, GOOD)
    run.commit(3, GOOD)
    run.reveal_all()

    tx = run.finalize(wait=False)

    assert events(tx, "JobFinalized")[0]["challengeUpheld"] is False
    assert events(tx, "SlotSlashed") == []
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 2, 3]
    # The bond leaves the client: shared out among the providers (dust to the client).
    to_providers = sum(h.credit(run.holders[i]) for i in (0, 2, 3)) - 3 * PAY
    assert to_providers + (h.credit(run.client) - (run.escrow - 3 * PAY)) == COLLATERAL
    assert to_providers >= COLLATERAL - 2
    assert h.provider(run.holders[0]).slashed == 0
    assert h.market.challenge_bond_of(run.job_id) == 0


def test_challenge_rejected_the_bond_goes_to_the_accused(h: Harness) -> None:
    run = _succeeded(h)
    run.challenge()
    run.fill()
    run.commit(2, GOOD)
    run.commit(3, GOOD)
    run.reveal_all()
    run.finalize(wait=False)
    assert h.credit(run.holders[0]) == PAY + COLLATERAL
    assert h.credit(run.holders[2]) == PAY
    assert h.credit(run.holders[3]) == PAY


def test_an_unread_challenge_rejected_gives_the_bond_back(h: Harness) -> None:
    # The client could not open the result's envelope. Whether it opens cannot be shown on
    # chain, so a provider must not earn the bond when its result stands: it comes back.
    run = _succeeded(h)
    tx = run.challenge(unread=True)
    assert events(tx, "JobChallenged") == [{"jobId": run.job_id, "bond": COLLATERAL, "unread": True}]
    run.fill()
    run.commit(2, GOOD)
    run.commit(3, GOOD)
    run.reveal_all()
    tx = run.finalize(wait=False)
    assert events(tx, "JobFinalized")[0]["challengeUpheld"] is False
    assert h.credit(run.holders[0]) == PAY
    assert h.credit(run.client) == run.escrow - 3 * PAY + COLLATERAL


def test_challenge_nobody_verifies_voids_it(h: Harness) -> None:
    run = _succeeded(h)
    run.challenge()
    tx = run.timeout_now()
    assert names(tx) == ["JobSucceeded"]
    assert events(tx, "JobSucceeded") == [
        {"jobId": run.job_id, "winnerSlot": 0, "resultKey": result_key(GOOD, 100), "challengeDeadline": _at(h, tx)}
    ]
    assert h.credit(run.client) == COLLATERAL  # bond back at once
    assert h.market.challenge_bond_of(run.job_id) == 0
    assert run.job.flags & FLAG_CHALLENGED == 0
    tx = run.finalize(wait=False)
    assert events(tx, "JobFinalized")[0]["challengeUpheld"] is False
    assert h.credit(run.client) == COLLATERAL + run.escrow - PAY


def test_challenge_verifiers_split_voids_it_and_the_odd_one_is_slashed(h: Harness) -> None:
    run = _succeeded(h)
    run.challenge()
    run.fill()
    run.commit(2, GOOD)
    run.commit(3, BAD)
    txs = run.reveal_all()
    assert names(txs[-1]) == ["ResultRevealed", "JobSucceeded"]
    assert run.job.winner == 0
    assert h.credit(run.client) == COLLATERAL
    tx = run.finalize(wait=False)
    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [3]
    assert [e["slot"] for e in events(tx, "ProviderPaid")] == [0, 2]
    assert events(tx, "JobFinalized")[0]["challengeUpheld"] is False


def test_challenge_verifiers_never_commit_are_redrawn_then_voided(h: Harness) -> None:
    run = _succeeded(h)
    run.challenge()
    run.fill()
    tx = run.timeout_now()
    assert names(tx) == ["SlotSlashed", "SlotSlashed", "DrawPending"]
    assert run.slot(2).state == SlotState.SLASHED
    tx = run.timeout_now()  # nobody in the pool any more: the round cannot fill
    assert names(tx) == ["JobSucceeded"]
    assert h.credit(run.client) == COLLATERAL
    tx = run.finalize(wait=False)
    share = 2 * COLLATERAL // 2
    assert h.credit(run.holders[0]) == PAY + share
    assert h.provider(run.holders[2]).slashed == 1


def test_a_challenger_cannot_seat_its_own_accounts(h: Harness) -> None:
    # The reviewed attack: the client challenges and its provider accounts bid for every
    # verifier seat at once. Bids are refused; the draw seats pool members only, never the
    # client (even when the client is a pool member) nor a holder of the job.
    run = _succeeded(h, k=3, m=2, verifiers=3, client=h.clients[0])
    sybils = run.fresh(3)
    run.challenge()
    for sybil in sybils:
        with reverts(errors.DrawnRound, jobId=run.job_id):
            h.as_(sybil).bid(run.job_id, 1, run.terms)
    honest = run.fresh(3, exclude=sybils)
    h.as_(run.client).register(Capability.WASM | Capability.DOCKER | Capability.VERIFIER, STAKE)
    tx = run.draw([*honest, run.client, *(run.holders[i] for i in range(3))])
    assert sorted(e["provider"] for e in events(tx, "SlotAssigned")) == sorted(honest)
