"""The chainsched client commands end to end on a real devnet (anvil + provider daemon processes).

Each command is run with ``--json`` and its one JSON document parsed and checked;
bad input must give the documented exit code and one ``error:`` line, and a
private key must never be printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from chain_scheduler._anvil import free_port
from chain_scheduler._devnet import Devnet
from chain_scheduler._keys import devnet_key
from chain_scheduler.cli import ExitCode, app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def examples() -> dict[str, Path]:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_examples.py")], check=True, capture_output=True)
    build = ROOT / "examples" / "wasm" / "build"
    return {name: build / f"{name}.wasm" for name in ("noop", "wordcount")}


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet(root=tmp_path_factory.mktemp("cli") / "devnet", port=0, poll_interval=0.1, stop_timeout=20)
    try:
        net.up(providers=3)
        yield net
    finally:
        net.down()


#: A failure result's floor, in units, that pays for a replica's gas on the devnet.
FLOOR = 10**15


def cli(devnet: Devnet, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [*args], env={"CHAINSCHED_DEVNET": str(devnet.root), **(env or {})})


def ok_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing text
    return data


@pytest.mark.timeout(180)
def test_submit_follow_receipt_result_logs_and_list(devnet: Devnet, examples: dict[str, Path], tmp_path: Path) -> None:
    # Given: a text input directory
    inputs = tmp_path / "texts"
    inputs.mkdir()
    (inputs / "a.txt").write_text("one two three\nfour\n")

    # When: a k=3 m=2 job is submitted and followed to the end
    out = tmp_path / "out"
    submitted = cli(
        devnet, "job", "submit", "--module", str(examples["wordcount"]), "-i", f"text={inputs}",
        "-k", "3", "-m", "2", "--max-price", "5", "--challenge-window", "1", "--out", str(out), "--json",
    )  # fmt: skip
    data = ok_json(submitted)

    # Then: progress went to stderr, phase by phase, and the result and the price to stdout
    for phase in ("posted", "bids", "committed", "revealed", "verified", "finalized"):
        assert phase in submitted.stderr
    assert data["status"] == "finalized" and data["providers"] == 3 and data["slashed"] == 0
    assert (out / "outputs" / "wc.txt").read_text().splitlines()[-1].split() == ["2", "4", "19", "total"]
    job_id = data["job_id"]

    # And: the receipt shows price x units = amount for each provider, and the money adds up
    receipt = ok_json(cli(devnet, "job", "receipt", str(job_id), "--json"))
    assert receipt["result_cid"] == data["result_cid"]
    assert len(receipt["providers"]) == 3
    for p in receipt["providers"]:
        assert p["amount"] == p["price"] * p["units"] and p["checks"] is True
        assert p["units"] == receipt["consensus"]["usage"] > 0
    assert receipt["paid"] == sum(p["amount"] for p in receipt["providers"]) == data["paid"]
    assert receipt["paid"] + receipt["refund"] == receipt["escrow"]

    # And: result, logs, status and list agree
    fetched = ok_json(cli(devnet, "job", "result", str(job_id), "--out", str(tmp_path / "again"), "--json"))
    assert fetched["result_cid"] == data["result_cid"] and "wc.txt" in fetched["files"]
    logs = ok_json(cli(devnet, "job", "logs", str(job_id), "--json"))
    assert logs["stdout"].split() == ["2", "4", "19", "total"]
    status = ok_json(cli(devnet, "job", "status", str(job_id), "--json"))
    assert status["status"] == "finalized" and status["committed"] == 3 and status["spec_cid"] == data["spec_cid"]
    listed = ok_json(cli(devnet, "job", "list", "--state", "finalized", "--owner", "me", "--json"))
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    other = ok_json(cli(devnet, "job", "list", "--owner", devnet_key(7).address, "--json"))
    assert other["jobs"] == []


@pytest.mark.timeout(120)
def test_cancel_an_open_job_and_withdraw_the_refund(devnet: Devnet, examples: dict[str, Path]) -> None:
    # Given: a job no provider can take (it needs a GPU), posted without waiting
    posted = ok_json(
        cli(devnet, "job", "submit", "--module", str(examples["noop"]), "--require", "gpu", "--no-wait", "--json")
    )
    job_id = posted["job_id"]
    assert posted["status"] == "open" and posted["escrow"] > 0

    # When: another account cancels it; Then: reverted, exit 4, naming the error and what to do
    foreign = cli(devnet, "job", "cancel", str(job_id), "--account", "8")
    assert foreign.exit_code == ExitCode.REVERTED
    assert "NotClient" in foreign.stderr and "--account" in foreign.stderr

    # When: its client cancels it; Then: the escrow is credited, and withdrawing moves it to the wallet
    before = ok_json(cli(devnet, "account", "balance", "--json"))
    cancelled = ok_json(cli(devnet, "job", "cancel", str(job_id), "--json"))
    assert cancelled["refund"] == posted["escrow"]
    assert cancelled["credit"] == before["credit"] + posted["escrow"]
    ready = ok_json(cli(devnet, "account", "balance", "--json"))
    withdrawn = ok_json(cli(devnet, "account", "withdraw", "--json"))
    assert withdrawn["withdrawn"] == cancelled["credit"]
    after = ok_json(cli(devnet, "account", "balance", "--json"))
    assert after["credit"] == 0 and after["balance"] == withdrawn["balance"]
    gained = after["balance"] - ready["balance"]
    assert cancelled["credit"] - 10**16 < gained < cancelled["credit"]  # the credit, less the withdraw's gas fee

    # And: cancelling again is a revert with the job's status in the message
    again = cli(devnet, "job", "cancel", str(job_id))
    assert again.exit_code == ExitCode.REVERTED and "Cancelled" in again.stderr


@pytest.mark.timeout(120)
def test_a_new_provider_registers_runs_and_withdraws(devnet: Devnet, examples: dict[str, Path], tmp_path: Path) -> None:
    # Given: devnet account 9 registers as a provider from the client CLI
    registered = ok_json(cli(devnet, "provider", "register", "--account", "9", "--stake", "0.5ether", "--json"))
    assert registered["registered"] and registered["stake_free"] == 5 * 10**17
    assert registered["capabilities"] == ["wasm", "verifier"]  # the default joins the verifier pool

    # When: it runs its daemon through `chainsched provider run` and a job needs all four providers
    daemon = subprocess.Popen(
        [sys.executable, "-m", "chain_scheduler.cli", "provider", "run", "--account", "9",
         "--state", str(tmp_path / "state"), "--poll-interval", "0.1"],
        env={**os.environ, "CHAINSCHED_DEVNET": str(devnet.root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job = ok_json(
            cli(devnet, "job", "submit", "--module", str(examples["noop"]), "-k", "4", "-m", "3",
                "--challenge-window", "0", "--timeout", "60", "--out", str(tmp_path / "out"), "--json")
        )  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err[-2000:]

    # Then: it was paid, and `provider status` and `provider withdraw` show it
    assert job["status"] == "finalized" and job["providers"] == 4
    status = ok_json(cli(devnet, "provider", "status", "--account", "9", "--json"))
    assert status["succeeded"] == 1 and status["credit"] > 0
    public = ok_json(cli(devnet, "provider", "status", status["provider"], "--json"))
    assert public["succeeded"] == 1
    withdrawn = ok_json(cli(devnet, "provider", "withdraw", "--account", "9", "--json"))
    assert withdrawn["withdrawn"] == status["credit"]
    assert ok_json(cli(devnet, "provider", "status", "--account", "9", "--json"))["credit"] == 0


def test_bad_input_gets_the_documented_exit_codes(devnet: Devnet, examples: dict[str, Path], tmp_path: Path) -> None:
    # A spec that does not validate: 6
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text('{"version": 1, "executor": "python"}')
    result = cli(devnet, "job", "submit", "--spec", str(bad_spec))
    assert result.exit_code == ExitCode.INVALID_SPEC and result.stderr.startswith("error: ")
    assert "executor" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    # A valid spec naming content the store does not hold: 6, and nothing posted
    missing = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    bad_spec.write_text(json.dumps({"version": 1, "executor": "wasm", "artifact": missing}))
    before = ok_json(cli(devnet, "job", "list", "--json"))["jobs"]
    result = cli(devnet, "job", "submit", "--spec", str(bad_spec))
    assert result.exit_code == ExitCode.INVALID_SPEC and missing in result.stderr
    assert ok_json(cli(devnet, "job", "list", "--json"))["jobs"] == before

    # A program no provider can run (the issue's `--module README.md`): 6, and nothing posted
    result = cli(devnet, "job", "submit", "--module", str(ROOT / "README.md"))
    assert result.exit_code == ExitCode.INVALID_SPEC and "not a Wasm module" in result.stderr
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert ok_json(cli(devnet, "job", "list", "--json"))["jobs"] == before

    # Terms the contract refuses: 4, naming the contract error
    result = cli(devnet, "job", "submit", "--module", str(examples["noop"]), "-k", "2", "-m", "3")
    assert result.exit_code == ExitCode.REVERTED and "BadReplication" in result.stderr

    # An unknown job: 5
    result = cli(devnet, "job", "status", "999999")
    assert result.exit_code == ExitCode.UNKNOWN_JOB and "999999" in result.stderr

    # An unreachable node: 3
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli(devnet, "job", "list", "--rpc", dead)
    assert result.exit_code == ExitCode.CHAIN_UNAVAILABLE and dead in result.stderr

    # An output directory that exists: refused before anything is posted
    taken = tmp_path / "taken"
    taken.mkdir()
    result = cli(devnet, "job", "submit", "--module", str(examples["noop"]), "--out", str(taken))
    assert result.exit_code == ExitCode.USAGE and "nothing was posted" in result.stderr
    assert ok_json(cli(devnet, "job", "list", "--json"))["jobs"] == before

    # Usage: two key sources, a missing module file, a bad --input
    result = cli(devnet, "account", "balance", "--account", "1", "--key-env", "NOPE")
    assert result.exit_code == ExitCode.USAGE and "exactly one" in result.stderr
    result = cli(devnet, "job", "submit", "--module", str(tmp_path / "none.wasm"))
    assert result.exit_code == ExitCode.USAGE
    result = cli(devnet, "job", "submit", "--module", str(examples["noop"]), "-i", "nonsense")
    assert result.exit_code == ExitCode.USAGE and "NAME=VALUE" in result.stderr


def test_keys_from_a_file_or_the_environment_are_never_printed(devnet: Devnet, tmp_path: Path) -> None:
    # Given: devnet account 5's key in a file and in an environment variable
    key = devnet_key(5)
    secret = key.key.hex()
    key_file = tmp_path / "key"
    key_file.write_text("0x" + secret + "\n")

    # When / Then: both sign as that account, and no output holds the key
    by_file = cli(devnet, "account", "balance", "--key-file", str(key_file), "--json")
    by_env = cli(devnet, "account", "balance", "--key-env", "MY_KEY", "--json", env={"MY_KEY": secret})
    assert ok_json(by_file)["address"] == ok_json(by_env)["address"] == key.address
    for result in (by_file, by_env):
        assert secret not in result.output

    # And: a broken key is refused with a message that does not echo it
    key_file.write_text("0x1234nothex")
    result = cli(devnet, "account", "balance", "--key-file", str(key_file))
    assert result.exit_code == ExitCode.USAGE and "1234nothex" not in result.output
    assert "not a valid private key" in result.stderr

    # And: anyone's balance can be read without a key
    data = ok_json(cli(devnet, "account", "balance", devnet_key(2).address, "--json"))
    assert data["address"] == devnet_key(2).address and data["balance"] > 0


@pytest.mark.timeout(180)
def test_a_forced_job_that_cannot_run_ends_in_one_failure_result_and_nobody_is_slashed(
    devnet: Devnet, tmp_path: Path
) -> None:
    """Issue 9 on a devnet: the README posted as a module, k=3 m=2, forced past the client's checks.

    The daemons' pre-bid check says every replica will fail the same way; they bid, commit the same
    failure result, and are paid the job's floor. Before, each missed its commit and was slashed.
    """
    # When: it is forced onto the market with a floor that pays for the replicas' gas (10^15 units
    # at 1 wei or more: over 200,000 gas at up to 5 gwei; the daemons decline a floor that does not)
    submitted = cli(
        devnet, "job", "submit", "--module", str(ROOT / "README.md"), "--force", "--min-units", str(FLOOR),
        "--max-units", str(FLOOR),
        "-k", "3", "-m", "2", "--challenge-window", "0", "--timeout", "120", "--out", str(tmp_path / "out"), "--json",
    )  # fmt: skip

    # Then: it settles on a failure result, which the command reports with exit 1 after its one document
    assert submitted.exit_code == ExitCode.FAILURE, submitted.output
    data = json.loads(submitted.stdout)
    assert data["status"] == "finalized" and data["failure"] == "artifact_invalid"
    assert data["error"].startswith("the artifact is not a Wasm module")
    assert data["slashed"] == 0 and data["providers"] == 3
    assert f"job {data['job_id']} could not run: artifact_invalid" in submitted.stderr
    receipt = ok_json(cli(devnet, "job", "receipt", str(data["job_id"]), "--json"))
    assert receipt["consensus"]["reason"] == "artifact_invalid"
    assert {p["units"] for p in receipt["providers"]} == {FLOOR}
    assert all(p["checks"] for p in receipt["providers"])
