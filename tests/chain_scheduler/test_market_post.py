"""postJob: escrow, the JobPosted event, and every validation rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from chain_harness import (
    MAX_PRICE,
    MAX_UNITS,
    SPEC_CID,
    Harness,
    destructive_terms,
    docker_terms,
    events,
    reverts,
)

from chain_scheduler import Executor, JobStatus, JobTerms, Round, SafetyClass, errors, spec_digest


def _post(h: Harness, terms: JobTerms, *, spec_cid: str = SPEC_CID, value: int | None = None) -> Any:
    return h.as_(h.client).post_job_tx(spec_cid, terms, value=value)


def test_post_holds_the_worst_case_escrow_and_emits_the_terms(h: Harness) -> None:
    terms = h.terms(k=3, m=2, verifiers=2, audit_bps=2_500, parents=())
    assert terms.escrow == (3 + 1 + 2) * MAX_UNITS * MAX_PRICE
    assert h.market.escrow_for(terms) == terms.escrow
    before = h.contract_balance()

    tx = _post(h, terms)

    (posted,) = events(tx, "JobPosted")
    assert posted["jobId"] == 1
    assert posted["client"] == h.client
    assert posted["specCid"] == SPEC_CID
    assert posted["escrow"] == terms.escrow
    assert JobTerms.from_abi(posted["terms"]) == terms
    assert h.contract_balance() == before + terms.escrow
    job = h.job(1)
    assert (job.status, job.round, job.filled, job.committed, job.revealed, job.flags) == (
        JobStatus.OPEN,
        Round.MAIN,
        0,
        0,
        0,
        0,
    )
    assert job.terms_digest == terms.digest
    assert job.deadline == h.w3.eth.get_block(tx.block_number)["timestamp"] + terms.fill_timeout
    assert h.market.job_count() == 1
    assert h.market.terms_of(1) == terms


def test_job_ids_are_sequential(h: Harness) -> None:
    assert [h.post().job_id for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize(("k", "m"), [(0, 0), (1, 0), (2, 1), (3, 1), (3, 4), (4, 2), (17, 9)])
def test_bad_replication(h: Harness, k: int, m: int) -> None:
    with reverts(errors.BadReplication, k=k, m=m):
        _post(h, h.terms(k=k, m=m))


@pytest.mark.parametrize(("k", "m"), [(1, 1), (2, 2), (3, 2), (16, 9)])
def test_good_replication(h: Harness, k: int, m: int) -> None:
    assert h.post(k=k, m=m).status == JobStatus.OPEN


@pytest.mark.parametrize(
    ("executor", "safety"),
    [
        (Executor.WASM, SafetyClass.NONDESTRUCTIVE),
        (Executor.WASM, SafetyClass.DESTRUCTIVE),
        (Executor.DOCKER, SafetyClass.DETERMINISTIC),
    ],
)
def test_class_mismatch(h: Harness, executor: Executor, safety: SafetyClass) -> None:
    with reverts(errors.ClassMismatch, executor=int(executor), safety=int(safety)):
        _post(h, h.terms(executor=executor, safety=safety))


@pytest.mark.parametrize(
    ("k", "m", "verifiers", "audit_bps"),
    [(2, 2, 0, 0), (3, 2, 0, 0), (1, 1, 1, 0), (1, 1, 1, 100)],
)
def test_destructive_must_run_once(h: Harness, k: int, m: int, verifiers: int, audit_bps: int) -> None:
    terms = h.terms(k=k, m=m, verifiers=verifiers, audit_bps=audit_bps, **destructive_terms())
    with reverts(errors.DestructiveReplicated, k=k, verifiers=verifiers, auditBps=audit_bps):
        _post(h, terms)


def test_destructive_k1_is_accepted(h: Harness) -> None:
    assert h.post(**destructive_terms()).status == JobStatus.OPEN


@pytest.mark.parametrize(("audit_bps", "verifiers"), [(1, 0), (10_000, 0), (10_001, 1), (65_535, 3)])
def test_bad_audit(h: Harness, audit_bps: int, verifiers: int) -> None:
    with reverts(errors.BadAudit, auditBps=audit_bps, verifiers=verifiers):
        _post(h, h.terms(audit_bps=audit_bps, verifiers=verifiers))


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        (0, {"max_price": 0}),
        (1, {"max_units": 0}),
        (2, {"fill_timeout": 0}),
        (3, {"exec_timeout": 0}),
        (4, {"reveal_window": 0}),
        (5, {"bid_window": 300, "fill_timeout": 300}),
        (5, {"bid_window": 301, "fill_timeout": 300}),
        (6, {"verifiers": 16}),
        (8, {"parents": (1,) * 9}),
    ],
)
def test_bad_term(h: Harness, field: int, overrides: dict[str, Any]) -> None:
    with reverts(errors.BadTerm, field=field):
        _post(h, h.terms(**overrides))


def test_bad_term_client_is_not_sender(h: Harness) -> None:
    terms = h.terms(client=h.clients[1])
    with reverts(errors.BadTerm, field=7):
        _post(h, terms)  # sent by clients[0]


def test_bad_term_messages_name_the_field(h: Harness) -> None:
    with pytest.raises(errors.BadTerm) as info:
        _post(h, h.terms(max_units=0))
    assert "max_units" in str(info.value)


def test_spec_mismatch(h: Harness) -> None:
    terms = h.terms(spec_cid="bafkreisomethingelse")
    with reverts(errors.SpecMismatch, expected=spec_digest(SPEC_CID), actual=spec_digest("bafkreisomethingelse")):
        _post(h, terms, spec_cid=SPEC_CID)


@pytest.mark.parametrize("delta", [-1, 1, None])
def test_wrong_escrow(h: Harness, delta: int | None) -> None:
    terms = h.terms(k=3, m=2)
    sent = 0 if delta is None else terms.escrow + delta
    with reverts(errors.WrongEscrow, expected=terms.escrow, sent=sent):
        _post(h, terms, value=sent)


@pytest.mark.parametrize("parent", [0, 2, 5])
def test_unknown_parent(h: Harness, parent: int) -> None:
    h.post()  # job 1 exists; the job being posted would be 2
    with reverts(errors.UnknownParent, parent=parent):
        _post(h, h.terms(parents=(1, parent)))
    assert h.market.job_count() == 1


def test_parents_up_to_eight(h: Harness) -> None:
    parent = h.post().job_id
    assert h.post(parents=(parent,) * 8).status == JobStatus.OPEN


def test_validation_order_client_before_everything(h: Harness) -> None:
    # Several terms are wrong at once: the client check comes first, then the spec.
    bad = dataclasses.replace(h.terms(k=0, m=0, max_price=0), client=h.clients[1])
    with reverts(errors.BadTerm, field=7):
        _post(h, bad)


def test_docker_job_can_be_nondestructive_or_destructive(h: Harness) -> None:
    assert h.post(**docker_terms(), k=3, m=2).status == JobStatus.OPEN
    assert h.post(**destructive_terms()).status == JobStatus.OPEN


def test_job_functions_refuse_unknown_jobs_and_other_terms(h: Harness) -> None:
    run = h.post()
    with reverts(errors.UnknownJob, jobId=99):
        h.as_(h.providers[0]).bid(99, 5, run.terms)
    other = dataclasses.replace(run.terms, max_units=MAX_UNITS + 1)
    with reverts(errors.TermsMismatch, jobId=run.job_id, expected=run.terms.digest, actual=other.digest):
        h.as_(h.providers[0]).bid(run.job_id, 5, other)
    assert run.slot(0).provider == "0x" + "00" * 20
