"""Sealed results: main results of a job with verifiers reach the chain as a hash only.

The envelope that carries the CID to the client, the sealed reveal's event, and the
``publish`` that puts the CID on chain once the challenge window is over and settles the
job (unpublished, the job fails and its sealed providers are slashed). The copycat
verifier that finds nothing to copy is in ``contracts/test/Attacks.t.sol``
(``test_copycatVerifierHasNothingToCopy``) and, with daemons, in
``tests/compute_node/test_node_rounds.py``.
"""

from __future__ import annotations

import pytest
from chain_harness import BAD, GOOD, Harness, events, names, reverts
from eth_account import Account

from chain_scheduler import (
    FailReason,
    JobStatus,
    delivery_key,
    errors,
    open_envelope,
    public_key_hex,
    resolve_parent_result,
    result_hash,
    seal,
)

CLIENT_KEY = Account.from_key(b"\x11" * 32).key
OTHER_KEY = Account.from_key(b"\x22" * 32).key


def test_an_envelope_opens_only_for_its_client_and_job() -> None:
    key = delivery_key(CLIENT_KEY)
    envelope = seal(GOOD, public_key_hex(key), job_id=7)
    assert open_envelope(envelope, key, job_id=7) == GOOD
    assert GOOD.encode() not in envelope
    # A fresh ephemeral key each time: two envelopes of one CID do not match.
    assert seal(GOOD, public_key_hex(key), job_id=7) != envelope
    with pytest.raises(errors.SealError, match="does not open"):
        open_envelope(envelope, delivery_key(OTHER_KEY), job_id=7)
    with pytest.raises(errors.SealError, match="does not open"):
        open_envelope(envelope, key, job_id=8)
    tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])
    with pytest.raises(errors.SealError, match="does not open"):
        open_envelope(tampered, key, job_id=7)
    with pytest.raises(errors.SealError, match="no envelope"):
        open_envelope(b"", key, job_id=7)
    with pytest.raises(errors.SealError, match="not a version-1 envelope"):
        open_envelope(b"\x02" + envelope[1:], key, job_id=7)
    with pytest.raises(ValueError, match="32 bytes of hex"):
        seal(GOOD, "abcd", job_id=7)


def test_a_job_with_verifiers_reveals_its_main_results_sealed(h: Harness) -> None:
    run = h.drive("revealing", k=3, m=2, verifiers=2, challenge_window=500)
    envelope = seal(GOOD, public_key_hex(delivery_key(CLIENT_KEY)), job_id=run.job_id)
    a = run.answers[0]
    tx = h.as_(run.holders[0]).reveal(run.job_id, 0, a.cid, a.usage, a.salt, run.terms, envelope=envelope)
    assert names(tx) == ["ResultSealed"]
    [sealed] = events(tx, "ResultSealed")
    assert sealed["resultHash"] == result_hash(GOOD)
    assert sealed["envelope"] == envelope
    assert GOOD.encode() not in bytes(h.w3.eth.get_transaction(tx.tx_hash)["input"])
    run.reveal_all()
    assert run.status == JobStatus.SUCCEEDED
    assert not run.h.market.events(names=("ResultRevealed",), job_id=run.job_id)


def test_a_job_without_verifiers_reveals_in_the_open(h: Harness) -> None:
    run = h.drive("revealing", k=1, m=1)
    [tx] = run.reveal_all()
    assert names(tx)[0] == "ResultRevealed"
    assert events(tx, "ResultRevealed")[0]["resultCid"] == GOOD


def test_a_sealed_result_settles_by_its_publication_after_the_challenge_window(h: Harness) -> None:
    run = h.drive("succeeded", k=1, m=1, verifiers=2, challenge_window=500)
    outsider = h.outsiders[0]
    deadline = run.job.deadline
    # During the window a drawn verifier could copy it.
    with reverts(errors.DeadlineNotReached, jobId=run.job_id, deadline=deadline, now_=lambda t: t < deadline):
        h.as_(outsider).publish(run.job_id, GOOD, run.terms)
    h.travel_to(deadline)
    # The window is over, but the CID is nowhere on chain: nobody is paid for it yet.
    publish_by = deadline + run.terms.reveal_window
    with reverts(errors.DeadlineNotReached, jobId=run.job_id, deadline=publish_by, now_=lambda t: t < publish_by):
        run.finalize(wait=False, publish=False)
    with reverts(errors.ResultMismatch, jobId=run.job_id):
        h.as_(outsider).publish(run.job_id, BAD, run.terms)
    tx = h.as_(outsider).publish(run.job_id, GOOD, run.terms)
    assert names(tx) == ["ResultPublished", "ProviderPaid", "JobFinalized"]
    assert events(tx, "ResultPublished") == [{"jobId": run.job_id, "resultCid": GOOD}]
    assert run.status == JobStatus.FINALIZED
    assert resolve_parent_result(h.market, run.job_id) == GOOD
    # Its publication is in a block before the ones read: said so, not guessed.
    with pytest.raises(errors.ResultUnpublished, match="chainsched job publish"):
        resolve_parent_result(h.market, run.job_id, from_block=tx.block_number + 1)


def test_a_sealed_result_nobody_publishes_fails_its_job_and_slashes_its_provider(h: Harness) -> None:
    # A provider whose envelope the client cannot open gains nothing by never publishing.
    run = h.drive("succeeded", k=1, m=1, verifiers=2, challenge_window=500)
    provider = run.holders[0]
    stake = h.provider(provider).free + h.provider(provider).locked
    h.travel_to(run.job.deadline + run.terms.reveal_window)
    tx = run.finalize(wait=False, publish=False)
    refund = h.market.escrow_for(run.terms) + run.terms.collateral
    assert events(tx, "JobFailed") == [{"jobId": run.job_id, "reason": FailReason.UNPUBLISHED, "refund": refund}]
    assert [e["slot"] for e in events(tx, "SlotSlashed")] == [0]
    assert h.provider(provider).free + h.provider(provider).locked == stake - run.terms.collateral
    assert h.market.credit_of(provider) == 0
    with pytest.raises(errors.ParentNotReady):
        resolve_parent_result(h.market, run.job_id)
