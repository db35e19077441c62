"""Workflows: YAML validation without a chain, then real runs on a devnet (anvil + 3 provider daemons).

The end-to-end tests share one devnet (module scope): the map/reduce example
from Python and from ``chainsched workflow run --json``, the genetic-algorithm
example from YAML and from its Python script, and a stage that cannot be
filled, which fails the run and cancels what waited on it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chain_scheduler import (
    Client,
    FailReason,
    FromStage,
    JobOptions,
    JobStatus,
    Repeat,
    Stage,
    Until,
    Workflow,
    WorkflowEvent,
    errors,
    result_hash,
)
from chain_scheduler._devnet import Devnet
from chain_scheduler._workflow import render
from chain_scheduler.cli._common import ExitCode
from chain_scheduler.cli._workflow import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "workflows"
CORPUS = ROOT / "examples" / "mapreduce" / "corpus"
QUICK = {"k": 1, "m": 1}  # one replica per job keeps the runs short; k/m are the contract's business

runner = CliRunner()


# ----------------------------------------------------------------------------- validation (no chain)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory with a fake module and two text parts, for workflows that must find their files."""
    (tmp_path / "prog.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "parts").mkdir()
    for name in ("b.txt", "a.txt"):
        (tmp_path / "parts" / name).write_text("some words\n")
    return tmp_path


def _yaml(files: Path, text: str) -> Path:
    path = files / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


HEAD = """\
name: t
defaults: {max_price: 5, max_units: 1000, collateral: 0.001ether}
stages:
"""


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        (
            "  - {name: map, module: prog.wasm, foreach: parts/*.txt, inputs: {text: '{item}'}}\n"
            "  - {name: reduce, module: prog.wasm, inputs: {maps: {stage: mapp}}}\n",
            "stage 'reduce': inputs.maps: no stage 'mapp' before this one",
        ),
        (
            "  - {name: reduce, module: prog.wasm, inputs: {maps: {stage: map}}}\n  - {name: map, module: prog.wasm}\n",
            "stage 'reduce': inputs.maps: no stage 'map' before this one",
        ),
        ("  - {name: a, module: prog.wasm, image: prog.wasm}\n", "stage 'a': module: give exactly one of"),
        ("  - {name: a, modul: prog.wasm}\n", "stage 'a': modul: is not a known field"),
        ("  - {name: a, module: prog.wasm, args: ['{index}']}\n", "stage 'a': args[0]: {index} needs a 'foreach'"),
        ("  - {name: a, module: prog.wasm, args: ['{itme}']}\n", "stage 'a': args[0]: unknown placeholder {itme}"),
        ("  - {name: a, module: prog.wasm, inputs: {p: {stage: self}}}\n", "stage 'a': inputs.p: {stage: self}"),
        ("  - {name: a, module: prog.wasm, foreach: 'nothing/*.txt'}\n", "stage 'a': foreach: 'nothing/*.txt' matches"),
        ("  - {name: a, module: missing.wasm}\n", "stage 'a': module: "),
        ("  - {name: a, module: prog.wasm, inputs: {t: nope.txt}}\n", "stage 'a': inputs.t: "),
        ("  - {name: a, module: prog.wasm, k: 3, m: 1}\n", "stage 'a': m: m=1 with k=3"),
        ("  - {name: a, module: prog.wasm, collateral: lots}\n", "stage 'a': collateral: 'lots' is not an amount"),
        (
            "  - {name: a, module: prog.wasm, inputs: {p: {stage: self}}, "
            "repeat: {max: 3, until: {file: b.json, key: v, below: 1, above: 2}}}\n",
            "stage 'a': repeat.until: give exactly one of 'below' or 'above'",
        ),
        ("  - {name: a, module: prog.wasm, repeat: {max: 0}}\n", "stage 'a': repeat.max: "),
        ("  - {name: a, module: prog.wasm, after: [a]}\n", "stage 'a': after: a stage cannot name itself"),
        (
            "  - {name: a, module: prog.wasm, foreach: parts/*.txt}\n"
            "  - {name: b, module: prog.wasm, inputs: {x: {stage: a}, x-1: parts/a.txt}}\n",
            "stage 'b': inputs: two inputs would both be named 'x-1'",
        ),
        ("  - {name: a, module: prog.wasm, inputs: {.hidden: parts/a.txt}}\n", "stage 'a': inputs: input name"),
        ("  - {name: a, module: prog.wasm}\n  - {name: a, module: prog.wasm}\n", "stage 'a': name: another stage"),
        ("  - {name: a, module: prog.wasm, env: {1X: v}}\n", "stage 'a': job spec: env.1X"),
        ("  - name: a\n    module: prog.wasm\n    module: prog.wasm\n", "found duplicate key 'module'"),
        ("  - {name: a, module: prog.wasm\n", "not valid YAML: expected ',' or '}'"),
    ],
)
def test_invalid_workflows_name_the_stage_and_the_field(files: Path, stages: str, expected: str) -> None:
    # Given: a workflow file with one mistake
    path = _yaml(files, HEAD + stages)

    # When / Then: loading it says where the mistake is
    with pytest.raises(errors.SpecError) as caught:
        Workflow.load(path)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_a_stage_may_ask_for_a_lottery_of_independent_replicas(files: Path) -> None:
    path = _yaml(files, HEAD + "  - {name: map, module: prog.wasm, k: 3, m: 2, bid_window: 30, lottery: true}\n")
    options = Workflow.load(path).options(Workflow.load(path).stage("map"))
    assert (options.lottery, options.bid_window) == (True, 30)
    assert options.submit_kwargs()["lottery"] is True


def test_required_terms_come_from_defaults_or_the_stage(files: Path) -> None:
    path = _yaml(files, "stages:\n  - {name: a, module: prog.wasm, max_price: 5, max_units: 10}\n")
    with pytest.raises(errors.SpecError, match=r"stage 'a': collateral: is required: set it in the stage or in"):
        Workflow.load(path)


def test_a_valid_file_expands_globs_and_fans_in(files: Path) -> None:
    # Given: a map over a glob and a reduce over the map, with stage options over the defaults
    path = _yaml(
        files,
        HEAD + "  - {name: map, module: prog.wasm, foreach: parts/*.txt, inputs: {text: '{item}'}, k: 3, m: 2}\n"
        "  - {name: reduce, module: prog.wasm, args: [10], inputs: {maps: {stage: map}}}\n",
    )

    # When
    wf = Workflow.load(path)

    # Then: the items are the matches, sorted and absolute; options merge; the reduce is the leaf
    assert wf.name == "t"
    assert wf.stage("map").items == (str(files / "parts" / "a.txt"), str(files / "parts" / "b.txt"))
    assert wf.options(wf.stage("map")) == JobOptions(k=3, m=2, max_price=5, max_units=1000, collateral=10**15)
    assert wf.options(wf.stage("reduce")).k is None
    assert wf.stage("reduce").args == ("10",)
    assert wf.stage("reduce").depends_on() == ["map"]
    assert [s.name for s in wf.leaves()] == ["reduce"]

    # And: an override forces options on every stage, and is validated like the file
    quick = wf.override(k=1, m=1, collateral="1gwei")
    assert {(wf_s.options.k, wf_s.options.collateral) for wf_s in quick.stages} == {(1, 10**9)}
    with pytest.raises(errors.SpecError, match="override: kk: is not a known field"):
        wf.override(kk=1)


def test_the_examples_validate_and_the_cli_check_prints_them() -> None:
    mapreduce = Workflow.load(EXAMPLES / "mapreduce.yaml")
    assert [s.width for s in mapreduce.stages] == [len(list(CORPUS.glob("part-*.txt"))), 1]
    ga = Workflow.load(EXAMPLES / "ga_root.yaml")
    repeat = ga.stage("evolve").repeat
    assert repeat is not None and repeat.until == Until(file="best.json", key="abs_fx", below=1e-9)

    result = runner.invoke(app, ["check", str(EXAMPLES / "mapreduce.yaml"), "--set", "k=1", "--set", "m=1", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [(s["name"], s["jobs"], s["depends_on"], s["k"]) for s in plan["stages"]] == [
        ("map", 4, [], 1),
        ("reduce", 1, ["map"], 1),
    ]

    broken = runner.invoke(app, ["check", str(EXAMPLES / "mapreduce.yaml"), "--set", "m=9"])
    assert broken.exit_code == ExitCode.INVALID_SPEC
    assert "error: " in broken.stderr and "Traceback" not in broken.output


def test_python_built_workflows_are_checked_too(files: Path) -> None:
    options = JobOptions(max_price=1, max_units=10, collateral=1)
    first = Stage(name="a", module=files / "prog.wasm", foreach=2)
    with pytest.raises(errors.SpecError, match=r"stage 'b': inputs.x: index 5 is not a job of stage 'a' \(0..1\)"):
        Workflow(name="w", stages=[first, Stage(name="b", module=first.module, inputs={"x": FromStage("a", 5)})],
                 defaults=options)  # fmt: skip
    paired = Stage(name="b", module=first.module, foreach=["x", "y"], inputs={"x": FromStage("a", "{index}")})
    assert Workflow(name="w", stages=[first, paired], defaults=options).stage("b").depends_on() == ["a"]
    assert render("{{item}} {item}-{index}#{iteration}", item="p", index=1, iteration=2) == "{item} p-1#2"


# ----------------------------------------------------------------------------- on a devnet


@pytest.fixture(scope="module")
def modules() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Wasm examples failed:\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory, modules: None) -> Iterator[Devnet]:
    net = Devnet(root=tmp_path_factory.mktemp("workflow") / "devnet", poll_interval=0.2, port=0, stop_timeout=20)
    try:
        net.up(providers=3)
        yield net
    finally:
        net.down()


@pytest.fixture
def client(devnet: Devnet) -> Iterator[Client]:
    with Client.from_devnet(devnet.root) as c:
        yield c


def _word_counts() -> str:
    counts: collections.Counter[bytes] = collections.Counter()
    for part in sorted(CORPUS.glob("part-*.txt")):
        runs = re.findall(rb"[A-Za-z0-9']+", part.read_bytes().lower())
        counts.update(r for r in runs if r.strip(b"'"))
    return "".join(f"{w.decode()}\t{c}\n" for w, c in sorted(counts.items()))


@pytest.mark.timeout(120)
def test_mapreduce_from_python_counts_the_corpus_and_the_reduce_names_the_maps(client: Client, tmp_path: Path) -> None:
    # Given: the example, one replica per job, each stage posted by the client once its parents finalized
    wf = Workflow.load(EXAMPLES / "mapreduce.yaml").override(**QUICK)
    events: list[WorkflowEvent] = []

    # When
    run = wf.run(client, out=tmp_path / "out", timeout=90, poll=0.2, eager=False, on_event=events.append)

    # Then: the reduce's counts are the corpus's word counts
    reduce_job = run["reduce"].jobs[0]
    assert reduce_job.outputs == tmp_path / "out" / "reduce" / "outputs"
    assert (reduce_job.outputs / "counts.tsv").read_text() == _word_counts()
    assert len((reduce_job.outputs / "top.txt").read_text().splitlines()) == 10

    # And: on chain, the reduce job's parents are exactly the map jobs
    map_ids = [j.job_id for j in run["map"].jobs]
    assert len(map_ids) == 4
    assert client.market.terms_of(reduce_job.job_id).parents == tuple(map_ids)
    assert reduce_job.parents == tuple(map_ids)

    # And: it was posted after the maps finalized, every job is paid, the totals add up
    posted = next(i for i, e in enumerate(events) if e.kind == "posted" and e.stage == "reduce")
    finalized = [i for i, e in enumerate(events) if e.status == JobStatus.FINALIZED and e.stage == "map"]
    assert len(finalized) == 4 and max(finalized) < posted
    assert all(j.receipt.paid > 0 for s in run.stages.values() for j in s.jobs)
    assert run.paid == run["map"].paid + run["reduce"].paid
    assert run.escrow == run.paid + run.refund
    summary = json.loads((tmp_path / "out" / "workflow.json").read_text())
    assert summary["stages"]["reduce"]["jobs"][0]["result_cid"] == reduce_job.result_cid


@pytest.mark.timeout(120)
def test_a_sealed_mapreduce_publishes_each_map_result_for_the_reduce(client: Client, tmp_path: Path) -> None:
    # Given: the example with a verifier per job, so every map result is revealed sealed
    # (its hash on chain, its CID in the client's envelope), the reduce posted at once
    wf = Workflow.load(EXAMPLES / "mapreduce.yaml").override(**QUICK, verifiers=1)

    # When
    run = wf.run(client, out=tmp_path / "out", timeout=90, poll=0.2, eager=True)

    # Then: the reduce's counts are right: its providers read the map results from publications
    reduce_job = run["reduce"].jobs[0]
    assert (reduce_job.outputs / "counts.tsv").read_text() == _word_counts()
    for job in run["map"].jobs:
        market = client.market
        assert market.events(names=("ResultRevealed",), job_id=job.job_id) == []
        [sealed] = market.events(names=("ResultSealed",), job_id=job.job_id)
        assert bytes(sealed.args["resultHash"]) == result_hash(job.result_cid)
        published = [str(e.args["resultCid"]) for e in market.events(names=("ResultPublished",), job_id=job.job_id)]
        assert published == [job.result_cid]


@pytest.mark.timeout(120)
def test_chainsched_workflow_run_prints_one_json_document(devnet: Devnet, tmp_path: Path) -> None:
    # When: the CLI runs the example on the devnet, posting the reduce at once (--eager): the contract
    # holds it, and the daemons bid once its parents finalize
    out = tmp_path / "cli-out"
    result = runner.invoke(
        app,
        ["run", str(EXAMPLES / "mapreduce.yaml"), "--devnet", str(devnet.root), "--out", str(out),
         "--set", "k=1", "--set", "m=1", "--poll", "0.2", "--timeout", "90", "--eager", "--json"],
    )  # fmt: skip

    # Then: one JSON document on stdout, progress on stderr
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["workflow"] == "wordcount-mapreduce"
    map_ids = [j["job_id"] for j in data["stages"]["map"]["jobs"]]
    (reduce_job,) = data["stages"]["reduce"]["jobs"]
    assert reduce_job["parents"] == map_ids
    assert Path(reduce_job["outputs"]) == out / "reduce" / "outputs"
    assert (out / "reduce" / "outputs" / "counts.tsv").read_text() == _word_counts()
    assert data["paid"] > 0 and data["paid"] == sum(j["paid"] for s in data["stages"].values() for j in s["jobs"])
    assert f"reduce[0] posted as job {reduce_job['job_id']}" in result.stderr

    # And: the reduce was posted before its parents finalized (the contract held it, not the client)
    with Client.from_devnet(devnet.root) as reader:
        posted_at = reader.market.job_posted(reduce_job["job_id"]).block_number
        finals = reader.market.events(names=("JobFinalized",))
        last_map = max(e.block_number for e in finals if e.job_id in map_ids)
    assert posted_at < last_map

    # And: a second run into the same directory is refused before anything is posted
    again = runner.invoke(app, ["run", str(EXAMPLES / "mapreduce.yaml"), "--devnet", str(devnet.root),
                                "--out", str(out)])  # fmt: skip
    assert again.exit_code == ExitCode.USAGE
    assert "exists and is not empty" in again.stderr


@pytest.mark.timeout(120)
def test_ga_iterations_read_the_previous_populations_and_never_get_worse(client: Client) -> None:
    # Given: the GA example, stopped after exactly two iterations (a bound nothing passes)
    wf = Workflow.load(EXAMPLES / "ga_root.yaml").override(**QUICK)
    evolve = wf.stage("evolve")
    two = Repeat(max=2, until=Until(file="best.json", key="abs_fx", below=0.0))
    wf = dataclasses.replace(wf, stages=[dataclasses.replace(evolve, repeat=two)])

    # When
    run = wf.run(client, timeout=90, poll=0.2)

    # Then: two iterations of three islands; each second-iteration job has the first three as parents
    stage = run["evolve"]
    assert stage.iterations == 2 and stage.converged is False
    first = [j.job_id for j in stage.jobs if j.iteration == 0]
    second = [j for j in stage.jobs if j.iteration == 1]
    assert len(first) == 3 and len(second) == 3
    for job in second:
        assert client.market.terms_of(job.job_id).parents == tuple(first)

    # And: the best |f(x)| is no worse than the first iteration's, and near a root of x^3 - 2x - 5
    assert len(stage.values) == 2
    assert stage.values[1] <= stage.values[0] < 1e-2
    for job in second:
        consensus = job.receipt.consensus
        assert consensus.get("exit_code") == 0, consensus


@pytest.mark.timeout(120)
def test_the_python_example_converges_with_the_workflow_api_and_by_hand(devnet: Devnet) -> None:
    for mode in ([], ["--by-hand"]):
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / "ga_root.py"), "--devnet", str(devnet.root), "--k", "1", "--m", "1",
             "--tolerance", "1e-6", "--max-iterations", "4", *mode],
            capture_output=True, text=True, timeout=100, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert abs(result["x"] - 2.0945514815423265) < 1e-3, result
        assert result["history"] == sorted(result["history"], reverse=True)
        assert result["converged"] == (result["abs_fx"] < 1e-6)
        assert result["paid"] > 0


@pytest.mark.timeout(120)
def test_a_job_nobody_can_take_fails_the_run_and_its_waiting_child_is_cancelled(client: Client) -> None:
    # Given: a stage asking for 4 replicas of 3 providers, and a stage reading it, posted eagerly
    module = ROOT / "examples" / "wasm" / "build" / "noop.wasm"
    options = JobOptions(k=4, m=3, max_price=5, max_units=10**6, collateral=10**15, challenge_window=0, fill_timeout=2)
    wide = Stage(name="wide", module=module)
    child = Stage(name="child", module=module, inputs={"w": wide}, options=JobOptions(k=1, m=1, fill_timeout=300))
    events: list[WorkflowEvent] = []

    # When / Then: the run raises JobFailed for the unfilled job (the client timed it out)
    with pytest.raises(errors.JobFailed) as caught:
        Workflow(name="unfillable", stages=[wide, child], defaults=options).run(
            client, timeout=60, poll=0.2, eager=True, on_event=events.append
        )
    assert caught.value.reason == FailReason.NOT_FILLED

    # And: the child, which waited on it, was cancelled for a refund
    (child_posted,) = [e for e in events if e.kind == "posted" and e.stage == "child"]
    assert child_posted.job_id is not None
    assert client.job(child_posted.job_id).status().status == JobStatus.CANCELLED
