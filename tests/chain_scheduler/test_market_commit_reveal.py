"""Commit and reveal: events, sealed values, and every revert path."""

from __future__ import annotations

from chain_harness import BAD, GOOD, Harness, events, names, reverts

from chain_scheduler import JobStatus, Round, SlotState, commitment, errors, result_key


def test_commit_seals_and_the_last_commit_closes(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)

    first = run.commit(0, GOOD, 100)

    assert events(first, "ResultCommitted") == [{"jobId": run.job_id, "slot": 0, "provider": run.holders[0]}]
    slot = run.slot(0)
    a = run.answers[0]
    assert slot.state == SlotState.COMMITTED
    assert slot.sealed == commitment(run.job_id, run.holders[0], GOOD, 100, a.salt)
    assert (run.job.status, run.job.committed) == (JobStatus.RUNNING, 1)

    run.commit(1, GOOD, 100)
    last = run.commit(2, GOOD, 100)

    assert names(last) == ["ResultCommitted", "CommitsClosed"]
    at = h.w3.eth.get_block(last.block_number)["timestamp"]
    assert events(last, "CommitsClosed") == [
        {"jobId": run.job_id, "round": Round.MAIN, "audited": False, "revealDeadline": at + run.terms.reveal_window}
    ]
    job = run.job
    assert (job.status, job.committed, job.revealed, job.deadline) == (
        JobStatus.REVEALING,
        3,
        0,
        at + run.terms.reveal_window,
    )


def test_commit_on_another_providers_slot(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    intruder = run.holders[1]
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=0, caller=intruder):
        h.as_(intruder).commit(run.job_id, 0, b"\x01" * 32, run.terms)
    outsider = h.outsiders[0]
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=0, caller=outsider):
        h.as_(outsider).commit(run.job_id, 0, b"\x01" * 32, run.terms)


def test_commit_twice(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    with reverts(
        errors.WrongSlotState, jobId=run.job_id, slot=0, expected=SlotState.ASSIGNED, actual=SlotState.COMMITTED
    ):
        run.commit(0)


def test_commit_before_bidding_closes(h: Harness) -> None:
    run = h.post(k=3, m=2)
    run.bid(h.providers[0])
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.RUNNING, actual=JobStatus.OPEN):
        run.commit(0)


def test_commit_after_the_deadline(h: Harness) -> None:
    run = h.drive("running")
    deadline = run.past_deadline()
    with reverts(errors.DeadlinePassed, jobId=run.job_id, deadline=deadline, now_=lambda t: t >= deadline):
        run.commit(0)


def test_reveal_opens_the_commitment(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, results=[(GOOD, 100), (GOOD, 100), (BAD, 7)])

    tx = run.reveal(2)

    assert events(tx, "ResultRevealed") == [
        {"jobId": run.job_id, "slot": 2, "provider": run.holders[2], "resultCid": BAD, "usage": 7}
    ]
    slot = run.slot(2)
    assert (slot.state, slot.sealed, slot.usage) == (SlotState.REVEALED, result_key(BAD, 7), 7)
    assert slot.result_digest == result_key(BAD, 7)[:24]
    assert (run.job.status, run.job.revealed) == (JobStatus.REVEALING, 1)


def test_last_reveal_tallies(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, results=[(BAD, 5), (GOOD, 100), (GOOD, 100)])
    run.reveal(0)
    run.reveal(1)
    tx = run.reveal(2)
    assert names(tx) == ["ResultRevealed", "JobSucceeded"]
    at = h.w3.eth.get_block(tx.block_number)["timestamp"]
    assert events(tx, "JobSucceeded") == [
        {
            "jobId": run.job_id,
            "winnerSlot": 1,
            "resultKey": result_key(GOOD, 100),
            "challengeDeadline": at + run.terms.challenge_window,
        }
    ]
    job = run.job
    assert (job.status, job.winner, job.revealed, job.deadline) == (
        JobStatus.SUCCEEDED,
        1,
        3,
        at + run.terms.challenge_window,
    )


def test_reveal_before_commits_close(h: Harness) -> None:
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.REVEALING, actual=JobStatus.RUNNING):
        run.reveal(0)


def test_reveal_something_else_than_committed(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    holder = run.holders[0]
    a = run.answers[0]
    market = h.as_(holder)
    for cid, usage, salt in [(BAD, a.usage, a.salt), (a.cid, a.usage + 1, a.salt), (a.cid, a.usage, b"\x00" * 32)]:
        with reverts(errors.CommitmentMismatch, jobId=run.job_id, slot=0):
            market.reveal(run.job_id, 0, cid, usage, salt, run.terms)
    assert run.slot(0).state == SlotState.COMMITTED
    run.reveal(0)  # the honest reveal still works


def test_reveal_twice(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    run.reveal(0)
    with reverts(
        errors.WrongSlotState, jobId=run.job_id, slot=0, expected=SlotState.COMMITTED, actual=SlotState.REVEALED
    ):
        run.reveal(0)


def test_reveal_on_another_providers_slot(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    intruder = run.holders[1]
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=0, caller=intruder):
        run.reveal(0, sender=intruder)


def test_reveal_after_the_deadline(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2)
    deadline = run.past_deadline()
    with reverts(errors.DeadlinePassed, jobId=run.job_id, deadline=deadline, now_=lambda t: t >= deadline):
        run.reveal(0)
