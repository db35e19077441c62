"""The chainsched contract/job commands against a real anvil node: JSON out, documented exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from chain_scheduler import JobTerms, Market
from chain_scheduler._anvil import Anvil, free_port
from chain_scheduler.cli import ExitCode, app

runner = CliRunner()
SPEC = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    with Anvil() as anvil:
        yield anvil


def test_deploy_then_status_of_a_posted_and_an_unknown_job(node: Anvil) -> None:
    deployed = runner.invoke(app, ["contract", "deploy", "--rpc", node.url, "--json"])
    assert deployed.exit_code == 0, deployed.output
    address = json.loads(deployed.stdout)["address"]

    w3 = node.web3()
    client = Market(w3=w3, address=address, account=w3.eth.accounts[1])
    terms = JobTerms.create(client=client.account, spec_cid=SPEC, max_price=1, max_units=10, collateral=0)
    job_id = client.post_job(SPEC, terms)

    status = runner.invoke(app, ["job", "status", str(job_id), "--rpc", node.url, "--contract", address, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout) | {"deadline": 0} == {
        "job_id": job_id, "status": "open", "round": "main", "filled": 0, "committed": 0, "revealed": 0,
        "deadline": 0, "winner": None, "spec_cid": SPEC,
    }  # fmt: skip

    unknown = runner.invoke(app, ["job", "status", "99", "--rpc", node.url, "--contract", address, "--json"])
    assert unknown.exit_code == ExitCode.UNKNOWN_JOB
    assert "Job 99 does not exist" in unknown.output


def test_an_unreachable_node_is_one_line_and_its_exit_code() -> None:
    rpc = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["job", "status", "1", "--rpc", rpc, "--contract", "0x" + "11" * 20])
    assert result.exit_code == ExitCode.CHAIN_UNAVAILABLE
    assert f"cannot reach the chain node at {rpc}" in result.output
    assert "Traceback" not in result.output


def test_capability_names_and_bits_round_trip_and_unknown_names_are_refused() -> None:
    from chain_scheduler._model import capability_bits, capability_names

    assert capability_bits(["wasm", "docker, gpu"]) == 7
    assert capability_names(capability_bits(["gpu,wasm"])) == ("wasm", "gpu")
    with pytest.raises(ValueError, match="unknown capability 'tpu': use wasm, docker, gpu"):
        capability_bits(["wasm,tpu"])
    result = runner.invoke(app, ["provider", "register", "-c", "tpu", "--rpc", "http://127.0.0.1:1"])
    assert result.exit_code == ExitCode.USAGE and "unknown capability 'tpu'" in result.stderr
