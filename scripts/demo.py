"""The chain-scheduler demo: a real local market at work, one cheat among five providers.

What it does, every part real (nothing is simulated):
  1. starts a devnet under ``.devnet-demo/``: an anvil chain node, the market
     contract, the embedded content store, a Docker engine (unless one runs), and
     five provider daemons (``compute-node run``): four honest, one that cheats
     (``--behaviour wrong``: it runs the job, then alters one byte of the output)
     and asks the lowest price;
  2. as a client (``chain_scheduler.Client``), submits a batch of jobs: Wasm
     programs (word count, SHA-256 of the inputs, Monte Carlo pi with the shared
     seed, a nonce miner) and a Docker job (busybox word count), each with k=3
     replicas of which m=2 must agree, and a bid window so the cheapest three
     bids win: the cheat lands in the jobs;
  3. follows the jobs on chain as the daemons bid, run, commit and reveal;
  4. prints each verified result, who was paid what (price x units), the cheat's
     slashed collateral and reputation, the client's refund, and the gas of every
     transaction sent to the contract;
  5. stops everything it started, also on Ctrl-C or an error.

Run: ``make demo`` (or ``.venv/bin/python scripts/demo.py [--quick] [--no-docker]``).
The devnet's logs stay in ``.devnet-demo/logs`` for a look afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from web3 import Web3  # noqa: E402

from chain_scheduler import Client, JobHandle, JobReceipt, JobStatus, Market, Workflow, WorkflowEvent  # noqa: E402
from chain_scheduler._devnet import Devnet  # noqa: E402

ETH = 10**18
K, M = 3, 2  # replicas per job, and how many must agree
COLLATERAL = ETH // 100  # each provider locks this per slot; a cheat loses it
BID_WINDOW = 4  # seconds: the cheapest k bids made within it win the slots
MAX_PRICE = 5  # wei per unit the client pays at most
WASM_UNITS = 2_000_000_000  # fuel, per replica at most
DOCKER_UNITS = 10_000  # CPU milliseconds, per replica at most
WASM_DIR = ROOT / "examples" / "wasm" / "build"
DOCKER_DIR = ROOT / "examples" / "docker"
TEXTS = DOCKER_DIR / "inputs"
IMAGE = DOCKER_DIR / "busybox.tar"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider daemon of the demo: its conduct and the price it asks (wei per unit)."""

    index: int
    behaviour: str
    price: int


#: Four honest providers and a cheat that undercuts them all, so it wins a slot in every job.
PROVIDERS = (
    ProviderSpec(0, "honest", 2),
    ProviderSpec(1, "honest", 2),
    ProviderSpec(2, "honest", 2),
    ProviderSpec(3, "honest", 3),
    ProviderSpec(4, "wrong", 1),
)
CHEAT = 4


@dataclass(frozen=True, slots=True)
class DemoJob:
    """A job of the batch.

    Attributes:
        name: What it is, for people.
        module: A Wasm module, or None for a Docker job.
        image: A ``docker save`` tarball, or None for a Wasm job.
        args: Its command-line arguments.
        show: The output file whose last line the demo prints.
    """

    name: str
    module: Path | None = None
    image: Path | None = None
    args: tuple[str, ...] = ()
    show: str = "stdout"

    @property
    def executor(self) -> str:
        return "wasm" if self.module is not None else "docker"


def demo_jobs(*, quick: bool = False, docker: bool = True) -> list[DemoJob]:
    """The batch: Wasm jobs, and the Docker job when ``docker``; ``quick`` keeps two Wasm jobs."""
    jobs = [
        DemoJob("word count (wasm)", module=WASM_DIR / "wordcount.wasm", show="wc.txt"),
        DemoJob("pi, 2M samples from the shared seed (wasm)", module=WASM_DIR / "pi.wasm", args=("2000000",)),
    ]
    if not quick:
        jobs += [
            DemoJob("sha256 of the inputs (wasm)", module=WASM_DIR / "sha256sum.wasm"),
            DemoJob(
                "nonce with 16 zero bits (wasm)",
                module=WASM_DIR / "miner.wasm",
                args=("chainsched", "16"),
                show="nonce.json",
            ),
        ]
    if docker:
        jobs.append(DemoJob("word count (docker, busybox)", image=IMAGE, show="counts.tsv"))
    return jobs


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What the chain and the store say about a finished job.

    Attributes:
        job: The demo job.
        handle: Its SDK handle.
        receipt: Who was paid what (``JobHandle.receipt``).
        line: The last line of its ``show`` output.
        slashed: (provider, slot, wei) of every slot whose collateral was taken.
        revealed: Provider -> the result CID it revealed (or the hash it revealed sealed).
        displaced: Providers a cheaper bid pushed out during the bid window.
        seconds: From posting to Finalized.
    """

    job: DemoJob
    handle: JobHandle
    receipt: JobReceipt
    line: str
    slashed: tuple[tuple[str, int, int], ...]
    displaced: tuple[str, ...]
    seconds: float
    revealed: dict[str, str] = field(default_factory=dict)

    @property
    def slash_share(self) -> int:
        """What each paid provider got from the slash pool (the client gets the rest)."""
        return sum(s[2] for s in self.slashed) // (len(self.receipt.providers) + 1)

    @property
    def client_slash_share(self) -> int:
        return sum(s[2] for s in self.slashed) - self.slash_share * len(self.receipt.providers)


@dataclass
class Names:
    """Readable names for the addresses the demo meets."""

    labels: dict[str, str] = field(default_factory=dict)

    def __call__(self, address: str) -> str:
        return self.labels.get(Web3.to_checksum_address(address), _short(address))


# ------------------------------------------------------------------ the market


def prepare_examples(*, docker: bool) -> None:
    """Build the Wasm examples (a no-op when up to date) and the busybox image when missing."""
    python = sys.executable
    subprocess.run([python, str(ROOT / "scripts" / "build_examples.py"), "--quiet", "--wasm-only"], check=True)
    if docker and not IMAGE.exists():
        subprocess.run([python, str(ROOT / "scripts" / "build_busybox_image.py"), "--output", str(IMAGE)], check=True)


def start_market(
    root: Path, *, docker: bool, providers: Sequence[ProviderSpec] = PROVIDERS, poll_interval: float = 0.2
) -> tuple[Devnet, dict[str, Any]]:
    """A fresh devnet under ``root`` with the demo's providers; returns it and its record."""
    net = Devnet(root=root, port=0, poll_interval=poll_interval, capacity=8, state_interval=2, stop_timeout=20)
    net.down()  # a demo interrupted earlier may have left processes behind
    shutil.rmtree(root, ignore_errors=True)
    try:
        record = net.up(
            providers=len(providers),
            bad={p.index: p.behaviour for p in providers if p.behaviour != "honest"},
            prices={p.index: p.price for p in providers},
            docker=docker,
        )
    except BaseException:
        net.down()  # whatever came up before the failure (or the Ctrl-C)
        raise
    return net, record


def names_for(record: dict[str, Any], client: Client) -> Names:
    names = Names()
    for p in record["providers"]:
        tag = "CHEAT" if p["behaviour"] != "honest" else "honest"
        names.labels[Web3.to_checksum_address(p["address"])] = f"node-{p['index']} ({tag})"
    names.labels[Web3.to_checksum_address(client.address)] = "client"
    names.labels[Web3.to_checksum_address(record["deployer"])] = "deployer"
    return names


# -------------------------------------------------------------------- the jobs


def submit_all(client: Client, jobs: Sequence[DemoJob]) -> list[tuple[DemoJob, JobHandle, float]]:
    """Post every job (k=3, m=2, a bid window, no challenge window); (job, handle, posted at)."""
    submitted = []
    for job in jobs:
        handle = client.submit(
            module=job.module,
            image=job.image,
            inputs={"texts": TEXTS},
            args=job.args,
            k=K,
            m=M,
            max_price=MAX_PRICE,
            max_units=WASM_UNITS if job.module is not None else DOCKER_UNITS,
            collateral=COLLATERAL,
            bid_window=BID_WINDOW,
            fill_timeout=60,
            exec_timeout=60,
            reveal_window=60,
            challenge_window=0,  # settled at the last reveal: no waiting for a challenge
            description=job.name,
        )
        submitted.append((job, handle, time.monotonic()))
    return submitted


def follow(
    submitted: Sequence[tuple[DemoJob, JobHandle, float]],
    *,
    timeout: float,
    say: Callable[[str], None],
    poll: float = 0.25,
) -> dict[int, float]:
    """Print each job's status changes until all are Finalized; job id -> seconds it took.

    Raises:
        RuntimeError: a job failed or ``timeout`` passed first (the message says which).
    """
    start = time.monotonic()
    seen: dict[int, JobStatus] = {}
    took: dict[int, float] = {}
    while len(took) < len(submitted):
        for job, handle, posted in submitted:
            if handle.job_id in took:
                continue
            status = handle.status().status
            if seen.get(handle.job_id) != status:
                seen[handle.job_id] = status
                say(f"  [{time.monotonic() - start:5.1f} s] job {handle.job_id} {job.name}: {status.name.title()}")
            if status == JobStatus.FINALIZED:
                took[handle.job_id] = time.monotonic() - posted
            elif status.terminal:
                raise RuntimeError(f"job {handle.job_id} ({job.name}) ended {status.name}: see the devnet logs")
        if time.monotonic() - start > timeout:
            late = [f"{h.job_id} ({seen.get(h.job_id)})" for _, h, _ in submitted if h.job_id not in took]
            raise RuntimeError(f"jobs {', '.join(late)} not Finalized after {timeout:.0f} s: see the devnet logs")
        if len(took) < len(submitted):
            time.sleep(poll)
    return took


def collect(
    client: Client, submitted: Sequence[tuple[DemoJob, JobHandle, float]], took: dict[int, float], work: Path
) -> list[JobOutcome]:
    """Read each finished job's receipt, result, slashes and displaced bids."""
    outcomes = []
    for job, handle, _ in submitted:
        receipt = handle.receipt()
        outputs = handle.fetch(work / f"job-{handle.job_id}")
        text = (outputs / job.show).read_text(errors="replace").strip()
        events = client.market.events(
            from_block=handle.from_block,
            names=("SlotSlashed", "BidDisplaced", "ResultRevealed", "ResultSealed"),
            job_id=handle.job_id,
        )
        outcomes.append(
            JobOutcome(
                job=job,
                handle=handle,
                receipt=receipt,
                line=" ".join(text.splitlines()[-1].split()) if text else "",
                slashed=tuple(
                    (str(e.args["provider"]), int(e.args["slot"]), int(e.args["amount"]))
                    for e in events
                    if e.name == "SlotSlashed"
                ),
                displaced=tuple(str(e.args["provider"]) for e in events if e.name == "BidDisplaced"),
                seconds=took[handle.job_id],
                revealed={
                    # A job with verifiers has its main results revealed sealed: only the hash is public.
                    str(e.args["provider"]): str(e.args["resultCid"])
                    if e.name == "ResultRevealed"
                    else f"sealed 0x{bytes(e.args['resultHash']).hex()[:16]}…"
                    for e in events
                    if e.name in ("ResultRevealed", "ResultSealed")
                },
            )
        )
    return outcomes


def run_mapreduce(console: Console, client: Client, names: Names) -> None:
    """The MapReduce word count (examples/workflows/mapreduce.yaml): four map jobs, then a reduce over their results.

    The reduce job names the map jobs as parents: it is posted at once, and the
    contract lets providers bid for it only once every map job is Finalized.
    """
    workflow = Workflow.load(ROOT / "examples" / "workflows" / "mapreduce.yaml")
    console.print(
        f"workflow {workflow.name!r}: {len(list((ROOT / 'examples' / 'mapreduce' / 'corpus').glob('part-*.txt')))} "
        "map jobs (wordfreq.wasm, one corpus part each) in parallel, one reduce job (merge.wasm) over their "
        "counts; every job k=3, m=2"
    )

    def progress(event: WorkflowEvent) -> None:
        if event.kind == "posted" or (event.kind == "status" and event.status == JobStatus.FINALIZED):
            console.print(f"  {event.message}")

    with tempfile.TemporaryDirectory(prefix="chainsched-mapreduce-") as work:
        result = workflow.run(client, out=Path(work) / "out", timeout=300, poll=0.2, on_event=progress)
        table = Table(title="MapReduce jobs (verified results)")
        for column in ("stage", "job", "parents", "result CID", "paid (wei)", "slashed"):
            table.add_column(column)
        for stage in result.stages.values():
            for job in stage.jobs:
                slashed = ", ".join(names(x.provider) for x in job.receipt.slashed) or "-"
                parents = ", ".join(map(str, job.parents)) or "-"
                table.add_row(stage.name, str(job.job_id), parents, job.result_cid, f"{job.receipt.paid:,}", slashed)
        console.print(table)
        (reduce_job,) = result["reduce"].jobs
        assert reduce_job.outputs is not None
        top = (reduce_job.outputs / "top.txt").read_text().split()
    words = ", ".join(f"{top[i + 1]} {int(top[i]):,}" for i in range(0, len(top), 2))
    console.print(f"the corpus's commonest words (the reduce job's verified top.txt): {words}")
    console.print(
        f"MapReduce: {len(result['map'].jobs) + 1} jobs in {result.elapsed:.1f} s, paid {result.paid:,} wei "
        f"to providers, {result.refund:,} wei refunded to the client's credit"
    )


# ------------------------------------------------------------------------- gas


@dataclass(frozen=True, slots=True)
class GasLine:
    """Gas of one contract function (or the deployment) over the demo."""

    function: str
    calls: int
    gas: int
    reverted: int = 0


def gas_spent(market: Market, *, from_block: int = 0, to_block: int | None = None) -> list[GasLine]:
    """Gas used by every transaction to the contract (and its deployment), by function.

    Reads every block's transactions and receipts between ``from_block`` and
    ``to_block`` (default: the head) and sums ``gasUsed``.
    """
    w3 = market.w3
    last = w3.eth.block_number if to_block is None else to_block
    calls: dict[str, int] = defaultdict(int)
    gas: dict[str, int] = defaultdict(int)
    reverted: dict[str, int] = defaultdict(int)
    for number in range(from_block, last + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        receipts = {_tx_key(r["transactionHash"]): r for r in w3.eth.get_block_receipts(number)}
        for tx in block["transactions"]:
            assert not isinstance(tx, bytes)
            receipt = receipts[_tx_key(tx["hash"])]
            if tx.get("to") is None:
                if receipt.get("contractAddress") != market.address:
                    continue
                name = "(deploy)"
            elif Web3.to_checksum_address(tx["to"]) == market.address:
                try:
                    fn, _ = market.contract.decode_function_input(tx["input"])
                    name = str(fn.fn_name)
                except ValueError:
                    name = "(unknown)"
            else:
                continue
            calls[name] += 1
            gas[name] += int(receipt["gasUsed"])
            reverted[name] += int(receipt["status"]) == 0
    return sorted((GasLine(n, calls[n], gas[n], reverted[n]) for n in calls), key=lambda g: -g.gas)


def _tx_key(value: Any) -> str:
    """A transaction hash as lower-case hex, whatever web3 returned it as."""
    return (value.hex() if isinstance(value, bytes) else str(value)).lower().removeprefix("0x")


# ----------------------------------------------------------------------- print


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def _eth(wei: int) -> str:
    return f"{wei / ETH:.4f} ETH"


def print_market(console: Console, net: Devnet, record: dict[str, Any], names: Names) -> None:
    status = net.status()
    console.print(
        f"anvil {record['rpc_url']} (chain {record['chain_id']}), contract {record['contract']}\n"
        f"store {record['store_url']}"
        + (
            f"\nDocker engine: {'started by the devnet' if record.get('docker_started') else 'already running'}"
            if record.get("docker")
            else ""
        )
    )
    table = Table(title="providers (staked, each its own daemon process)", title_justify="left")
    for col in ("provider", "address", "behaviour", "price", "stake", "capabilities", "pid"):
        table.add_column(col, justify="right" if col in ("price", "pid") else "left")
    for p in status.providers:
        behaviour = "honest" if p.behaviour == "honest" else f"[bold red]{p.behaviour}[/] (alters its output)"
        table.add_row(
            names(p.address),
            p.address,
            behaviour,
            f"{p.price} wei/unit",
            _eth(p.stake_free or 0),
            ",".join(p.capabilities),
            str(p.pid),
        )
    console.print(table)


def print_submitted(console: Console, submitted: Sequence[tuple[DemoJob, JobHandle, float]], client: Client) -> None:
    table = Table(title=f"jobs posted by the client {client.address}", title_justify="left")
    for col in ("job", "what", "executor", "spec CID", "escrow"):
        table.add_column(col)
    for job, handle, _ in submitted:
        escrow = client.market.job_posted(handle.job_id).args["escrow"]
        table.add_row(str(handle.job_id), job.name, job.executor, handle.spec_cid or "", f"{int(escrow):,} wei")
    console.print(table)


def print_results(console: Console, outcomes: Sequence[JobOutcome]) -> None:
    table = Table(title="verified results (the CID the chain sealed; m=2 replicas agreed)", title_justify="left")
    table.add_column("job")
    table.add_column("what")
    table.add_column("result CID", no_wrap=True, min_width=59)
    table.add_column("output (last line)", no_wrap=True, overflow="ellipsis", max_width=44)
    table.add_column("time", no_wrap=True)
    for o in outcomes:
        table.add_row(
            str(o.handle.job_id), o.job.name, o.receipt.result_cid, f"{o.job.show}: {o.line}", f"{o.seconds:.1f} s"
        )
    console.print(table)


def print_payments(console: Console, outcomes: Sequence[JobOutcome], names: Names) -> None:
    table = Table(
        title="who was paid what: price x units = amount (units: Wasm fuel, Docker CPU-ms)", title_justify="left"
    )
    for col in ("job", "provider", "slot", "price", "units", "amount", "check", "+ slash share"):
        table.add_column(col, justify="left" if col in ("provider",) else "right")
    for o in outcomes:
        for p in o.receipt.providers:
            ok = "[green]= price x units[/]" if p.amount == p.price * p.units * p.votes else "[red]MISMATCH[/]"
            table.add_row(
                str(o.handle.job_id),
                names(p.provider),
                str(p.slot),
                str(p.price),
                f"{p.units:,}",
                f"{p.amount:,} wei",
                ok,
                _eth(o.slash_share) if o.slashed else "-",
            )
        for provider in o.displaced:
            table.add_row(str(o.handle.job_id), names(provider), "-", "", "", "outbid", "", "")
    console.print(table)


def print_cheats(console: Console, outcomes: Sequence[JobOutcome], market: Market, names: Names) -> None:
    table = Table(title="slashed: results that disagreed with the majority", title_justify="left")
    for col in (
        "job",
        "provider",
        "slot",
        "the result it revealed (not the accepted one)",
        "collateral lost",
        "shared by",
    ):
        table.add_column(col)
    for o in outcomes:
        for provider, slot, amount in o.slashed:
            winners = ", ".join(names(p.provider) for p in o.receipt.providers)
            table.add_row(
                str(o.handle.job_id),
                names(provider),
                str(slot),
                o.revealed.get(provider, "(none)"),
                _eth(amount),
                f"client, {winners}",
            )
    if not table.rows:
        table.add_row("-", "nobody was slashed (the cheat won no slot)", "", "", "", "")
    console.print(table)
    reputation = Table(title="reputation on chain (contract counters)", title_justify="left")
    for col in ("provider", "succeeded", "slashed", "stake free", "stake locked"):
        reputation.add_column(col, justify="left" if col == "provider" else "right")
    for address, label in names.labels.items():
        if not label.startswith("node-"):
            continue
        info = market.provider(address)
        style = "bold red" if info.slashed else ""
        reputation.add_row(
            label,
            str(info.succeeded),
            f"[{style}]{info.slashed}[/]" if style else "0",
            _eth(info.free),
            _eth(info.locked),
        )
    console.print(reputation)


def print_client(console: Console, outcomes: Sequence[JobOutcome], withdrawn: int) -> None:
    escrow = sum(o.receipt.escrow for o in outcomes)
    paid = sum(o.receipt.paid for o in outcomes)
    refund = sum(o.receipt.refund for o in outcomes)
    shares = sum(o.client_slash_share for o in outcomes)
    console.print(
        f"the client locked {escrow:,} wei of escrow (worst case: k x max units x max price per job),\n"
        f"  paid providers {paid:,} wei, got {refund:,} wei refunded and {_eth(shares)} of slashed collateral;\n"
        f"  it withdrew {_eth(withdrawn)} ({withdrawn:,} wei) with one withdraw()."
    )


def print_gas(console: Console, lines: Sequence[GasLine], *, jobs: int) -> None:
    table = Table(title="gas of every transaction to the contract during the demo", title_justify="left")
    for col in ("function", "transactions", "reverted", "gas", "gas per tx"):
        table.add_column(col, justify="left" if col == "function" else "right")
    for g in lines:
        table.add_row(g.function, str(g.calls), str(g.reverted or ""), f"{g.gas:,}", f"{g.gas // g.calls:,}")
    total_calls, total_gas = sum(g.calls for g in lines), sum(g.gas for g in lines)
    table.add_row("[bold]total[/]", f"[bold]{total_calls}[/]", "", f"[bold]{total_gas:,}[/]", "")
    console.print(table)
    setup = sum(g.gas for g in lines if g.function in ("(deploy)", "register"))
    console.print(
        f"{total_gas - setup:,} gas for the jobs themselves (without deploying and registering), "
        f"{(total_gas - setup) // max(jobs, 1):,} per job of k={K} replicas, "
        "reverted ones included (a bid no longer competitive, a keeper call another keeper beat)."
    )


def print_verdict(console: Console, outcomes: Sequence[JobOutcome], names: Names) -> None:
    caught = sum(1 for o in outcomes if any(names(p).endswith("(CHEAT)") for p, _, _ in o.slashed))
    fair = all(p.amount == p.price * p.units * p.votes for o in outcomes for p in o.receipt.providers)
    honest_paid = all(not names(p.provider).endswith("(CHEAT)") for o in outcomes for p in o.receipt.providers)
    console.print(
        f"[bold]verdict[/]: the cheat was slashed in {caught} of {len(outcomes)} jobs and paid in none"
        f"{'' if honest_paid else ' [red](it was paid!)[/]'}; every paid replica got "
        f"{'exactly price x units' if fair else '[red]something else than price x units[/]'}; "
        "every result above is the one two honest replicas agreed on."
    )


# ------------------------------------------------------------------------ main


def run(
    console: Console,
    net: Devnet,
    record: dict[str, Any],
    client: Client,
    jobs: Sequence[DemoJob],
    timeout: float,
    phases: dict[str, float] | None = None,
    *,
    mapreduce: bool = True,
) -> list[JobOutcome]:
    """Everything after the market is up: submit, follow, report, MapReduce, gas. Returns the batch's outcomes."""
    say = console.print
    names = names_for(record, client)
    print_market(console, net, record, names)

    console.rule(f"[bold]2. the client submits {len(jobs)} jobs: k={K} replicas, m={M} must agree")
    say(
        f"each job has a {BID_WINDOW} s bid window: the {K} cheapest bids win its slots, so the cheat "
        f"(node-{CHEAT}, {PROVIDERS[CHEAT].price} wei/unit) lands in every job; "
        "no challenge window: the last reveal settles it."
    )
    t = time.monotonic()
    submitted = submit_all(client, jobs)
    print_submitted(console, submitted, client)

    console.rule("[bold]3. the providers bid, run, commit and reveal (statuses read from the chain)")
    took = follow(submitted, timeout=timeout, say=say)
    if phases is not None:
        phases["jobs"] = time.monotonic() - t
    with tempfile.TemporaryDirectory(prefix="chainsched-demo-") as work:
        outcomes = collect(client, submitted, took, Path(work))

    console.rule("[bold]4. results, payments and the cheat")
    print_results(console, outcomes)
    print_payments(console, outcomes, names)
    print_cheats(console, outcomes, client.market, names)
    withdrawn = sum(int(e.args["amount"]) for e in client.market.withdraw().named("Withdrawn"))
    print_client(console, outcomes, withdrawn)
    print_verdict(console, outcomes, names)

    if mapreduce:
        console.rule("[bold]5. a workflow: MapReduce word count")
        run_mapreduce(console, client, names)

    console.rule("[bold]6. gas")
    print_gas(console, gas_spent(client.market), jobs=client.market.job_count())
    return outcomes


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local compute market at work: jobs, a cheat, payments, gas.")
    parser.add_argument("--root", type=Path, default=ROOT / ".devnet-demo", help="the demo devnet's directory")
    parser.add_argument("--quick", action="store_true", help="two Wasm jobs (and the Docker job) instead of five")
    parser.add_argument("--no-docker", dest="docker", action="store_false", help="Wasm jobs only, no Docker engine")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the jobs")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    phases: dict[str, float] = {}
    net: Devnet | None = None
    code = 1
    try:
        console.print(
            "[bold]chain-scheduler demo[/]: clients post jobs with escrow, staked providers run them, "
            "the contract decides who was right,\nwho gets paid and who is slashed. Everything below is real: "
            "an anvil chain, the contract, provider daemons, Wasm and Docker sandboxes."
        )
        console.rule("[bold]1. a local market: chain, contract, store, five provider daemons")
        prepare_examples(docker=args.docker)
        net, record = start_market(args.root, docker=args.docker)
        phases["devnet up"] = time.monotonic() - started
        with Client.from_devnet(args.root) as client:
            run(console, net, record, client, demo_jobs(quick=args.quick, docker=args.docker), args.timeout, phases)
        code = 0
    except KeyboardInterrupt:
        console.print("\n[bold]interrupted[/]: stopping everything the demo started")
        code = 130
    except Exception as exc:
        console.print(f"[bold red]the demo failed[/]: {exc}")
        console.print(f"the logs are in {args.root / 'logs'} (`chainsched devnet logs --root {args.root}`)")
        raise
    finally:
        if net is not None:
            t = time.monotonic()
            # A second Ctrl-C (or a SIGTERM) must not leave processes behind.
            previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
            stopped = net.down()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            phases["devnet down"] = time.monotonic() - t
            console.print(f"stopped {', '.join(stopped)}; logs in {args.root / 'logs'}")
        total = time.monotonic() - started
        detail = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        console.print(f"[bold]demo wall time {total:.1f} s[/]" + (f" ({detail})" if detail else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
