"""The devnet: real anvil and real provider daemons, started and stopped as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    assert all(p.registered and p.stake_free == 10**18 and p.capabilities == ("wasm",) for p in status.providers)

    # When: up again; Then: nothing is restarted
    again = devnet.up(providers=2, bad={1: "lazy"})
    assert [p["pid"] for p in again["providers"]] == pids
    assert again["anvil_pid"] == record["anvil_pid"]

    # When: down; Then: no process is left
    head = status.head
    assert head is not None and head > 0
    stopped = devnet.down()
    assert set(stopped) == {"node-0", "node-1", "anvil"}
    assert not any(_running(pid) for pid in [*pids, record["anvil_pid"]])
    assert not list(devnet.root.glob("*.pid"))

    # When: up again; Then: the chain was loaded from its state file (same contract, same height)
    restarted = devnet.up(providers=2, bad={1: "lazy"})
    assert restarted["contract"] == record["contract"]
    after = devnet.status()
    assert after.head is not None and after.head >= head
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
