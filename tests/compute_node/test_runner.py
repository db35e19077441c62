"""The job runner with real sandboxes and a real content store.

Every run goes the provider's whole way: the spec read by CID and checked
against the terms, the artifact and inputs fetched from a LocalStore, the Wasm
or Docker sandbox, the result directory and the receipt stored. Replicas are
separate runners with their own work directories; what they agree on is the
result CID.
"""

from __future__ import annotations

import dataclasses
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
import wasmtime

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
from compute_node._runner import FailureReason, Precheck, Verdict, _ending
from compute_node.executors import StopReason
from storage import BackendError, ContentStore, LocalStore, open_store
from storage._car import write_car
from storage._cid import DAG_PB, RAW, Cid, encode_varint
from storage._unixfs import PBLink, encode_directory

if TYPE_CHECKING:
    from conftest_docker import BusyboxImage, DockerTestEnv

pytest_plugins = ["conftest_docker"]

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
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
    spec_cid: str,
    *,
    executor: ExecutorKind = ExecutorKind.WASM,
    max_units: int = 10**10,
    parents: tuple[int, ...] = (),
    exec_timeout: int = 300,
) -> JobTerms:
    return JobTerms.create(
        client=CLIENT,
        spec_cid=spec_cid,
        executor=executor,
        max_price=10,
        max_units=max_units,
        collateral=10**15,
        parents=parents,
        exec_timeout=exec_timeout,
    )


def unsafe_tree(store: ContentStore, entries: Mapping[str, bytes | str] | list[tuple[str, bytes]]) -> str:
    """A directory DAG no honest uploader makes (the importer refuses both): bytes are files, a str a
    symlink's target; a list of pairs may name an entry twice. Imported block by block, as a CAR."""
    blocks: dict[Cid, bytes] = {}

    def add(codec: int, data: bytes) -> Cid:
        cid = Cid.of_block(codec, data)
        blocks[cid] = data
        return cid

    links = []
    for name, value in entries.items() if isinstance(entries, Mapping) else entries:
        if isinstance(value, bytes):
            child = add(RAW, value)
        else:
            unixfs = b"\x08\x04\x12" + encode_varint(len(value.encode())) + value.encode()
            child = add(DAG_PB, b"\x0a" + encode_varint(len(unixfs)) + unixfs)
        links.append(PBLink(child, name.encode(), len(blocks[child])))
    root = add(DAG_PB, encode_directory(links))
    car = io.BytesIO()
    write_car(car, [root], blocks.items())
    car.seek(0)
    assert store.import_car(car) == [root.text()]
    return root.text()


def wat_module(store: ContentStore, wat: str) -> str:
    return str(store.put_bytes(wasmtime.wat2wasm(wat)))


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
    assert a.failure is None and b.failure is None
    assert a.result_cid is not None
    assert a.result_cid == b.result_cid
    assert a.usage == b.usage > 0
    result = fetched(store, a.result_cid, tmp_path / "result")
    assert result["outputs/wc.txt"] == WC_TXT
    assert result["outputs/stdout"] == b"3 9 44 total\n"
    assert result["outputs/stderr"] == b""
    digest = "sha256:" + hashlib.sha256(wasm_examples["wordcount"].read_bytes()).hexdigest()
    consensus = {
        "version": 2,
        "job_id": 7,
        "executor": "wasm",
        "artifact": wordcount_job.module_cid,
        "artifact_digest": digest,
        "exit_code": 0,
        "reason": None,
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
    # the job: `chainsched job submit --module README.md`
    readme = str(store.put_file(ROOT / "README.md"))
    spec_cid = put_spec(store, executor="wasm", artifact=readme)
    return spec_cid, terms_for(spec_cid)


def _executor_mismatch(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    return job.spec_cid, terms_for(job.spec_cid, executor=ExecutorKind.DOCKER)


def _timeout_over_the_window(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    # the job: a 30 s time limit in a 10 s commit window (a Docker job: no Docker executor needed)
    spec_cid = put_spec(store, executor="docker", artifact=job.module_cid, limits=Limits(timeout_s=30))
    return spec_cid, terms_for(spec_cid, executor=ExecutorKind.DOCKER, exec_timeout=10)


def _wasm_budget_over_the_window(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    return job.spec_cid, terms_for(job.spec_cid, exec_timeout=10)


def _unsafe_input(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    tree = unsafe_tree(store, {"ok.txt": b"fine", "leak": "../../../etc/passwd"})
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(cid=tree, path="text")])
    return spec_cid, terms_for(spec_cid)


def _duplicate_names(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    tree = unsafe_tree(store, [("same", b"one"), ("same", b"two")])
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(cid=tree, path="text")])
    return spec_cid, terms_for(spec_cid)


def _directory_artifact(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    folder = put_tree(store, tmp_path / "not-a-module", {"a.wasm": b"\0asm"})
    spec_cid = put_spec(store, executor="wasm", artifact=folder)
    return spec_cid, terms_for(spec_cid)


@pytest.mark.parametrize(
    ("make_job", "reason", "message"),
    [
        (_bad_spec, FailureReason.SPEC_INVALID, r"^Job spec bafk\w+ is not JSON: "),
        (_not_wasm, FailureReason.ARTIFACT_INVALID, r"^the artifact is not a Wasm module \(it does not start with"),
        (_directory_artifact, FailureReason.ARTIFACT_INVALID, r"^the artifact bafy\w+ is a directory; it must be"),
        (_executor_mismatch, FailureReason.SPEC_TERMS, r"^Job spec executor is 'wasm' but the job's terms say"),
        (_timeout_over_the_window, FailureReason.SPEC_TERMS, r"limits.timeout_s=30 s may take at most half of "),
        (_wasm_budget_over_the_window, FailureReason.SPEC_TERMS, r"a wasm run may burn 10,000,000,000 fuel"),
        (_unsafe_input, FailureReason.INPUT_REFUSED, r"^input 'text' bafy\w+ cannot be unpacked safely: .*'leak -> "),
        (_duplicate_names, FailureReason.INPUT_REFUSED, r"^input 'text' bafy\w+ cannot be unpacked .*'same' twice"),
    ],
    ids=["spec-not-json", "not-wasm", "artifact-is-a-directory", "executor-mismatch", "docker-timeout-over-window",
         "wasm-budget-over-window", "escaping-symlink", "duplicate-names"],
)  # fmt: skip
def test_a_job_that_cannot_run_is_the_same_failure_result_on_every_replica(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wordcount_job: WasmJob,
    tmp_path: Path,
    make_job: Callable[[ContentStore, WasmJob, Path], tuple[str, JobTerms]],
    reason: FailureReason,
    message: str,
) -> None:
    # Given a job every honest node sees the same problem in, and two nodes with their own sandboxes
    spec_cid, terms = make_job(store, wordcount_job, tmp_path)
    with WasmExecutor() as other_wasm:
        first, second = make_runner({"wasm": wasm_executor}), make_runner({"wasm": other_wasm})

        # When both run it, the pre-bid check saying so first
        checks = [r.precheck(terms=terms, spec_cid=spec_cid) for r in (first, second)]
        outcomes = [
            runner.run(job_id=9, terms=terms, spec_cid=spec_cid, seed=SEED, price=price)
            for runner, price in ((first, 2), (second, 3))
        ]

    # Then both commit the same failure result, naming the reason, nothing machine-specific in it
    assert checks == [Precheck(verdict=Verdict.FAIL, reason=outcomes[0].error, failure=reason)] * 2
    a, b = outcomes
    assert a.result_cid is not None and a.result_cid == b.result_cid
    assert a.failure == b.failure == reason
    assert a.usage == b.usage == 0
    assert a.error is not None and re.search(message, a.error), a.error
    assert "\n" not in a.error and str(tmp_path) not in a.error and "/tmp" not in a.error
    result = fetched(store, a.result_cid, tmp_path / "result")
    assert set(result) == {"receipt.json"}  # and an empty outputs/ directory
    assert (tmp_path / "result" / "outputs").is_dir()
    consensus = json.loads(result["receipt.json"])
    assert consensus["reason"] == reason.value and consensus["error"] == a.error
    assert consensus["exit_code"] is None and consensus["version"] == 2
    # And each node's own receipt prices it at the job's floor (min_units, 0 here)
    assert a.receipt["reason"] == reason.value and a.receipt["amount"] == 0
    assert a.receipt_cid is not None and json.loads(store.get_bytes(a.receipt_cid)) == a.receipt
    assert_work_dir_clean(first)
    assert_work_dir_clean(second)


def test_a_failure_result_pays_the_jobs_floor(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, wordcount_job: WasmJob, tmp_path: Path
) -> None:
    spec_cid, _ = _not_wasm(store, wordcount_job, tmp_path)
    terms = dataclasses.replace(terms_for(spec_cid), min_units=5_000)

    outcome = make_runner({"wasm": wasm_executor}).run(job_id=9, terms=terms, spec_cid=spec_cid, seed=SEED, price=3)

    assert outcome.failure is FailureReason.ARTIFACT_INVALID and outcome.usage == 0
    assert (outcome.receipt["amount"], outcome.receipt["formula"]) == (15_000, "3 wei × 5000 fuel = 15000 wei")


def _missing_input(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    with LocalStore(root=tmp_path / "elsewhere") as elsewhere:
        absent = str(elsewhere.put_bytes(b"only in another store"))
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(cid=absent, path="x")])
    return spec_cid, terms_for(spec_cid)


def _no_such_executor(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    spec_cid = put_spec(store, executor="docker", artifact=job.module_cid)
    return spec_cid, terms_for(spec_cid, executor=ExecutorKind.DOCKER)


def _parent_without_market(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    spec_cid = put_spec(store, executor="wasm", artifact=job.module_cid, inputs=[InputRef(parent=4, path="p")])
    return spec_cid, terms_for(spec_cid, parents=(4,))


def _spec_elsewhere(store: ContentStore, job: WasmJob, tmp_path: Path) -> tuple[str, JobTerms]:
    with LocalStore(root=tmp_path / "elsewhere") as elsewhere:
        spec_cid = put_spec(elsewhere, executor="wasm", artifact=job.module_cid)
    return spec_cid, terms_for(spec_cid)


@pytest.mark.parametrize(
    ("make_job", "reason"),
    [
        (_missing_input, r"^input 'x' bafk\w+ is not in the content store; the client must upload it"),
        (_no_such_executor, r"^the job needs a docker executor and this node has only \['wasm'\]"),
        (_parent_without_market, r"parent job 4, and this node has no market binding"),
        (_spec_elsewhere, r"^the job spec bafk\w+ is not in this node's content store"),
    ],
    ids=["missing-input", "no-such-executor", "no-market", "spec-not-here"],
)
def test_what_this_node_cannot_do_is_declined_not_failed(
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

    check = runner.precheck(terms=terms, spec_cid=spec_cid)
    outcome = runner.run(job_id=9, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE)

    # The pre-bid check declines it (another node may run it), and a run gives no result, not a failure result
    assert check.verdict is Verdict.DECLINE and not check.bid
    assert check.reason is not None and re.search(reason, check.reason), check.reason
    assert outcome.result_cid is None and outcome.receipt_cid is None and outcome.failure is None
    assert outcome.usage == 0 and outcome.receipt["amount"] == 0
    assert outcome.error == check.reason and outcome.receipt["error"] == outcome.error
    assert_work_dir_clean(runner)
    # and the same node still runs good jobs
    good = runner.run(job_id=10, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=1)
    assert good.error is None and good.result_cid is not None


def test_not_wasm_receipt_names_the_digest_of_what_was_refused(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, tmp_path: Path
) -> None:
    data = b"\x7fELF not wasm either"
    spec_cid = put_spec(store, executor="wasm", artifact=str(store.put_bytes(data)))

    outcome = make_runner({"wasm": wasm_executor}).run(
        job_id=1, terms=terms_for(spec_cid), spec_cid=spec_cid, seed=SEED, price=PRICE
    )

    assert outcome.result_cid is not None and outcome.failure is FailureReason.ARTIFACT_INVALID
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert outcome.receipt["artifact_digest"] == digest
    assert outcome.receipt["exit_code"] is None
    assert json.loads(result_file(store, outcome.result_cid, "receipt.json", tmp_path))["artifact_digest"] == digest


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

    assert bad_args.result_cid is not None and bad_args.error is None and bad_args.failure is None
    assert json.loads(result_file(store, bad_args.result_cid, "receipt.json", tmp_path))["exit_code"] == 2
    assert dry.result_cid is not None and dry.usage == 1000
    assert dry.failure is FailureReason.UNIT_LIMIT
    assert dry.error == "unit limit: the program needs more than max_units=1000 fuel"
    receipt = json.loads(result_file(store, dry.result_cid, "receipt.json", tmp_path))
    assert (receipt["error"], receipt["reason"], receipt["usage"]) == (dry.error, "unit_limit", 1000)
    assert receipt["exit_code"] == -1  # stopped, not exited: deterministic, so kept


# A program that prints a line after every 100k loop iterations, forever.
PRINTING_LOOP_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick\\n")
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (loop $forever
      (local.set $i (i32.const 0))
      (loop $spin
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $i) (i32.const 100000))))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
"""


def writing_wat(blocks: int | None) -> str:
    """Writes 64 KiB blocks of zeros to stdout: ``blocks`` of them then exits, or forever (None)."""
    stop = "" if blocks is None else f"(br_if $done (i32.ge_u (local.get $n) (i32.const {blocks})))"
    return f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done
      (loop $write
        {stop}
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $write)))))
"""


def two_replicas(
    make_runner: RunnerFactory, wasm_executor: WasmExecutor, terms: JobTerms, spec_cid: str, **run: Any
) -> tuple[RunOutcome, RunOutcome]:
    """The job run by two nodes, each with its own Wasm executor and work directory."""
    with WasmExecutor() as other_wasm:
        first, second = make_runner({"wasm": wasm_executor}), make_runner({"wasm": other_wasm})
        return (
            first.run(job_id=11, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE, **run),
            second.run(job_id=11, terms=terms, spec_cid=spec_cid, seed=SEED, price=3, **run),
        )


def test_a_time_limited_printing_loop_stops_at_the_same_instruction_on_every_replica(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, tmp_path: Path
) -> None:
    # Given a program that prints as it runs and never ends, limited to 1 s: a fuel budget
    spec_cid = put_spec(
        store, executor="wasm", artifact=wat_module(store, PRINTING_LOOP_WAT), limits=Limits(timeout_s=1)
    )
    terms = terms_for(spec_cid, max_units=10**12)

    # When two nodes run it
    a, b = two_replicas(make_runner, wasm_executor, terms, spec_cid)

    # Then both stop after the same fuel, with the same lines printed: one result CID, one usage
    assert a.failure is b.failure is FailureReason.TIME_LIMIT
    assert a.result_cid is not None and a.result_cid == b.result_cid
    assert a.usage == b.usage == Limits.FUEL_PER_SECOND  # 1 s of fuel, billed in full
    fuel = Limits.FUEL_PER_SECOND
    assert a.error == f"time limit: the program burnt its fuel budget of {fuel} (1 s × {fuel} fuel/s)"
    result = fetched(store, a.result_cid, tmp_path / "result")
    ticks = result["outputs/stdout"]
    assert ticks.count(b"tick\n") > 100 and set(ticks.split(b"\n")) == {b"tick", b""}
    receipt = json.loads(result["receipt.json"])
    assert (receipt["reason"], receipt["usage"], receipt["exit_code"]) == ("time_limit", a.usage, -1)


@pytest.mark.parametrize("blocks", [None, 24], ids=["writes-forever", "writes-1.5MiB-and-exits"])
def test_output_over_the_limit_is_the_same_failure_result_on_every_replica(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, tmp_path: Path, blocks: int | None
) -> None:
    # Given a program that writes past its 1 MiB output limit (stopped by the sandbox, or caught after it exits)
    spec_cid = put_spec(store, executor="wasm", artifact=wat_module(store, writing_wat(blocks)),
                        limits=Limits(timeout_s=2, output_mb=1))  # fmt: skip
    terms = terms_for(spec_cid, max_units=10**12)

    a, b = two_replicas(make_runner, wasm_executor, terms, spec_cid)

    # Then neither the outputs (how much got written depends on the machine) nor the fuel are kept:
    # the result bills the job's fuel limit, and both replicas agree
    assert a.failure is b.failure is FailureReason.OUTPUT_LIMIT
    assert a.result_cid is not None and a.result_cid == b.result_cid
    assert a.usage == b.usage == 2 * Limits.FUEL_PER_SECOND
    assert a.error == "output limit: the program wrote more than 1 MiB under /outputs"
    assert set(fetched(store, a.result_cid, tmp_path / "result")) == {"receipt.json"}


# A program that writes one byte per fd_write forever: the host calls take the time, not the fuel.
HOST_CALL_LOOP_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ".")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (loop $forever
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
"""


def test_a_host_call_loop_that_outlasts_its_fuel_budget_is_the_same_failure_on_every_replica(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor, tmp_path: Path
) -> None:
    # Given a job with 1 s of fuel whose program spends its time in host calls, which fuel does not
    # count (a client could build it to outlast every node's commit window)
    spec_cid = put_spec(
        store, executor="wasm", artifact=wat_module(store, HOST_CALL_LOOP_WAT), limits=Limits(timeout_s=1)
    )
    terms = terms_for(spec_cid, max_units=10**12)

    # When two nodes, each with 6 s left before the commit deadline, run it
    a, b = two_replicas(make_runner, wasm_executor, terms, spec_cid, time_left=6.0)

    # Then each node's safety net fires past twice the budget's time, and both report the same
    # failure result, billed the whole budget, with outputs dropped: nobody misses the commit
    assert a.failure is b.failure is FailureReason.TIME_LIMIT
    assert a.result_cid is not None and a.result_cid == b.result_cid
    assert a.usage == b.usage == Limits.FUEL_PER_SECOND
    assert set(fetched(store, a.result_cid, tmp_path / "result")) == {"receipt.json"}


def test_the_nodes_own_safety_net_gives_no_result(
    store: ContentStore, make_runner: RunnerFactory, wasm_executor: WasmExecutor
) -> None:
    # Given the printing loop with a 20 s budget, and a node with 0.5 s left before the commit deadline
    spec_cid = put_spec(
        store, executor="wasm", artifact=wat_module(store, PRINTING_LOOP_WAT), limits=Limits(timeout_s=20)
    )
    terms = terms_for(spec_cid, max_units=10**12)
    runner = make_runner({"wasm": wasm_executor})

    late = runner.run(job_id=12, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE, time_left=0.5)
    missed = runner.run(job_id=12, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE, time_left=0)

    # Then the node commits nothing: a faster node would have finished, so no replica may be blamed
    assert late.result_cid is None and late.failure is None
    assert late.error is not None and late.error.startswith("this node's safety net stopped the run after 0.2 s")
    assert missed.result_cid is None and missed.error is not None and "deadline has passed" in missed.error
    assert_work_dir_clean(runner)


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

    def make(*args: str, tarball: Path | None = None, timeout_s: int = 30, **limits: int) -> tuple[str, JobTerms, str]:
        artifact = str(store.put_file(tarball or busybox_image.tarball))
        spec_cid = put_spec(
            store,
            executor="docker",
            artifact=artifact,
            inputs=[InputRef(cid=text_cid, path="text")],
            args=list(args),
            limits=Limits(memory_mb=64, timeout_s=timeout_s, **limits),
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
        "version": 2,
        "job_id": docker_test_env.job_id,
        "executor": "docker",
        "artifact": artifact,
        "artifact_digest": busybox_image.image_id,
        "exit_code": 0,
        "reason": None,
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


def test_a_docker_job_stopped_at_its_time_limit_is_a_failure_result_billed_a_fixed_figure(
    store: ContentStore,
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    tmp_path: Path,
) -> None:
    # A job that prints as it runs: what it printed by the kill depends on the machine
    spec_cid, terms, _ = docker_job("/bin/sh", "-c", "while true; do echo tick; sleep 0.01; done", timeout_s=1)
    job: dict[str, Any] = {"job_id": docker_test_env.job_id, "terms": terms, "spec_cid": spec_cid, "seed": SEED}

    first = make_runner({"docker": docker_executor}).run(**job, price=PRICE)
    second = make_runner({"docker": docker_executor}).run(**job, price=3)

    # Every replica agrees: the outputs and exit code are dropped, and the bill is 1 s × 1 cpu
    assert first.result_cid is not None and first.result_cid == second.result_cid
    assert first.failure is second.failure is FailureReason.TIME_LIMIT
    assert first.usage == second.usage == 1000
    assert first.error == "time limit: the container ran longer than 1 s"
    result = fetched(store, first.result_cid, tmp_path / "result")
    assert set(result) == {"receipt.json"}
    receipt = json.loads(result["receipt.json"])
    assert (receipt["reason"], receipt["error"], receipt["exit_code"]) == ("time_limit", first.error, None)


def test_a_docker_job_whose_logs_pass_the_output_limit_is_a_failure_result(
    store: ContentStore,
    make_runner: RunnerFactory,
    docker_executor: DockerExecutor,
    docker_job: Callable[..., tuple[str, JobTerms, str]],
    docker_test_env: DockerTestEnv,
    tmp_path: Path,
) -> None:
    # 2 MiB on stdout, which the engine hands over after the container exits, with a 1 MiB limit
    spec_cid, terms, _ = docker_job("/bin/sh", "-c", "head -c 2097152 /dev/zero", output_mb=1)

    outcome = make_runner({"docker": docker_executor}).run(
        job_id=docker_test_env.job_id, terms=terms, spec_cid=spec_cid, seed=SEED, price=PRICE
    )

    assert outcome.result_cid is not None and outcome.failure is FailureReason.OUTPUT_LIMIT
    assert outcome.usage == 60_000  # the job's unit cap
    assert outcome.error == "output limit: the program wrote more than 1 MiB under /outputs"
    assert set(fetched(store, outcome.result_cid, tmp_path / "result")) == {"receipt.json"}


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


def test_an_image_whose_digest_does_not_match_is_a_failure_result(
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

    assert outcome.result_cid is not None and outcome.usage == 0
    assert outcome.failure is FailureReason.ARTIFACT_INVALID
    assert outcome.error is not None
    assert outcome.error.startswith("image rejected: image config hashes to sha256:ID, not sha256:ID as the tarball")
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


def test_precheck_runs_a_good_job_and_declines_what_this_node_cannot_do(
    store: ContentStore,
    make_runner: RunnerFactory,
    wasm_executor: WasmExecutor,
    wordcount_job: WasmJob,
    tmp_path: Path,
) -> None:
    runner = make_runner({"wasm": wasm_executor})
    terms = wordcount_job.terms
    good = runner.precheck(terms=terms, spec_cid=wordcount_job.spec_cid)
    assert good == Precheck(verdict=Verdict.RUN, run_seconds=10**10 / Limits.FUEL_PER_SECOND)
    assert good.bid

    # A module stored somewhere else: bidding would only end in a missed commit
    with open_store(f"local:{tmp_path / 'elsewhere'}") as elsewhere:
        ghost = str(elsewhere.put_bytes(b"\0asm\1\0\0\0 stored where this node does not look"))
    spec_cid = put_spec(store, executor="wasm", artifact=ghost, inputs=[], description="ghost")
    missing = runner.precheck(terms=terms_for(spec_cid), spec_cid=spec_cid)
    assert missing.verdict is Verdict.DECLINE and missing.reason is not None
    assert missing.reason.startswith(f"the artifact {ghost} is not in the content store")

    # No Wasm executor here
    no_wasm = make_runner({}).precheck(terms=terms, spec_cid=wordcount_job.spec_cid)
    assert no_wasm.verdict is Verdict.DECLINE and "needs a wasm executor" in str(no_wasm.reason)

    # More than this node fetches for one job (module and inputs)
    small = JobRunner(store=store, executors={"wasm": wasm_executor}, work_dir=tmp_path / "w1", max_input_bytes=1000)
    over = small.precheck(terms=terms, spec_cid=wordcount_job.spec_cid)
    assert over.verdict is Verdict.DECLINE and "over the 1000-byte limit" in str(over.reason)

    # Too slow for the commit window: 10^10 fuel at 10^8 fuel/s is 100 s, and the window is 60 s
    slow = JobRunner(store=store, executors={"wasm": wasm_executor}, work_dir=tmp_path / "w2", fuel_rate=10**8)
    tight = dataclasses.replace(terms, exec_timeout=60)
    late = slow.precheck(terms=tight, spec_cid=wordcount_job.spec_cid)
    assert late.verdict is Verdict.DECLINE
    assert late.reason == (
        "this node is too slow for the commit window: the run may take 100.0 s (10,000,000,000 fuel at this "
        "node's 100,000,000 fuel/s), plus 5 s to store and commit, and exec_timeout is 60 s"
    )
    assert runner.precheck(terms=tight, spec_cid=wordcount_job.spec_cid).verdict is Verdict.RUN  # a faster node
    assert_work_dir_clean(runner)


def test_precheck_compiles_the_module_once_for_the_run(
    store: ContentStore, make_runner: RunnerFactory, wordcount_job: WasmJob
) -> None:
    with WasmExecutor() as wasm:
        runner = make_runner({"wasm": wasm})
        assert wasm.cached_modules == 0
        assert runner.precheck(terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid).verdict is Verdict.RUN
        assert wasm.cached_modules == 1
        outcome = runner.run(
            job_id=1, terms=wordcount_job.terms, spec_cid=wordcount_job.spec_cid, seed=SEED, price=PRICE
        )
        assert outcome.failure is None and wasm.cached_modules == 1


# ------------------------------------------------------------- how a run ended: the table


def _spec(executor: str, **limits: Any) -> JobSpec:
    return JobSpec(version=1, executor=executor, artifact=CLIENT_CID, limits=Limits(**limits))  # type: ignore[arg-type]


CLIENT_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def _result(
    executor: str, *, usage: int = 700, error: str | None = None, stop: StopReason | None = None
) -> ExecutionResult:
    return ExecutionResult(
        executor=executor, artifact_digest="sha256:x", exit_code=-1 if error else 0, usage=usage,
        fuel=usage if executor == "wasm" else None, cpu_ms=usage if executor == "docker" else None,
        peak_memory=None, wall_ms=5, bytes_in=0, bytes_out=0, error=error, stopped_by=stop,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("executor", "limits", "max_units", "result", "output", "expected"),
    [
        ("wasm", {}, 10**6, _result("wasm"), 0, (None, True, 700)),
        ("wasm", {}, 10**6, _result("wasm", error="trap: unreachable"), 0, ("trap", True, 700)),
        ("wasm", {}, 10**6, _result("wasm", usage=10**6, stop=StopReason.FUEL), 0, ("unit_limit", True, 10**6)),
        ("wasm", {"timeout_s": 1}, 10**12, _result("wasm", stop=StopReason.FUEL), 0, ("time_limit", True, 500_000_000)),
        ("wasm", {}, 10**6, _result("wasm", error="memory", stop=StopReason.MEMORY), 0, ("memory_limit", True, 700)),
        ("wasm", {"output_mb": 1}, 10**6, _result("wasm", stop=StopReason.OUTPUT), 0, ("output_limit", False, 10**6)),
        ("wasm", {"output_mb": 1}, 10**6, _result("wasm"), (1 << 20) + 1, ("output_limit", False, 10**6)),
        ("wasm", {"output_mb": 1}, 10**6, _result("wasm"), 1 << 20, (None, True, 700)),
        ("wasm", {}, 10**6, _result("wasm", usage=0, error="the module is not a WASI command"), 0,
         ("artifact_invalid", False, 0)),
        ("docker", {}, 60_000, _result("docker"), 0, (None, True, 700)),
        ("docker", {"timeout_s": 2, "cpus": 1.5}, 60_000, _result("docker", stop=StopReason.TIMEOUT), 0,
         ("time_limit", False, 3000)),
        ("docker", {"timeout_s": 100}, 60_000, _result("docker", stop=StopReason.TIMEOUT), 0,
         ("time_limit", False, 60_000)),
        ("docker", {}, 60_000, _result("docker", usage=60_000, stop=StopReason.FUEL), 0, ("unit_limit", False, 60_000)),
        ("docker", {}, 60_000, _result("docker", stop=StopReason.MEMORY), 0, ("memory_limit", False, 700)),
        ("docker", {}, 60_000, _result("docker", stop=StopReason.OUTPUT), 0, ("output_limit", False, 60_000)),
        ("docker", {}, 60_000, _result("docker", usage=0, error="image rejected"), 0, ("artifact_invalid", False, 0)),
        ("docker", {}, 60_000, _result("docker", usage=3, error="container could not start: no sh"), 0,
         ("start_failed", False, 3)),
    ],
)  # fmt: skip
def test_how_a_run_ended_decides_what_the_result_keeps_and_bills(
    executor: str,
    limits: dict[str, Any],
    max_units: int,
    result: ExecutionResult,
    output: int,
    expected: tuple[str | None, bool, int],
    tmp_path: Path,
) -> None:
    spec = _spec(executor, **limits)
    kind = ExecutorKind.WASM if executor == "wasm" else ExecutorKind.DOCKER
    terms = terms_for(CLIENT_CID, executor=kind, max_units=max_units)
    request = ExecutionRequest(
        job_id=1, artifact=tmp_path, artifact_cid=CLIENT_CID, args=(), inputs_dir=tmp_path, outputs_dir=tmp_path,
        seed=SEED, max_units=spec.unit_limit(terms), memory_limit=1 << 20, timeout=float(spec.limits.timeout_s),
        max_output_bytes=spec.limits.output_bytes,
    )  # fmt: skip

    ending = _ending(spec, terms, request, result, output)

    assert (ending.reason, ending.keep_outputs, ending.usage) == expected
    assert (ending.message is None) == (expected[0] is None)
