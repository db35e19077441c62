"""Sealed results: main results of a job with verifiers reach the chain as a hash only.

The envelope that carries the CID to the client, the sealed reveal's event, and the
``publish`` that puts a final result's CID on chain for child jobs. The copycat
verifier that finds nothing to copy is in ``contracts/test/Attacks.t.sol``
(``test_copycatVerifierHasNothingToCopy``) and, with daemons, in
``tests/compute_node/test_node_rounds.py``.
"""

from __future__ import annotations

import pytest
from chain_harness import BAD, GOOD, Harness, events, names, reverts
from eth_account import Account

from chain_scheduler import (
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


def test_a_final_sealed_result_is_published_by_anyone_who_holds_its_cid(h: Harness) -> None:
    run = h.drive("succeeded", k=1, m=1, verifiers=2, challenge_window=500)
    outsider = h.outsiders[0]
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.FINALIZED, actual=JobStatus.SUCCEEDED):
        h.as_(outsider).publish(run.job_id, GOOD, run.terms)
    run.finalize()
    # Final, but the CID is nowhere on chain yet: a child job's provider must wait.
    with pytest.raises(errors.ResultUnpublished, match="chainsched job publish"):
        resolve_parent_result(h.market, run.job_id)
    with reverts(errors.ResultMismatch, jobId=run.job_id):
        h.as_(outsider).publish(run.job_id, BAD, run.terms)
    tx = h.as_(outsider).publish(run.job_id, GOOD, run.terms)
    assert events(tx, "ResultPublished") == [{"jobId": run.job_id, "resultCid": GOOD}]
    assert resolve_parent_result(h.market, run.job_id) == GOOD
