"""NodeState: the provider node's SQLite state, and that it survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account

from chain_scheduler import JobId, PendingTx, TxJournal, TxSender
from chain_scheduler._anvil import DEVNET_MNEMONIC, Anvil
from compute_node._state import SCHEMA_VERSION, JobPhase, JobRecord, NodeState, StateError

ROOT = Path(__file__).resolve().parents[2]
SALT = bytes.fromhex("5a" * 32)
SEED = bytes(range(32))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[NodeState]:
    with NodeState(tmp_path / "node" / "state.db") as s:
        yield s


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_file_is_created_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    state = NodeState(path)
    assert not path.exists()  # the constructor does no I/O
    with state:
        assert state.schema_version == SCHEMA_VERSION
        assert state._query("PRAGMA synchronous")[0][0] == 2  # FULL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    with NodeState(path) as again:  # reopening migrates nothing twice
        assert again.schema_version == SCHEMA_VERSION


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    NodeState(path).open().close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StateError, match="schema version 99, newer"):
        NodeState(path).open()


def test_use_before_open_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="call open"):
        NodeState(tmp_path / "s.db").load()


def test_cursor_starts_empty_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with NodeState(path) as state:
        assert state.load() is None
        state.save(41)
        state.save(42)
        assert state.load() == 42
    with NodeState(path) as state:
        assert state.load() == 42


def test_handled_events_are_remembered_once(state: NodeState) -> None:
    key = ("0x" + "ab" * 32, 3)
    assert not state.is_handled(*key)
    assert state.mark_handled(*key, block=10) is True
    assert state.mark_handled(*key, block=10) is False  # the second delivery is a no-op
    assert state.is_handled(key[0].upper().replace("0X", "0x"), 3)  # hashes compare case-insensitively
    assert not state.is_handled(key[0], 4)
    state.mark_handled("0x" + "cd" * 32, 0, block=20)
    assert state.forget_handled_before(15) == 1
    assert not state.is_handled(*key) and state.is_handled("0x" + "cd" * 32, 0)


def test_job_records_round_trip_and_in_flight_excludes_final_phases(state: NodeState) -> None:
    # Given jobs in several phases
    running = JobRecord(
        job_id=JobId(7),
        phase=JobPhase.RUNNING,
        slot=2,
        round=1,
        seed=SEED,
        salt=SALT,
        result_cid="bafyresult",
        usage=12345,
        receipt_cid="bafyreceipt",
    )
    stored = state.upsert(running)
    state.upsert(JobRecord(job_id=JobId(3), phase=JobPhase.BIDDING))
    state.upsert(JobRecord(job_id=JobId(9), phase=JobPhase.ABANDONED, error="module is not Wasm"))
    state.upsert(JobRecord(job_id=JobId(5), phase=JobPhase.SETTLED, slot=0))
    # Then every field comes back as written
    got = state.get(7)
    assert got == stored and got is not None
    assert (got.salt, got.seed, got.usage, got.slot, got.round) == (SALT, SEED, 12345, 2, 1)
    assert got.updated_at > 0 and got.in_flight
    assert state.get(8) is None
    assert [j.job_id for j in state.in_flight()] == [3, 7]
    assert [j.job_id for j in state.jobs()] == [3, 5, 7, 9]
    abandoned = state.get(9)
    assert abandoned is not None and abandoned.error == "module is not Wasm" and not abandoned.in_flight
    # When a job moves on, the row is replaced, not duplicated
    state.upsert(replace(got, phase=JobPhase.COMMITTED))
    moved = state.get(7)
    assert moved is not None and moved.phase == JobPhase.COMMITTED and moved.salt == SALT
    assert len(state.jobs()) == 4


def test_journal_keeps_pending_transactions_until_their_nonce_settles(state: NodeState) -> None:
    journal: TxJournal = state  # NodeState is a TxJournal
    journal.record(4, "0x" + "01" * 32, b"\x02raw-a", "commit job_id=1")
    journal.record(4, "0x" + "02" * 32, b"\x02raw-b", "commit job_id=1")  # a replacement, same nonce
    journal.record(5, "0x" + "03" * 32, b"\x02raw-c", "reveal job_id=1")
    journal.record(5, "0x" + "03" * 32, b"\x02raw-c", "reveal job_id=1")  # recorded twice: kept once
    assert journal.pending() == [
        PendingTx(nonce=4, tx_hash="0x" + "01" * 32, raw_tx=b"\x02raw-a", label="commit job_id=1"),
        PendingTx(nonce=4, tx_hash="0x" + "02" * 32, raw_tx=b"\x02raw-b", label="commit job_id=1"),
        PendingTx(nonce=5, tx_hash="0x" + "03" * 32, raw_tx=b"\x02raw-c", label="reveal job_id=1"),
    ]
    journal.settled(4, "0x" + "02" * 32, 1)
    assert [t.nonce for t in journal.pending()] == [5]
    entries = state.journal(nonce=4)
    assert [(e.status, e.mined_hash) for e in entries] == [(1, "0x" + "02" * 32)] * 2
    # A nonce reused after a drop: settling the new one leaves the old outcome alone
    journal.settled(5, "0x" + "03" * 32, -1)
    journal.record(5, "0x" + "04" * 32, b"\x02raw-d", "reveal job_id=1")
    journal.settled(5, "0x" + "04" * 32, 1)
    assert [(e.tx_hash[-2:], e.status) for e in state.journal(nonce=5)] == [("03", -1), ("04", 1)]
    assert journal.pending() == []


WRITER = """
    import sys
    from pathlib import Path
    from chain_scheduler import JobId
    from compute_node._state import JobPhase, JobRecord, NodeState

    state = NodeState(Path(sys.argv[1])).open()
    i = 0
    while True:
        i += 1
        # Salt and result in one write, as before a commit transaction is sent.
        state.upsert(JobRecord(job_id=JobId(i), phase=JobPhase.RUNNING, slot=0, seed=bytes(32),
                               salt=i.to_bytes(32, "big"), result_cid=f"bafy{i}", usage=i))
        state.record(i, "0x%064x" % i, b"raw%d" % i, f"commit job_id={i}")
        state.save(i)
        print(i, flush=True)  # the write has returned: it must survive what follows
"""


def test_writes_survive_sigkill_right_after_they_return(tmp_path: Path) -> None:
    # Given a child process writing salts and results as fast as it can
    path = tmp_path / "state.db"
    child = run_child(WRITER, str(path))
    assert child.stdout is not None
    acknowledged = 0
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 25:
            # When it is killed the moment a write returned (it is already writing the next)
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(10)
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    # Then every acknowledged write is there when the file is reopened
    with NodeState(path) as state:
        for i in range(1, acknowledged + 1):
            job = state.get(i)
            assert job is not None, f"job {i} was acknowledged but lost"
            assert (job.salt, job.result_cid, job.usage) == (i.to_bytes(32, "big"), f"bafy{i}", i)
        assert state.load() is not None and state.load() >= acknowledged  # type: ignore[operator]
        assert {t.nonce for t in state.pending()} >= set(range(1, acknowledged + 1))


DYING_SENDER = """
    import os, signal, sys
    from pathlib import Path
    from eth_account import Account
    from web3 import Web3
    from chain_scheduler import TxSender
    from chain_scheduler._anvil import DEVNET_MNEMONIC
    from compute_node._state import NodeState

    class DiesAfterRecord(NodeState):
        def record(self, nonce, tx_hash, raw_tx, label):
            super().record(nonce, tx_hash, raw_tx, label)
            os.kill(os.getpid(), signal.SIGKILL)  # signed and journalled, never broadcast

    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEVNET_MNEMONIC, account_path="m/44'/60'/0'/0/4")
    state = DiesAfterRecord(Path(sys.argv[1])).open()
    sender = TxSender(w3=Web3(Web3.HTTPProvider(sys.argv[2])), account=account, journal=state)
    sender.send({"to": account.address, "value": 4242, "gas": 21000}, label="reveal job_id=3")
"""


def test_node_killed_between_signing_and_sending_resumes_the_transaction(tmp_path: Path) -> None:
    # Given a node process killed right after journalling a transaction, before broadcasting it
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEVNET_MNEMONIC, account_path="m/44'/60'/0'/0/4")
    path = tmp_path / "state.db"
    with Anvil() as node:
        w3 = node.web3()
        child = run_child(DYING_SENDER, str(path), node.url)
        _, err = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, err
        assert w3.eth.get_transaction_count(account.address, "pending") == 0  # nothing reached the node
        # When the node restarts on the same state file
        with NodeState(path) as state:
            assert [t.label for t in state.pending()] == ["reveal job_id=3"]
            sender = TxSender(w3=w3, account=account, journal=state)
            sender.start()
            resumed = sender.resume()
            # Then the transaction is sent, mined and settled in the journal
            assert len(resumed) == 1
            tx, receipt = resumed[0]
            assert receipt is not None and receipt["status"] == 1 and tx.label == "reveal job_id=3"
            assert w3.eth.get_transaction(receipt["transactionHash"])["value"] == 4242
            assert state.pending() == []
            assert [e.status for e in state.journal()] == [1]
            assert w3.eth.get_transaction_count(account.address) == 1
