"""The devnet: real anvil and real provider daemons, started and stopped as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3
from web3.types import Wei

from chain_scheduler._anvil import Anvil, ChainJournal, Journal, free_port, restore_chain
from chain_scheduler._devnet import BEHAVIOURS, Devnet


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    net = Devnet(root=tmp_path / "devnet", poll_interval=0.2, state_interval=1, stop_timeout=20)
    try:
        yield net
    finally:
        net.down()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from chain_scheduler.cli import main; main()", *args],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout


def _transfer(w3: Web3, sender: str, receiver: str) -> None:
    """One wei, mined (automine answers the send before it mines the block)."""
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": sender, "to": receiver, "value": Wei(1)}), 30)


def _wait_journaled(journal: Path, block: int, timeout: float = 10.0) -> None:
    """Wait until the journal holds ``block`` (it lags anvil by a few milliseconds)."""
    deadline = time.monotonic() + timeout
    while (Journal.read(journal).head or 0) < block:
        assert time.monotonic() < deadline, f"the journal did not reach block {block}: {Journal.read(journal)}"
        time.sleep(0.01)


def test_behaviours_mirror_the_daemon() -> None:
    from compute_node._behaviour import Behaviour

    assert set(BEHAVIOURS) == {b.value for b in Behaviour}


@pytest.mark.timeout(120)
def test_up_is_idempotent_and_a_restart_keeps_the_chain(devnet: Devnet) -> None:
    # Given / When: a devnet with two providers, one of them lazy
    record = devnet.up(providers=2, bad={1: "lazy"})

    # Then: the record is written and both daemons run and are registered
    on_disk = json.loads(devnet.record_file.read_text())
    assert on_disk["contract"] == record["contract"] and on_disk["chain_id"] == 31337
    pids = [p["pid"] for p in record["providers"]]
    assert [p["behaviour"] for p in record["providers"]] == ["honest", "lazy"]
    assert all(_running(pid) for pid in pids)
    status = devnet.status()
    assert status.reachable and status.contract_deployed and status.anvil_alive
    assert [p.alive for p in status.providers] == [True, True]
    assert all(p.registered and p.stake_free == 10**18 for p in status.providers)
    assert all(p.capabilities == ("wasm", "verifier") for p in status.providers)

    # When: up again; Then: nothing is restarted
    again = devnet.up(providers=2, bad={1: "lazy"})
    assert [p["pid"] for p in again["providers"]] == pids
    assert again["anvil_pid"] == record["anvil_pid"]

    # When: down; Then: no process is left
    head = status.head
    assert head is not None and head > 0
    stopped = devnet.down()
    assert set(stopped) == {"node-0", "node-1", "chain-journal", "anvil"}
    assert not any(_running(pid) for pid in [*pids, record["anvil_pid"]])
    assert not list(devnet.root.glob("*.pid"))

    # When: up again; Then: the chain was loaded from its state file (same contract, same height), no restore
    restarted = devnet.up(providers=2, bad={1: "lazy"})
    assert restarted["contract"] == record["contract"]
    after = devnet.status()
    assert after.head is not None and after.head >= head
    assert after.restored is None and after.journal_alive
    assert all(p.alive and p.registered for p in after.providers)


@pytest.mark.timeout(120)
def test_stale_pid_files_are_cleaned_and_the_cli_prints_json(devnet: Devnet) -> None:
    # Given: a devnet whose provider was killed (a crash leaves its pid file behind)
    record = devnet.up(providers=1)
    dead = record["providers"][0]["pid"]
    os.kill(dead, 9)
    devnet._children[dead].wait()

    # When: status, then up
    assert [p.alive for p in devnet.status().providers] == [False]
    restarted = devnet.up(providers=1)

    # Then: only the dead daemon was restarted
    assert restarted["providers"][0]["pid"] != dead
    assert restarted["anvil_pid"] == record["anvil_pid"]

    # When: up with another price; Then: the daemon is restarted with it, and says so
    repriced = devnet.up(providers=1, prices={0: 7})
    assert repriced["providers"][0]["pid"] != restarted["providers"][0]["pid"]
    assert repriced["providers"][0]["price"] == 7 and repriced["providers"][0]["docker"] is False
    assert "--price 7" in devnet.logs("node-0", lines=None).rsplit("--- ", 1)[1]
    assert devnet.status().providers[0].price == 7

    # And: `chainsched devnet status --json` prints one JSON document
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from chain_scheduler.cli import main; main()",
            "devnet",
            "status",
            "--root",
            str(devnet.root),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert data["contract"] == record["contract"]
    assert data["providers"][0]["alive"] is True
    assert data["providers"][0]["jobs_in_flight"] == 0
    assert data["providers"][0]["price"] == 7 and data["docker"] is False and data["docker_engine"] is None


def test_bad_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    # Given: no devnet yet
    net = Devnet(root=tmp_path / "devnet")

    # When / Then: a price for a provider that does not exist, or a negative one, is refused at once
    with pytest.raises(ValueError, match=r"provider index must be in 0\.\.1"):
        net.up(providers=2, prices={2: 1})
    with pytest.raises(ValueError, match="at least 0"):
        net.up(providers=2, prices={0: -1})
    assert not net.root.exists()

    # And: the CLI says how to write a price
    out = subprocess.run(
        [sys.executable, "-c", "from chain_scheduler.cli import main; main()", "devnet", "up", "--root",
         str(net.root), "--price", "x:2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "use WEI (every provider) or K:WEI (provider K)" in out.stderr
    assert not net.root.exists()


@pytest.mark.timeout(120)
def test_status_reports_a_chain_restored_after_kill_9_until_a_clean_down(tmp_path: Path) -> None:
    # Given: a devnet whose snapshot interval outlasts the test, and blocks mined after its snapshot
    net = Devnet(root=tmp_path / "devnet", port=free_port(), state_interval=3600, stop_timeout=20)
    try:
        record = net.up(providers=0)
        w3 = Web3(Web3.HTTPProvider(record["rpc_url"]))
        snapshot = Journal.read(net.journal_file).snapshot_block
        accounts = list(w3.eth.accounts)
        for _ in range(3):
            _transfer(w3, accounts[1], accounts[2])
        head = w3.eth.block_number
        head_hash = w3.eth.get_block(head)["hash"]
        assert snapshot is not None and head == snapshot + 3
        _wait_journaled(net.journal_file, head)

        # When: anvil is killed -9 (its pid file stays behind), then `up`
        anvil = record["anvil_pid"]
        os.kill(anvil, signal.SIGKILL)
        net._children[anvil].wait(10)
        assert not net.status().anvil_alive
        again = net.up(providers=0)

        # Then: it is the same chain, and status says when it was restored, from what, and that nothing was lost
        assert again["anvil_pid"] != anvil
        assert w3.eth.block_number == head and w3.eth.get_block(head)["hash"] == head_hash
        restored = net.status().restored
        assert restored is not None and restored.at
        assert (restored.snapshot_block, restored.head, restored.replayed) == (snapshot, head, 3)
        assert (restored.reached, restored.lost, restored.diverged_at) == (head, 0, None)

        # And: the CLI says so, in text and in JSON
        text = _cli("devnet", "status", "--root", str(net.root))
        assert f"restored  {restored.at}: anvil had died; chain restored to block {head} " in text
        assert f"(snapshot at block {snapshot} + 3 journaled blocks replayed); it had reached block {head}" in text
        assert "anvil up  journal up" in text
        data = json.loads(_cli("devnet", "status", "--root", str(net.root), "--json"))
        assert data["restored"] == {
            "at": restored.at, "snapshot_block": snapshot, "head": head, "replayed": 3, "reached": head, "lost": 0,
            "diverged_at": None,
        }  # fmt: skip
        assert data["journal_alive"] is True

        # When: up again while anvil runs; Then: the report stays
        assert net.up(providers=0)["restored"] == again["restored"]
        assert net.status().restored == restored

        # When: a clean down, then up; Then: nothing to report, and still the same chain
        assert set(net.down()) == {"chain-journal", "anvil"}
        assert net.status().restored is None
        assert net.up(providers=0)["restored"] is None
        assert net.status().restored is None
        assert w3.eth.get_block(head)["hash"] == head_hash
    finally:
        net.down()


@pytest.mark.timeout(60)
def test_a_restore_replays_the_journal_to_the_same_hashes_and_stops_where_the_chain_changed_outside_it(
    tmp_path: Path,
) -> None:
    # Given: an anvil and its journal, three transfers, a balance set behind the journal's back, two more transfers
    snapshot, journal = tmp_path / "chain.json", tmp_path / "chain.journal"
    node = Anvil(load_state=snapshot)
    node.start()
    stop = threading.Event()
    keeper = threading.Thread(
        target=ChainJournal(url=node.url, snapshot=snapshot, journal=journal, anvil_pid=node.pid).run, args=(stop,)
    )
    try:
        keeper.start()
        w3 = node.web3()
        sender, receiver, bystander = list(w3.eth.accounts)[1:4]
        deadline = time.monotonic() + 30
        while Journal.read(journal).snapshot_block is None:
            assert time.monotonic() < deadline, "the journal took no snapshot"
            time.sleep(0.01)
        for _ in range(3):
            _transfer(w3, sender, receiver)
        # Blocks 1-3: anvil makes up a new genesis header (block 0, its timestamp "now") when it loads
        # a state file, so block 0's hash changes with the second a node starts, restored or not.
        hashes = [w3.eth.get_block(n)["hash"].to_0x_hex() for n in range(1, 4)]
        w3.provider.make_request("anvil_setBalance", [bystander, hex(10**18)])  # type: ignore[arg-type]
        for _ in range(2):
            _transfer(w3, sender, receiver)
        _wait_journaled(journal, 5)

        # When: anvil is killed -9, the last line of the journal is torn, and the chain is restored
        node.kill()
        keeper.join(10)
        with open(journal, "ab") as out:
            out.write(b'{"head": 6}\n{"block": 6, "hash": "0x')
        restored = restore_chain(snapshot=snapshot, journal=journal)
    finally:
        stop.set()
        node.kill()
        keeper.join(10)

    # Then: the three transfers are back with their hashes; the block after the balance change did not replay
    assert (restored.snapshot_block, restored.head, restored.replayed) == (0, 3, 3)
    assert (restored.reached, restored.lost, restored.diverged_at) == (6, 3, 4)
    again = Anvil(load_state=snapshot)
    with again:
        assert [again.web3().eth.get_block(n)["hash"].to_0x_hex() for n in range(1, 4)] == hashes
        assert again.web3().eth.block_number == 3
    # And: the journal now continues the restored snapshot, and still knows how far the chain had got
    after = Journal.read(journal)
    assert (after.snapshot_block, after.snapshot_hash, after.blocks, after.reached) == (3, hashes[2], (), 6)
    assert after.pending and (tmp_path / "chain.journal.restored").exists()
