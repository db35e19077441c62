"""The client SDK end to end: a real anvil chain, three real ``compute-node run`` daemons, real Wasm.

A client submits a word-count job through :class:`chain_scheduler.Client`, waits
for it, fetches the outputs and reads the receipt; a job nobody can take times
out and ``wait`` says why. The chain and daemon helpers are the provider node's
e2e helpers (tests/compute_node/test_node.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain_scheduler import Capability, Client, FailReason, InputRef, JobSpec, JobStatus, Limits, errors
from chain_scheduler._anvil import advance_time
from storage._car import write_car
from storage._cid import DAG_PB, RAW, Cid
from storage._unixfs import PBLink, encode_directory

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "compute_node"))
from test_node import (  # type: ignore[import-not-found]  # noqa: E402
    COLLATERAL,
    TEXT,
    Chain,
    Daemon,
    devnet_account,
    expected_total_line,
    market_on_anvil,
    register,
    wait_for,
)

CHALLENGE_WINDOW = 5
PRICES = {2: 2, 3: 3, 4: 4}  # devnet account index -> bid price (wei per unit of fuel)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wordcount_module() -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Wasm examples failed:\n{proc.stderr}", pytrace=False)
    return ROOT / "examples" / "wasm" / "build" / "wordcount.wasm"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with market_on_anvil(tmp_path_factory.mktemp("client-e2e")) as c:
        yield c


@pytest.fixture
def client(chain: Chain) -> Iterator[Client]:
    with Client(
        rpc_url=chain.node.url,
        contract=chain.market.address,
        key=devnet_account(1),
        store=f"local:{chain.store_path}",
    ) as c:
        yield c


@pytest.fixture
def daemons(chain: Chain) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop_quietly()


def test_the_constructor_does_no_io() -> None:
    # A node that does not exist: nothing is contacted until connect().
    client = Client(rpc_url="http://127.0.0.1:9", contract="0x" + "11" * 20, key="0x" + "22" * 20, store="local:/x")
    with pytest.raises(RuntimeError, match="connect"):
        _ = client.market
    with pytest.raises(errors.ChainUnavailable, match="did not answer"):
        client.connect()


def test_submit_wait_fetch_and_receipt_with_three_daemons(
    chain: Chain, client: Client, daemons: list[Daemon], wordcount_module: Path, tmp_path: Path
) -> None:
    # Given three registered providers, each running its own daemon at its own price
    register(chain, *PRICES)
    daemons += [Daemon(chain=chain, index=i, name=f"sdk{i}", price=p).start() for i, p in PRICES.items()]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text.txt").write_text(TEXT)

    # When the client submits a k=3 m=2 word count through the SDK
    job = client.submit(
        module=wordcount_module,
        inputs={"text": corpus},
        k=3,
        m=2,
        max_price=5,
        max_units=50_000_000,
        collateral=COLLATERAL,
        fill_timeout=60,
        exec_timeout=60,
        reveal_window=60,
        challenge_window=CHALLENGE_WINDOW,
    )

    # Then it succeeds, and its result is readable before the challenge window ends
    assert job.status().status in (JobStatus.OPEN, JobStatus.RUNNING, JobStatus.REVEALING, JobStatus.SUCCEEDED)
    try:
        assert job.wait(timeout=60, poll=0.2).status == JobStatus.SUCCEEDED
    except errors.WaitTimeout:
        pytest.fail("\n".join(f"---- {d.name}\n{d.log()[-4000:]}" for d in daemons))
    early_cid = job.result_cid()
    with pytest.raises(errors.ResultNotReady, match="Succeeded"):
        job.receipt()

    # And once the clock passes the challenge window a daemon finalizes it (waited on asynchronously)
    advance_time(chain.w3, CHALLENGE_WINDOW + 1)
    final = asyncio.run(job.wait_async(timeout=30, poll=0.2, until=JobStatus.FINALIZED))
    assert final.status == JobStatus.FINALIZED
    assert job.result_cid() == early_cid

    # And the fetched outputs hold the right word count
    outputs = job.fetch(tmp_path / "result")
    assert (outputs / "wc.txt").read_text().strip().splitlines()[-1] == expected_total_line()

    # And the receipt shows every provider paid its own price × the metered units
    receipt = job.receipt()
    assert receipt.result_cid == early_cid
    assert {p.provider: p.price for p in receipt.providers} == {d.address: d.price for d in daemons}
    units = receipt.consensus["usage"]
    assert units > 0 and receipt.consensus["exit_code"] == 0 and receipt.consensus["executor"] == "wasm"
    for p in receipt.providers:
        assert p.units == units
        assert p.amount == p.price * p.units
    assert receipt.paid == sum(p.amount for p in receipt.providers) == sum(PRICES.values()) * units
    assert receipt.refund == receipt.escrow - receipt.paid
    assert receipt.escrow == 3 * 50_000_000 * 5


def test_wait_on_a_job_nobody_can_take_raises_job_failed_with_the_reason(
    chain: Chain, client: Client, wordcount_module: Path
) -> None:
    # Given a job that needs a GPU, which no registered provider has
    job = client.submit(
        module=wordcount_module,
        capabilities=Capability.GPU,
        max_price=2,
        max_units=1_000_000,
        collateral=COLLATERAL,
        fill_timeout=30,
    )

    # Then waiting for it gives up with a clear timeout, and it has no result yet
    with pytest.raises(errors.WaitTimeout, match=f"Job {job.job_id} is still Open") as waited:
        job.wait(timeout=0.3, poll=0.1)
    assert waited.value.status == JobStatus.OPEN
    with pytest.raises(errors.ResultNotReady, match="Open"):
        job.result_cid()

    # When its fill timeout passes and someone calls timeout (a daemon's keeper may get there first)
    advance_time(chain.w3, 31)
    with contextlib.suppress(errors.JobStateError):
        chain.market.timeout(job.job_id)
    wait_for("the job to fail", lambda: job.status().status == JobStatus.FAILED, timeout=10)

    # Then wait raises JobFailed naming the reason and the refund
    with pytest.raises(errors.JobFailed, match="not enough providers bid") as failed:
        job.wait(timeout=5)
    assert failed.value.job_id == job.job_id
    assert failed.value.reason == FailReason.NOT_FILLED
    assert failed.value.refund == 1_000_000 * 2
    with pytest.raises(errors.JobFailed):
        job.fetch(Path("/nonexistent/never-written"))
    assert client.market.credit_of(devnet_account(1).address) >= failed.value.refund


def test_submit_refuses_a_job_every_provider_would_fail_and_force_posts_it(
    chain: Chain, client: Client, wordcount_module: Path, tmp_path: Path
) -> None:
    before = client.market.job_count()
    balance = client.market.w3.eth.get_balance(client.address)
    terms = {"max_price": 2, "max_units": 10**6, "collateral": COLLATERAL}

    # A README as the module, a module with no _start, a Docker image that is no tarball, a time limit
    # that does not fit half the commit window: refused before any wei is locked
    no_start = tmp_path / "library.wasm"
    no_start.write_bytes(b"\0asm\x01\x00\x00\x00")  # a valid, empty module: nothing to run
    cases = [
        ({"module": ROOT / "README.md"}, "README.md: it is not a Wasm module"),
        ({"module": no_start}, "it is not a WASI command: it exports no _start function"),
        ({"image": ROOT / "README.md"}, "it is not a docker save tarball"),
        ({"module": wordcount_module, "limits": Limits(timeout_s=30), "max_units": 10**11, "exec_timeout": 10},
         "more than half of exec_timeout=10 s"),
    ]  # fmt: skip
    for program, message in cases:
        with pytest.raises(errors.SpecError, match=message) as refused:
            client.submit(**(terms | program))  # type: ignore[arg-type]
        assert "nothing was posted; force=True posts it anyway" in str(refused.value)
    # A spec naming an input tree with a name listed twice, already in the store
    spec = JobSpec(version=1, executor="wasm", artifact=str(client.store.put_file(wordcount_module)),
                   inputs=[InputRef(cid=_twice_named_tree(client), path="text")])  # fmt: skip
    with pytest.raises(errors.SpecError, match=r"Input 'text' .* cannot be unpacked safely.*'same' twice"):
        client.submit(spec, **terms)
    assert client.market.job_count() == before
    assert client.market.w3.eth.get_balance(client.address) == balance  # not even gas

    # force=True posts it: the providers will agree on a failure result, paid the floor
    forced = client.submit(spec, **terms, min_units=500, force=True)
    assert forced.status().status == JobStatus.OPEN
    assert forced.terms().min_units == 500
    with pytest.raises(ValueError, match="min_units=11 must be between 0 and max_units=10"):
        client.submit(module=wordcount_module, max_price=1, max_units=10, min_units=11, collateral=COLLATERAL)


def _twice_named_tree(client: Client) -> str:
    """A directory listing one name twice: the importer never makes one, only a CAR can carry it."""
    one, two = Cid.of_block(RAW, b"one"), Cid.of_block(RAW, b"two")
    root_block = encode_directory([PBLink(one, b"same", 3), PBLink(two, b"same", 3)])
    root = Cid.of_block(DAG_PB, root_block)
    car = io.BytesIO()
    write_car(car, [root], [(root, root_block), (one, b"one"), (two, b"two")])
    car.seek(0)
    client.store.import_car(car)
    return root.text()


def test_timeout_moves_an_expired_open_job(chain: Chain, client: Client, wordcount_module: Path) -> None:
    # Given a job no provider can take
    job = client.submit(module=wordcount_module, capabilities=Capability.GPU, max_price=2, max_units=10**6,
                        collateral=COLLATERAL, fill_timeout=20)  # fmt: skip

    # Then timing it out early sends nothing and says why; once expired, it fails with a refund
    with pytest.raises(errors.DeadlineNotReached, match=f"Job {job.job_id}'s phase deadline"):
        job.timeout()
    advance_time(chain.w3, 21)
    try:
        moved = job.timeout()
    except errors.WrongStatus:  # a daemon's keeper got there first
        moved = job.status()
    assert moved.status == JobStatus.FAILED
    with pytest.raises(errors.WrongStatus, match="is Failed"):
        job.timeout()


def _docker_save_tarball(path: Path, *, tamper: bool = False) -> Path:
    """A one-layer image in ``docker save`` layout: manifest.json, <sha256 of config>.json, the layer."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as rootfs:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        rootfs.addfile(info, io.BytesIO(b"hello\n"))
    layer_bytes = layer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        }
    )
    digest = hashlib.sha256(config.encode()).hexdigest()
    if tamper:  # edited after it was filed under its digest
        config = config.replace("/bin/true", "/bin/evil")
    manifest = json.dumps([{"Config": f"{digest}.json", "RepoTags": None, "Layers": ["layer/layer.tar"]}])
    with tarfile.open(path, "w") as out:
        for name, data in (
            ("manifest.json", manifest.encode()),
            (f"{digest}.json", config.encode()),
            ("layer/layer.tar", layer_bytes),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def test_a_docker_tarball_is_checked_like_the_providers_check_it(tmp_path: Path) -> None:
    from chain_scheduler._client import _artifact_problem

    assert _artifact_problem("docker", _docker_save_tarball(tmp_path / "image.tar")) is None
    problem = _artifact_problem("docker", _docker_save_tarball(tmp_path / "tampered.tar", tamper=True))
    assert problem is not None and "its image config does not hash to sha256:" in problem
    assert _artifact_problem("docker", ROOT / "README.md") == (
        "it is not a docker save tarball (not a tar archive, plain or compressed)"
    )
