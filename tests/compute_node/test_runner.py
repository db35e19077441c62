"""The job runner with real sandboxes and a real content store.

Every run goes the provider's whole way: the spec read by CID and checked
against the terms, the artifact and inputs fetched from a LocalStore, the Wasm
or Docker sandbox, the result directory and the receipt stored. Replicas are
separate runners with their own work directories; what they agree on is the
result CID.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chain_scheduler import Capability, InputRef, JobSpec, JobTerms, Limits, Market, commitment
from chain_scheduler import Executor as ExecutorKind
from chain_scheduler._anvil import Anvil, advance_time
from compute_node import (
    Behaviour,
    DockerExecutor,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    JobRunner,
    RunOutcome,
    WasmExecutor,
)
from storage import BackendError, ContentStore, LocalStore, open_store

if TYPE_CHECKING:
    from conftest_docker import BusyboxImage, DockerTestEnv

pytest_plugins = ["conftest_docker"]

pytestmark = pytest.mark.timeout(120)

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
CLIENT = "0x" + "11" * 20
TEXT = {"a.txt": b"the quick brown fox\njumps over\n", "b.txt": b"the lazy dog\n"}
WC_TXT = b"2 6 31 text/a.txt\n1 3 13 text/b.txt\n3 9 44 total\n"
PRICE = 2
ETH = 10**18


# ------------------------------------------------------------------ helpers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContentStore]:
    with open_store(f"local:{tmp_path / 'store'}") as s:
        yield s


@dataclass
class CountingExecutor:
    """A real executor, counting the runs it is asked for."""

    inner: Executor
    calls: list[ExecutionRequest] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.inner.kind

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        self.calls.append(request)
        return self.inner.run(request)


RunnerFactory = Callable[..., JobRunner]


@pytest.fixture
def make_runner(store: ContentStore, tmp_path: Path) -> RunnerFactory:
    """``make_runner(executors, market=None)``: a runner with its own work directory."""
    count = iter(range(1000))

    def factory(executors: Mapping[str, Executor], *, market: Market | None = None) -> JobRunner:
        return JobRunner(store=store, executors=executors, work_dir=tmp_path / f"work-{next(count)}", market=market)

    return factory


def put_tree(store: ContentStore, root: Path, files: Mapping[str, bytes]) -> str:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(store.put_directory(root))


def put_spec(store: ContentStore, **fields: Any) -> str:
    return str(store.put_bytes(JobSpec(version=1, **fields).to_bytes()))


def terms_for(
    spec_cid: str, *, executor: ExecutorKind = ExecutorKind.WASM, max_units: int = 10**10, parents: tuple[int, ...] = ()
) -> JobTerms:
    return JobTerms.create(
        client=CLIENT,
        spec_cid=spec_cid,
        executor=executor,
        max_price=10,
        max_units=max_units,
        collateral=10**15,
        parents=parents,
    )


def fetched(store: ContentStore, cid: str, dest: Path) -> dict[str, bytes]:
    """A stored tree as {relative path: bytes} (directories left out)."""
    store.fetch(cid, dest)
    return {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def result_file(store: ContentStore, cid: str, path: str, tmp_path: Path) -> bytes:
    """One file of a stored result directory."""
    return fetched(store, cid, tmp_path / f"fetched-{uuid.uuid4().hex[:8]}")[path]


def assert_work_dir_clean(runner: JobRunner) -> None:
    work = runner._work_dir
    assert not work.exists() or list(work.iterdir()) == []


@dataclass(frozen=True)
class WasmJob:
    spec_cid: str
    terms: JobTerms
    module_cid: str


@pytest.fixture
def wordcount_job(store: ContentStore, wasm_examples: dict[str, Path], tmp_path: Path) -> WasmJob:
    module_cid = str(store.put_file(wasm_examples["wordcount"]))
    text_cid = put_tree(store, tmp_path / "text", TEXT)
    spec_cid = put_spec(
        store, executor="wasm", artifact=module_cid, inputs=[InputRef(cid=text_cid, path="text")], description="wc"
    )
    return WasmJob(spec_cid=spec_cid, terms=terms_for(spec_cid), module_cid=module_cid)


# ------------------------------------------------------------------ Wasm


def test_wasm_wordcount_end_to_end_and_two_nodes_agree(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wordcount_job: WasmJob,
    wasm_examples: dict[str, Path],
    tmp_path: Path,
) -> None:
    # Given two nodes, each with its own sandbox and work directory, asking different prices
    with WasmExecutor() as other_wasm:
        first, second = make_runner({"wasm": wasm_executor}), make_runner({"wasm": other_wasm})

        # When both run the same job with the same seed
        a = first.run(job_id=7, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=PRICE)
        b = second.run(job_id=7, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=3)

    # Then they agree on the result and the fuel, and the result holds the word count
    assert a.error is None and b.error is None
    assert a.result_cid is not None
    assert a.result_cid == b.result_cid
    assert a.usage == b.usage > 0
    result = fetched(store, a.result_cid, tmp_path / "result")
    assert result["outputs/wc.txt"] == WC_TXT
    assert result["outputs/stdout"] == b"3 9 44 total\n"
    assert result["outputs/stderr"] == b""
    digest = "sha256:" + hashlib.sha256(wasm_examples["wordcount"].read_bytes()).hexdigest()
    consensus = {
        "version": 1,
        "job_id": 7,
        "executor": "wasm",
        "artifact": wordcount_job.module_cid,
        "artifact_digest": digest,
        "exit_code": 0,
        "error": None,
        "units": "fuel",
        "usage": a.usage,
    }
    assert result["receipt.json"] == json.dumps(consensus, sort_keys=True, separators=(",", ":")).encode()
    assert set(result) == {"outputs/wc.txt", "outputs/stdout", "outputs/stderr", "receipt.json"}

    # And each node's own receipt (stored apart from the result) prices its work
    assert a.receipt_cid is not None and b.receipt_cid is not None
    assert a.receipt_cid != b.receipt_cid
    assert json.loads(store.get_bytes(a.receipt_cid)) == a.receipt
    assert a.receipt["result"] == a.result_cid
    assert a.receipt["spec"] == wordcount_job.spec_cid
    assert a.receipt["artifact_digest"] == digest
    assert (a.receipt["fuel"], a.receipt["cpu_ms"], a.receipt["usage"]) == (a.usage, None, a.usage)
    assert (a.receipt["amount"], b.receipt["amount"]) == (PRICE * a.usage, 3 * a.usage)
    assert a.receipt["formula"] == f"{PRICE} wei × {a.usage} fuel = {PRICE * a.usage} wei"
    assert a.receipt["bytes_in"] == sum(len(v) for v in TEXT.values())
    assert a.receipt["bytes_out"] == len(WC_TXT) + len(b"3 9 44 total\n")
    assert_work_dir_clean(first)
    assert_work_dir_clean(second)


def test_monte_carlo_pi_follows_the_job_seed(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    tmp_path: Path,
) -> None:
    module_cid = str(store.put_file(wasm_examples["pi"]))
    spec_cid = put_spec(store, executor="wasm", artifact=module_cid, args=["20000"])
    runner = make_runner({"wasm": wasm_executor})

    def run(seed: bytes) -> RunOutcome:
        return runner.run(job_id=3, terms=terms_for(spec_cid), spec_cid=spec_cid, seed=seed, price=PRICE)

    first, again, other = run(SEED), run(SEED), run(OTHER_SEED)

    assert first.error is None and other.error is None
    assert first.result_cid == again.result_cid  # the same seed: the same points drawn
    assert first.result_cid != other.result_cid  # another job's seed: other points
    assert first.result_cid is not None and other.result_cid is not None
    estimates = [
        json.loads(result_file(store, cid, "outputs/pi.json", tmp_path)) for cid in (first.result_cid, other.result_cid)
    ]
    assert [e["samples"] for e in estimates] == [20000, 20000]
    assert estimates[0]["inside"] != estimates[1]["inside"]
    assert all(3.0 < e["pi"] < 3.3 for e in estimates)


def test_lazy_makes_up_a_result_without_running(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, wordcount_job: WasmJob
) -> None:
    counting = CountingExecutor(wasm_executor)
    runner = make_runner({"wasm": counting})
    job: dict[str, Any] = {
        "job_id": 5,
        "terms": wordcount_job.terms,
        "spec_cid": wordcount_job.spec_cid,
        "seed": SEED,
        "price": 1,
    }

    lazy = runner.run(**job, behaviour=Behaviour.LAZY)

    assert counting.calls == []  # nothing ran
    assert lazy.error is None and lazy.result_cid is not None and lazy.receipt_cid is not None
    assert 1 <= lazy.usage <= 1000
    honest = runner.run(**job)
    assert len(counting.calls) == 1  # the wrapper does see real runs
    assert honest.result_cid != lazy.result_cid
    assert honest.usage != lazy.usage
    assert_work_dir_clean(runner)


def test_wrong_differs_from_honest_by_exactly_one_output_byte(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, wordcount_job: WasmJob, tmp_path: Path
) -> None:
    runner = make_runner({"wasm": wasm_executor})
    job: dict[str, Any] = {
        "job_id": 6,
        "terms": wordcount_job.terms,
        "spec_cid": wordcount_job.spec_cid,
        "seed": SEED,
        "price": 1,
    }

    honest = runner.run(**job, behaviour=Behaviour.HONEST)
    wrong = runner.run(**job, behaviour=Behaviour.WRONG)
    copycat = runner.run(**job, behaviour=Behaviour.COPYCAT)  # the daemon's cheat: the runner is honest

    assert honest.result_cid is not None and wrong.result_cid is not None
    assert copycat.result_cid == honest.result_cid
    assert wrong.result_cid != honest.result_cid
    assert wrong.usage == honest.usage  # the same run, so the same fuel claimed
    good = fetched(store, honest.result_cid, tmp_path / "honest")
    bad = fetched(store, wrong.result_cid, tmp_path / "wrong")
    assert good.keys() == bad.keys()
    assert good["receipt.json"] == bad["receipt.json"]
    differing = [
        (name, i) for name in good for i, (x, y) in enumerate(zip(good[name], bad[name], strict=True)) if x != y
    ]
    assert len(differing) == 1
    assert differing[0][0].startswith("outputs/")


# ------------------------------------------------------------------ bad input


def _bad_spec(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    spec_cid = str(store.put_bytes(b'{"version": 1, "executor": "wasm",'))
    return spec_cid, terms_for(spec_cid)


def _not_wasm(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    script = str(store.put_bytes(b"#!/bin/sh\necho I am not a Wasm module\n"))
    spec_cid = put_spec(store, executor="wasm", artifact=script)
    return spec_cid, terms_for(spec_cid)


def _missing_input(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    with LocalStore(root=tmp_path / "elsewhere") as elsewhere:
        absent = str(elsewhere.put_bytes(b"only in another store"))
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(cid=absent, path="x")])
    return spec_cid, terms_for(spec_cid)


def _executor_mismatch(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    return job.spec_cid, terms_for(job.spec_cid, executor=ExecutorKind.DOCKER)


def _no_such_executor(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    spec_cid = put_spec(store, executor="docker", artifact=job.module_cid)
    return spec_cid, terms_for(spec_cid, executor=ExecutorKind.DOCKER)


def _parent_without_market(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(parent=4, path="p")])
    return spec_cid, terms_for(spec_cid, parents=(4,))


@pytest.mark.parametrize(
    ("make_job", "reason"),
    [
        (_bad_spec, r"^Job spec bafk\w+ is not JSON: "),
        (_not_wasm, r"^did not run: the artifact is not a Wasm module \(it does not start with the \\0asm magic"),
        (_missing_input, r"^input 'x' bafk\w+ is not in the content store; the client must upload it"),
        (_executor_mismatch, r"^Job spec executor is 'wasm' but the job's terms say 'docker'\.$"),
        (_no_such_executor, r"^the job needs a docker executor and this node has only \['wasm'\]"),
        (_parent_without_market, r"parent job 4, and this node has no market binding"),
    ],
    ids=["spec-not-json", "not-wasm", "missing-input", "executor-mismatch", "no-such-executor", "no-market"],
)
def test_bad_input_is_declined_with_a_reason_and_the_node_carries_on(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wordcount_job: WasmJob,
    tmp_path: Path,
    make_job: Callable[[ContentStore, WasmJob, Path], tuple[str, JobTerms]],
    reason: str,
) -> None:
    spec_cid, terms = make_job(store, wordcount_job, tmp_path)
    runner = make_runner({"wasm": wasm_executor})

    outcome = runner.run(job_id=9, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE)

    assert outcome.result_cid is None and outcome.receipt_cid is None
    assert outcome.usage == 0 and outcome.receipt["amount"] == 0
    assert outcome.error is not None
    assert "\n" not in outcome.error
    assert outcome.receipt["error"] == outcome.error
    assert re.search(reason, outcome.error), outcome.error
    assert_work_dir_clean(runner)
    # and the same node still runs good jobs
    good = runner.run(job_id=10, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=1)
    assert good.error is None and good.result_cid is not None


def test_not_wasm_receipt_names_the_digest_of_what_was_refused(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor
) -> None:
    data = b"\x7fELF not wasm either"
    spec_cid = put_spec(store, executor="wasm", artifact=str(store.put_bytes(data)))

    outcome = make_runner({"wasm": wasm_executor}).run(
        job_id=1, terms=terms_for(spec_cid), spec_cid=spec_cid, seed=SEED, price=PRICE
    )

    assert outcome.result_cid is None
    assert outcome.receipt["artifact_digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert outcome.receipt["exit_code"] == -1


def test_a_program_that_fails_still_has_a_result(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    tmp_path: Path,
) -> None:
    # miner exits 2 on bad arguments; with too little fuel the wordcount runs dry
    miner = put_spec(store, executor="wasm", artifact=str(store.put_file(wasm_examples["miner"])), args=["x"])
    runner = make_runner({"wasm": wasm_executor})

    bad_args = runner.run(job_id=2, terms=terms_for(miner), spec_cid=miner, seed=SEED, price=PRICE)
    dry = runner.run(job_id=2, terms=terms_for(miner, max_units=1000), spec_cid=miner, seed=SEED, price=PRICE)

    assert bad_args.result_cid is not None and bad_args.error is None
    assert json.loads(result_file(store, bad_args.result_cid, "receipt.json", tmp_path))["exit_code"] == 2
    assert dry.result_cid is not None and dry.usage == 1000
    assert dry.error is not None and dry.error.startswith("out of fuel")
    assert json.loads(result_file(store, dry.result_cid, "receipt.json", tmp_path))["error"] == dry.error


class UnreachableStore:
    """A LocalStore whose node stops answering for fetches (an IPFS daemon gone away)."""

    def __init__(self, inner: ContentStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def fetch(self, cid: str, dest: Path, *, max_size: int | None = None) -> None:
        raise BackendError("IPFS node at 127.0.0.1:5001 did not answer")


def test_an_unreachable_store_raises_for_the_daemon_to_retry(
    store: ContentStore, wasm_executor: WasmExecutor, wordcount_job: WasmJob, tmp_path: Path
) -> None:
    runner = JobRunner(
        store=UnreachableStore(store),
        executors={"wasm": wasm_executor},
        work_dir=tmp_path / "work",
    )

    with pytest.raises(BackendError, match="did not answer"):
        runner.run(job_id=1, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=1)

    assert_work_dir_clean(runner)


# ------------------------------------------------------------------ Docker


@pytest.fixture
def docker_job(
    store: ContentStore, busybox_image: BusyboxImage, tmp_path: Path
) -> Callable[..., tuple[str, JobTerms, str]]:
    """``docker_job(*args, tarball=None, timeout_s=30)``: (spec CID, terms, artifact CID) of a busybox job over TEXT."""
    text_cid = put_tree(store, tmp_path / "docker-text", TEXT)

    def make(*args: str, tarball: Path | None = None, timeout_s: int = 30) -> tuple[str, JobTerms, str]:
        artifact = str(store.put_file(tarball or busybox_image.tarball))
        spec_cid = put_spec(
            store,
            executor="docker",
            artifact=artifact,
            inputs=[InputRef(cid=text_cid, path="text")],
            args=list(args),
            limits=Limits(memory_mb=64, timeout_s=timeout_s),
        )
        return spec_cid, terms_for(spec_cid, executor=ExecutorKind.DOCKER, max_units=60_000), artifact

    return make


def test_docker_job_gives_the_same_result_cid_on_two_runs(
    store: ContentStore,
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    busybox_image: BusyboxImage,
    tmp_path: Path,
) -> None:
    spec_cid, terms, artifact = docker_job()
    job: dict[str, Any] = {
        "job_id": docker_test_env.job_id,
        "terms": terms,
        "spec_cid": spec_cid,
        "seed": SEED,
        "price": PRICE,
    }

    first = make_runner({"docker": docker_executor}).run(**job)
    second = make_runner({"docker": docker_executor}).run(**job)

    # CPU time is measured, so each run's usage is its own; the result leaves it out
    assert first.error is None and second.error is None
    assert first.result_cid is not None
    assert first.result_cid == second.result_cid
    for outcome in (first, second):
        assert outcome.usage >= 1
        assert outcome.receipt["cpu_ms"] is not None and outcome.usage >= outcome.receipt["cpu_ms"]
        assert outcome.receipt["fuel"] is None
        assert outcome.receipt["formula"] == f"{PRICE} wei × {outcome.usage} cpu_ms = {PRICE * outcome.usage} wei"
    result = fetched(store, first.result_cid, tmp_path / "result")
    assert result["outputs/counts.tsv"] == (
        b"path\tlines\twords\tbytes\ntext/a.txt\t2\t6\t31\ntext/b.txt\t1\t3\t13\ntotal\t3\t9\t44\n"
    )
    assert json.loads(result["receipt.json"]) == {
        "version": 1,
        "job_id": docker_test_env.job_id,
        "executor": "docker",
        "artifact": artifact,
        "artifact_digest": busybox_image.image_id,
        "exit_code": 0,
        "error": None,
        "units": "cpu_ms",
    }


def test_symlinks_a_job_leaves_in_its_outputs_are_not_stored(
    store: ContentStore,
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    tmp_path: Path,
) -> None:
    # Given a job that points links in /outputs at the provider's files
    script = (
        "ln -s /etc/shadow /outputs/leak && mkdir /outputs/d && ln -s / /outputs/d/root "
        "&& mkfifo /outputs/pipe && echo kept > /outputs/d/kept"
    )
    spec_cid, terms, _ = docker_job("/bin/sh", "-c", script)

    outcome = make_runner({"docker": docker_executor}).run(
        job_id=docker_test_env.job_id, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE
    )

    # Then the result keeps the files and drops the links, and says so
    assert outcome.result_cid is not None
    result = fetched(store, outcome.result_cid, tmp_path / "result")
    assert set(result) == {"outputs/d/kept", "outputs/stdout", "outputs/stderr", "receipt.json"}
    assert result["outputs/d/kept"] == b"kept\n"
    assert outcome.error is not None
    assert "removed 3 entries" in outcome.error
    assert "'d/root', 'leak', 'pipe'" in outcome.error
    receipt = json.loads(result["receipt.json"])
    assert receipt["exit_code"] == 0
    assert receipt["error"] == outcome.error


def test_a_docker_job_killed_at_its_timeout_still_has_a_result(
    store: ContentStore,
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    tmp_path: Path,
) -> None:
    spec_cid, terms, _ = docker_job("/bin/sh", "-c", "echo started; sleep 30", timeout_s=1)

    outcome = make_runner({"docker": docker_executor}).run(
        job_id=docker_test_env.job_id, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE
    )

    # Every replica is killed the same way, so the result records it, in words all replicas share
    assert outcome.result_cid is not None and outcome.usage >= 1
    assert outcome.error == "timed out after 1 s; the container was killed"
    receipt = json.loads(result_file(store, outcome.result_cid, "receipt.json", tmp_path))
    assert receipt["error"] == "timed out after N s; the container was killed"
    assert receipt["exit_code"] == outcome.receipt["exit_code"] != 0
    assert result_file(store, outcome.result_cid, "outputs/stdout", tmp_path) == b"started\n"


def _altered_config(source: Path, target: Path) -> Path:
    """The tarball with its image config edited but still filed under the old digest."""
    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for member in src.getmembers():
            extracted = src.extractfile(member) if member.isfile() else None
            data = extracted.read() if extracted is not None else b""
            if member.name.endswith(".json") and member.name != "manifest.json":
                data = data.replace(b"PATH=/bin", b"PATH=/tmp")
            member.size = len(data)
            out.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return target


def test_an_image_whose_digest_does_not_match_is_declined(
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    busybox_image: BusyboxImage,
    tmp_path: Path,
) -> None:
    spec_cid, terms, _ = docker_job(tarball=_altered_config(busybox_image.tarball, tmp_path / "altered.tar"))
    counting = CountingExecutor(docker_executor)
    runner = make_runner({"docker": counting})

    outcome = runner.run(job_id=docker_test_env.job_id, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE)

    assert outcome.result_cid is None and outcome.usage == 0
    assert outcome.error is not None
    assert outcome.error.startswith("did not run: image rejected: image config hashes to sha256:")
    assert outcome.receipt["artifact_digest"] == busybox_image.image_id  # the digest it claimed
    assert len(counting.calls) == 1
    assert_work_dir_clean(runner)


# ------------------------------------------------------------------ parent jobs on a real chain


def test_a_parent_input_is_the_finalized_parents_outputs(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    wordcount_job: WasmJob,
    tmp_path: Path,
) -> None:
    with Anvil(accounts=3) as node:
        w3 = node.web3()
        deployer, client_account, provider_account = list(w3.eth.accounts)[:3]
        market = Market.deploy(w3=w3, account=deployer, unbonding_delay=60)
        client, provider = market.with_account(client_account), market.with_account(provider_account)
        provider.register(Capability.WASM, ETH)
        runner = make_runner({"wasm": wasm_executor}, market=market)

        # Given a word-count parent job run by the runner, committed and revealed
        parent_terms = JobTerms.create(
            client=client.account,
            spec_cid=wordcount_job.spec_cid,
            max_price=10,
            max_units=10**10,
            collateral=10**15,
            challenge_window=10,
        )
        parent_id = client.post_job(wordcount_job.spec_cid, parent_terms)
        seed = bytes(provider.bid(parent_id, PRICE).event("BiddingClosed").args["seed"])
        parent = runner.run(
            job_id=parent_id, terms=parent_terms, spec_cid=wordcount_job.spec_cid, seed=seed, price=PRICE
        )
        assert parent.result_cid is not None
        salt = (1).to_bytes(32, "big")
        provider.commit(parent_id, 0, commitment(parent_id, provider.account, parent.result_cid, parent.usage, salt))
        provider.reveal(parent_id, 0, parent.result_cid, parent.usage, salt)

        # And a child that hashes the parent's result
        sha_cid = str(store.put_file(wasm_examples["sha256sum"]))
        child_spec = put_spec(store, executor="wasm", artifact=sha_cid, inputs=[InputRef(parent=parent_id, path="wc")])
        child_terms = terms_for(child_spec, parents=(parent_id,))

        def run_child() -> RunOutcome:
            return runner.run(job_id=parent_id + 1, terms=child_terms, spec_cid=child_spec, seed=SEED, price=PRICE)

        # When the parent is still in its challenge window, the child cannot run
        early = run_child()
        assert early.result_cid is None
        assert early.error == (
            f"Parent job {parent_id} is Succeeded, not Finalized: its result is not accepted yet. "
            f"Wait for it. See: chainsched job status {parent_id}"
        )

        # When it is finalized, the child gets the parent's outputs at /inputs/wc
        advance_time(w3, 11)
        market.finalize(parent_id)
        child = run_child()

    assert child.error is None and child.result_cid is not None
    sums = result_file(store, child.result_cid, "outputs/sha256sums.txt", tmp_path).decode()
    expected = {
        name: hashlib.sha256(data).hexdigest()
        for name, data in {"wc/stderr": b"", "wc/stdout": b"3 9 44 total\n", "wc/wc.txt": WC_TXT}.items()
    }
    assert sums == "".join(f"{digest}  {name}\n" for name, digest in sorted(expected.items()))


# ------------------------------------------------------------- before bidding


def test_precheck_accepts_a_runnable_job_and_names_what_is_missing_otherwise(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wordcount_job: WasmJob,
    tmp_path: Path,
) -> None:
    runner = make_runner({"wasm": wasm_executor})
    assert runner.precheck(terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid) is None

    # A spec whose module was stored somewhere else: bidding would only end in a missed commit.
    with open_store(f"local:{tmp_path / 'elsewhere'}") as elsewhere:
        ghost = str(elsewhere.put_bytes(b"\0asm\1\0\0\0 stored where this node does not look"))
    spec_cid = put_spec(store, executor="wasm", artifact=ghost, inputs=[], description="ghost")
    assert runner.precheck(terms=terms_for(spec_cid), spec_cid=spec_cid) == (
        f"artifact {ghost} is not in the content store"
    )

    # A spec that is not in the store at all, and an executor this node does not run.
    missing = runner.precheck(terms=terms_for(ghost), spec_cid=ghost)
    assert missing is not None and ghost in missing
    no_wasm = make_runner({})
    assert no_wasm.precheck(terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid) == "this node runs no wasm jobs"

    # Terms that do not match the spec (a Docker job pointing at a Wasm spec).
    docker_terms = terms_for(wordcount_job.spec_cid, executor=ExecutorKind.DOCKER)
    mismatch = runner.precheck(terms=docker_terms, spec_cid=wordcount_job.spec_cid)
    assert mismatch is not None and "executor" in mismatch
