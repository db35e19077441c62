"""The chainsched contract/job commands against a real anvil node: JSON out, documented exit codes."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chain_scheduler import (
    Capability,
    JobStatus,
    JobTerms,
    Market,
    commitment,
    delivery_key,
    errors,
    public_key_hex,
    resolve_parent_result,
    seal,
)
from chain_scheduler._anvil import Anvil, advance_time, free_port
from chain_scheduler._keys import devnet_key
from chain_scheduler.cli import ExitCode, app
from compute_node import JobRunner, WasmExecutor
from compute_node._runner import FailureReason, Verdict
from storage import open_store
from storage._car import write_car
from storage._cid import DAG_PB, RAW, Cid, encode_varint
from storage._unixfs import PBLink, encode_directory

runner = CliRunner()
SPEC = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
ROOT = Path(__file__).resolve().parents[2]
NOOP = ROOT / "examples" / "wasm" / "build" / "noop.wasm"


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


def test_a_malformed_or_undeployed_contract_address_is_one_line_and_exit_2(node: Anvil) -> None:
    # A newcomer's typo in --contract, or the address of a devnet since started afresh: one
    # error line and the usage exit code, not a web3 traceback.
    cases = (("0x1234", "--contract '0x1234' is not an address"), ("0x" + "22" * 20, "no contract at 0x" + "22" * 20))
    for contract, said in cases:
        for command in (["job", "status", "1"], ["account", "balance"]):
            result = runner.invoke(app, [*command, "--rpc", node.url, "--contract", contract])
            assert result.exit_code == ExitCode.USAGE, result.output
            assert said in result.output
            assert isinstance(result.exception, SystemExit), result.exception  # no traceback


def test_both_command_lines_print_their_version() -> None:
    from compute_node.cli import app as node_app

    version = importlib.metadata.version("chain-scheduler")
    for cli, name in ((app, "chainsched"), (node_app, "compute-node")):
        result = runner.invoke(cli, ["--version"])
        assert (result.exit_code, result.stdout) == (0, f"{name} {version}\n")


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


# ------------------------------------------------------------- jobs that cannot run


@pytest.fixture(scope="module")
def market(node: Anvil) -> Market:
    w3 = node.web3()
    return Market.deploy(w3=w3, account=w3.eth.accounts[0], unbonding_delay=60)


@pytest.fixture(scope="module")
def noop_module() -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"], check=True)
    return NOOP


def job_cli(node: Anvil, market: Market, store: Path, *args: str) -> Result:
    """A ``chainsched job`` command on this chain and store, signed by the devnet client (account 1)."""
    where = ["--rpc", node.url, "--contract", market.address, "--devnet", str(store.parent / "no-devnet")]
    if args[0] == "submit":
        where += ["--store", f"local:{store}"]
    return runner.invoke(app, ["job", *args, *where])


def posted_jobs(market: Market) -> int:
    return market.job_count()


def unsafe_tree_in(store: Path) -> str:
    """A tree with a symlink leaving it (the importer never makes one: only a CAR can carry it)."""
    file = Cid.of_block(RAW, b"fine")
    target = b"../../etc/passwd"
    unixfs = b"\x08\x04\x12" + encode_varint(len(target)) + target
    link = Cid.of_block(DAG_PB, b"\x0a" + encode_varint(len(unixfs)) + unixfs)
    blocks = {file: b"fine", link: b"\x0a" + encode_varint(len(unixfs)) + unixfs}
    root_block = encode_directory([PBLink(file, b"ok.txt", 4), PBLink(link, b"leak", len(blocks[link]))])
    root = Cid.of_block(DAG_PB, root_block)
    blocks[root] = root_block
    car = io.BytesIO()
    write_car(car, [root], blocks.items())
    car.seek(0)
    with open_store(f"local:{store}") as s:
        s.import_car(car)
    return root.text()


def test_submit_refuses_a_job_every_provider_would_fail_before_any_wei_is_locked(
    node: Anvil, market: Market, noop_module: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    before = posted_jobs(market)

    # The job: a README posted as the module
    readme = job_cli(node, market, store, "submit", "--module", str(ROOT / "README.md"), "--no-wait")
    assert readme.exit_code == ExitCode.INVALID_SPEC, readme.output
    assert "README.md: it is not a Wasm module" in readme.stderr
    assert "nothing was posted; --force posts it anyway" in readme.stderr
    assert len(readme.stderr.strip().splitlines()) == 1

    # A Wasm time limit whose fuel budget does not fit half of a 10 s commit window
    tight = job_cli(node, market, store, "submit", "--module", str(noop_module), "--time-limit", "30",
                    "--exec-timeout", "10", "--max-units", "100000000000", "--no-wait")  # fmt: skip
    assert tight.exit_code == ExitCode.INVALID_SPEC, tight.output
    assert "more than half of exec_timeout=10 s" in tight.stderr and "--force" in tight.stderr

    # An input tree that cannot be unpacked safely, named by a spec
    with open_store(f"local:{store}") as s:
        module_cid = str(s.put_file(noop_module))
    spec = {"version": 1, "executor": "wasm", "artifact": module_cid,
            "inputs": [{"cid": unsafe_tree_in(store), "path": "text"}]}  # fmt: skip
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    unsafe = job_cli(node, market, store, "submit", "--spec", str(spec_file), "--no-wait")
    assert unsafe.exit_code == ExitCode.INVALID_SPEC, unsafe.output
    assert "Input 'text'" in unsafe.stderr and "cannot be unpacked safely" in unsafe.stderr and "leak" in unsafe.stderr

    # A min units over max units is a usage error
    floor = job_cli(node, market, store, "submit", "--module", str(noop_module), "--min-units", "11",
                    "--max-units", "10", "--no-wait")  # fmt: skip
    assert floor.exit_code == ExitCode.USAGE and "min_units=11" in floor.stderr

    # Nothing of it was posted
    assert posted_jobs(market) == before

    # And --force posts the unsafe one anyway: the providers will agree on a failure result
    forced = job_cli(node, market, store, "submit", "--spec", str(spec_file), "--no-wait", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["status"] == "open"
    assert posted_jobs(market) == before + 1


def test_a_forced_failing_job_is_a_failure_result_paid_its_floor_and_the_receipt_says_why(
    node: Anvil, market: Market, tmp_path: Path
) -> None:
    # Given: the README posted as a module anyway, with a floor of 1000 units per paid replica
    store = tmp_path / "store"
    readme = str(ROOT / "README.md")
    posted = job_cli(node, market, store, "submit", "--module", readme, "--force", "--min-units", "1000",
                     "--max-price", "7", "--challenge-window", "0", "--no-wait", "--json")  # fmt: skip
    assert posted.exit_code == 0, posted.output
    job_id = json.loads(posted.stdout)["job_id"]
    terms = market.terms_of(job_id)
    assert terms.min_units == 1000

    # When: a provider checks it before bidding, bids, runs it and commits and reveals its result
    provider = market.with_account(devnet_key(2).address)
    provider.register(Capability.WASM, 10**18)
    spec_cid = str(market.job_posted(job_id).args["specCid"])
    with open_store(f"local:{store}") as content, WasmExecutor() as wasm:
        job_runner = JobRunner(store=content, executors={"wasm": wasm}, work_dir=tmp_path / "work")
        check = job_runner.precheck(terms=terms, spec_cid=spec_cid)
        seed = bytes(provider.bid(job_id, 5, terms).event("BiddingClosed").args["seed"])
        outcome = job_runner.run(job_id=job_id, terms=terms, spec_cid=spec_cid, seed=seed, price=5)
    assert check.verdict is Verdict.FAIL and check.failure is FailureReason.ARTIFACT_INVALID
    assert outcome.result_cid is not None and outcome.failure is FailureReason.ARTIFACT_INVALID
    salt = b"\x07" * 32
    provider.commit(job_id, 0, commitment(job_id, provider.account, outcome.result_cid, outcome.usage, salt), terms)
    provider.reveal(job_id, 0, outcome.result_cid, outcome.usage, salt, terms)
    assert market.job(job_id).status == JobStatus.FINALIZED

    # Then: the receipt names the reason, the provider was paid price x the floor, and nobody was slashed
    shown = job_cli(node, market, store, "receipt", str(job_id), "--store", f"local:{store}")
    assert shown.exit_code == 0, shown.output
    assert "failure result: the job could not run (artifact_invalid): the artifact is not a Wasm module" in shown.stdout
    data = json.loads(
        job_cli(node, market, store, "receipt", str(job_id), "--store", f"local:{store}", "--json").stdout
    )
    assert data["consensus"]["reason"] == "artifact_invalid" and data["consensus"]["usage"] == 0
    assert [(p["units"], p["amount"]) for p in data["providers"]] == [(1000, 5 * 1000)]
    assert data["slashed"] == []


def test_job_timeout_moves_an_expired_open_job_and_says_when_nothing_expired(
    node: Anvil, market: Market, tmp_path: Path
) -> None:
    # Given: an Open job nobody takes, with a 30 s fill timeout
    client = market.with_account(devnet_key(1).address)
    terms = JobTerms.create(client=client.account, spec_cid=SPEC, max_price=1, max_units=10, collateral=0,
                            fill_timeout=30)  # fmt: skip
    job_id = client.post_job(SPEC, terms)
    store = tmp_path / "store"

    # When: it is timed out before its deadline, Then: nothing is sent, and the message says when
    early = job_cli(node, market, store, "timeout", str(job_id))
    assert early.exit_code == ExitCode.REVERTED, early.output
    assert f"job {job_id} is Open and its deadline is" in early.stderr and "nothing has expired yet" in early.stderr
    assert market.job(job_id).status == JobStatus.OPEN

    # When: its fill timeout has passed, Then: anyone moves it on (it fails with a refund)
    advance_time(node.web3(), 31)
    moved = job_cli(node, market, store, "timeout", str(job_id), "--account", "5", "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout) | {"deadline": 0} == {
        "job_id": job_id, "before": "open", "status": "failed", "round": "main", "deadline": 0,
    }  # fmt: skip

    # And a job with no phase left is refused with its status
    again = job_cli(node, market, store, "timeout", str(job_id))
    assert again.exit_code == ExitCode.REVERTED and "is Failed: it has no phase left to move" in again.stderr


def sealed_job(market: Market, *, challenge_window: int, envelope_to: int) -> tuple[int, JobTerms, str]:
    """A job of devnet account 1 with a verifier, whose only result devnet account 6 revealed
    sealed with an envelope for devnet account ``envelope_to``: (job id, terms, result CID)."""
    client = market.with_account(devnet_key(1).address)
    terms = JobTerms.create(client=client.account, spec_cid=SPEC, max_price=1, max_units=10, collateral=10**15,
                            verifiers=1, challenge_window=challenge_window)  # fmt: skip
    job_id = client.post_job(SPEC, terms)
    provider = market.with_account(devnet_key(6).address)
    if not provider.provider(provider.account).registered:
        provider.register(Capability.WASM, 10**18)
    provider.bid(job_id, 1, terms)
    cid, salt = f"bafkreiresultsealedforjob{job_id}", b"\x09" * 32
    provider.commit(job_id, 0, commitment(job_id, provider.account, cid, 5, salt), terms)
    envelope = seal(cid, public_key_hex(delivery_key(devnet_key(envelope_to).key)), job_id=job_id)
    provider.reveal(job_id, 0, cid, 5, salt, terms, envelope=envelope)
    return job_id, terms, cid


@pytest.mark.parametrize("opens", [True, False])
def test_job_challenge_is_unread_when_the_envelope_does_not_open(
    node: Anvil, market: Market, tmp_path: Path, opens: bool
) -> None:
    # Given: a job with a verifier whose result was revealed sealed, with an envelope for the
    # client or for some other key (the client cannot tell a garbage envelope from that)
    job_id, _terms, _cid = sealed_job(market, challenge_window=300, envelope_to=1 if opens else 5)

    # When: the client challenges
    result = job_cli(node, market, tmp_path / "store", "challenge", str(job_id), "--json")

    # Then: the challenge is unread exactly when its envelope did not open (its bond comes back
    # even if the result stands)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unread"] is (not opens)
    [challenged] = market.events(names=("JobChallenged",), job_id=job_id)
    assert challenged.args["unread"] is (not opens)


def test_job_publish_puts_the_sealed_result_the_client_opened_on_chain(
    node: Anvil, market: Market, tmp_path: Path
) -> None:
    # Given: a job with a verifier, whose only result was revealed sealed with an envelope for the client
    job_id, terms, cid = sealed_job(market, challenge_window=30, envelope_to=1)
    store = tmp_path / "store"

    # When: it is published during its challenge window (a drawn verifier could copy it),
    # Then: refused, and nothing is on chain
    early = job_cli(node, market, store, "publish", str(job_id))
    assert early.exit_code == ExitCode.REVERTED, early.output
    assert "DeadlineNotReached" in early.stderr
    # And another account has no key to the envelope
    stranger = job_cli(node, market, store, "publish", str(job_id), "--account", "5")
    assert stranger.exit_code == ExitCode.FAILURE, stranger.output
    assert "no envelope opens with this client's delivery key" in stranger.stderr

    # When: the window is over, Then: nobody is paid before the CID is on chain; the client
    # publishes the CID it opened, which settles the job, and child jobs can read it
    advance_time(node.web3(), 31)
    with pytest.raises(errors.DeadlineNotReached):
        market.finalize(job_id, terms)
    published = job_cli(node, market, store, "publish", str(job_id), "--json")
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout) == {"job_id": job_id, "result_cid": cid}
    assert market.job(job_id).status == JobStatus.FINALIZED
    assert resolve_parent_result(market, job_id) == cid
