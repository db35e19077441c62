"""``chainsched job``: submit and follow a job, read its result, receipt and logs; cancel, challenge, time it out."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from chain_scheduler import errors
from chain_scheduler._client import DEFAULT_MIN_UNITS, JobHandle
from chain_scheduler._keys import parse_wei
from chain_scheduler._model import Job, JobStatus, SafetyClass, capability_bits
from chain_scheduler._spec import JobSpec, Limits
from chain_scheduler.cli._common import (
    AccountOpt,
    ContractOpt,
    DevnetOpt,
    ExitCode,
    JsonOpt,
    KeyChoice,
    KeyEnvOpt,
    KeyFileOpt,
    RpcOpt,
    StoreOpt,
    client,
    emit,
    endpoints,
    fail,
    note,
)

app = typer.Typer(no_args_is_help=True, help="Submit jobs, follow them, read their results and receipts.")

_STATUS_NAMES = {s.name.lower(): s for s in JobStatus if s != JobStatus.NONE}


def _amount(text: str) -> int:
    try:
        return parse_wei(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise fail(ExitCode.USAGE, f"{what} {value!r}: use NAME=VALUE")
        pairs.append((key, rest))
    return pairs


def _job_json(handle: JobHandle, job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.name.lower(),
        "round": job.round.name.lower(),
        "filled": job.filled,
        "committed": job.committed,
        "revealed": job.revealed,
        "winner": job.winner if job.status in (JobStatus.SUCCEEDED, JobStatus.FINALIZED) else None,
        "deadline": job.deadline,
        "spec_cid": handle.spec_cid,
    }


class _Progress:
    """Prints each phase a job reaches on stderr, once: posted, bids, running, committed, revealed, verified."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.seen: set[str] = set()
        self.last: tuple[int, int, int, int, int] | None = None

    def say(self, key: str, text: str) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        note(f"[{time.monotonic() - self.start:6.2f}s] {text}")

    def update(self, job: Job) -> None:
        state = (int(job.status), int(job.round), job.filled, job.committed, job.revealed)
        if state == self.last:
            return
        self.last = state
        round_name = job.round.name.lower()
        if job.filled:
            self.say(f"bids-{round_name}-{job.filled}", f"bids       {job.filled} slot(s) taken ({round_name} round)")
        if job.status == JobStatus.RUNNING:
            self.say(f"running-{round_name}", "running    providers are executing the job")
        if job.committed:
            self.say(f"commit-{round_name}-{job.committed}", f"committed  {job.committed} sealed result(s)")
        if job.revealed:
            self.say(f"reveal-{round_name}-{job.revealed}", f"revealed   {job.revealed} result(s)")
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FINALIZED):
            self.say("verified", f"verified   the quorum agreed (winning slot {job.winner})")
        if job.status == JobStatus.FINALIZED:
            self.say("finalized", "finalized  providers paid, client refunded")


def _follow(handle: JobHandle, *, until: frozenset[JobStatus], timeout: float, progress: _Progress) -> Job:
    """Poll the job, reporting progress, until it reaches ``until``; finalize it ourselves when nobody does."""
    deadline = time.monotonic() + timeout
    while True:
        job = handle.status()
        progress.update(job)
        if job.status in until:
            return job
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            handle.wait(timeout=0)  # raises JobFailed with the reason and the refund
        if job.status == JobStatus.SUCCEEDED and JobStatus.FINALIZED in until:
            now = handle.client.market.w3.eth.get_block("latest")["timestamp"]
            if now > job.deadline + 2:  # the window closed and no keeper finalized it yet
                with contextlib.suppress(errors.JobStateError):  # someone else finalized it meanwhile
                    handle.finalize()
        if time.monotonic() >= deadline:
            handle.wait(timeout=0, until=until)  # raises WaitTimeout with the status it is in
        time.sleep(0.1)


@app.command("submit")
def submit(
    module: Annotated[
        Path | None, typer.Option("--module", exists=True, dir_okay=False, help="A WASI command module (.wasm).")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", exists=True, dir_okay=False, help="A `docker save` image tarball.")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option("--spec", exists=True, dir_okay=False, help="A JSON job spec whose CIDs are in the store."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="NAME=PATH",
            help="A file or directory at /inputs/NAME (repeatable); NAME=job:ID takes job ID's result.",
        ),
    ] = None,
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the program (after --).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", metavar="K=V", help="Environment variable.")] = None,
    k: Annotated[int, typer.Option("-k", "--replicas", min=1, help="Providers that run the job.")] = 1,
    m: Annotated[int, typer.Option("-m", "--agree", min=1, help="How many of them must agree.")] = 1,
    max_price: Annotated[int, typer.Option(min=1, help="Most wei per metered unit you pay.")] = 10,
    max_units: Annotated[int, typer.Option(min=1, help="Most units (Wasm fuel, Docker CPU-ms) paid per replica.")] = (
        1_000_000_000
    ),
    min_units: Annotated[
        int,
        typer.Option(min=0, help="Units each paid replica is billed at least, even for a failure result of no work."),
    ] = DEFAULT_MIN_UNITS,
    collateral: Annotated[str, typer.Option(help="Stake each provider locks per slot (wei or 0.01ether).")] = (
        "0.001ether"
    ),
    verifiers: Annotated[int, typer.Option(min=0, help="Verifier slots a challenge opens.")] = 0,
    audit: Annotated[float, typer.Option(min=0, max=1, help="Probability of a random audit (0..1).")] = 0.0,
    safety: Annotated[
        str | None, typer.Option(help="deterministic, nondestructive or destructive \\[default: by executor].")
    ] = None,
    challenge_window: Annotated[int, typer.Option(min=0, help="Seconds the result may be challenged.")] = 10,
    bid_window: Annotated[int, typer.Option(min=0, help="Seconds of bidding; 0: first come first served.")] = 0,
    lottery: Annotated[
        bool, typer.Option(help="Draw the replicas by stake from those who enter in the bid window (paid max price).")
    ] = False,
    fill_timeout: Annotated[int, typer.Option(min=1, help="Seconds for providers to take the slots.")] = 300,
    exec_timeout: Annotated[int, typer.Option(min=1, help="Seconds for the providers to commit.")] = 300,
    reveal_window: Annotated[int, typer.Option(min=1, help="Seconds to reveal after the last commit.")] = 120,
    parents: Annotated[list[int] | None, typer.Option("--parent", help="A job that must finalize first.")] = None,
    require: Annotated[
        list[str] | None, typer.Option("--require", help="Capabilities providers need beyond the executor (gpu).")
    ] = None,
    memory_mb: Annotated[int | None, typer.Option(min=1, help="Memory limit, MiB \\[default: 256].")] = None,
    time_limit: Annotated[
        int | None,
        typer.Option(
            "--time-limit",
            min=1,
            help="Time limit per run, s: Docker's wall clock, Wasm's fuel budget (500M fuel/s); at most half "
            "of --exec-timeout \\[default: 30].",
        ),
    ] = None,
    cpus: Annotated[float | None, typer.Option(min=0.01, help="CPU share (Docker) \\[default: 1.0].")] = None,
    output_mb: Annotated[
        int | None, typer.Option(min=1, help="Most the program may write under /outputs, MiB \\[default: 256].")
    ] = None,
    network: Annotated[bool, typer.Option("--network", help="Network access (destructive Docker jobs).")] = False,
    description: Annotated[str, typer.Option(help="Free text for people.")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Post even a job every provider would end in a failure result (they are paid min units)."
        ),
    ] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job id and return at once.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where to write the outputs \\[default: ./job-ID].")] = None,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for the job to settle.")] = 600.0,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a job, post it, follow it to a verified result, and print the result, outputs and price.

    Before posting, the job is checked as every provider will check it: a spec that does not fit its
    terms (a time limit over half of --exec-timeout), a program that is not a WASI module or a docker
    save tarball, an input tree that cannot be unpacked safely: exit 6, nothing posted (--force posts).
    A job that ends in a failure result (the providers agreed it could not run) exits 1.
    """
    if sum(x is not None for x in (module, image, spec_file)) != 1:
        raise fail(ExitCode.USAGE, "give exactly one of --module FILE.wasm, --image IMAGE.tar, --spec SPEC.json")
    safety_class = None
    if safety is not None:
        try:
            safety_class = SafetyClass[safety.upper()]
        except KeyError:
            raise fail(
                ExitCode.USAGE, f"--safety {safety!r}: use deterministic, nondestructive or destructive"
            ) from None
    try:
        capabilities = capability_bits(require or [])
    except ValueError as exc:
        raise fail(ExitCode.USAGE, f"--require: {exc}") from None
    ends = endpoints(rpc, contract, store, devnet)
    with client(ends, KeyChoice(account, key_file, key_env)) as sdk:
        if not no_wait and out is not None and out.exists():
            raise fail(ExitCode.USAGE, f"{out} exists: pass --out to a new directory (nothing was posted)")
        named: dict[str, Path | JobHandle] = {}
        for name, value in _pairs(inputs or [], "--input"):
            if value.startswith("job:") and value[4:].isdigit():
                parent = sdk.job(int(value[4:]))
                parent.status()  # exit 5 when it does not exist
                named[name] = parent
            else:
                named[name] = Path(value)
        terms: dict[str, Any] = {
            "k": k, "m": m, "max_price": max_price, "max_units": max_units, "collateral": _amount(collateral),
            "verifiers": verifiers, "audit_bps": round(audit * 10_000), "challenge_window": challenge_window,
            "bid_window": bid_window, "lottery": lottery, "fill_timeout": fill_timeout, "exec_timeout": exec_timeout,
            "reveal_window": reveal_window, "parents": parents or (), "safety": safety_class,
            "capabilities": capabilities, "min_units": min_units, "force": force,
        }  # fmt: skip
        given = {"memory_mb": memory_mb, "timeout_s": time_limit, "cpus": cpus, "output_mb": output_mb}
        try:
            if spec_file is not None:
                if named or args or env:
                    raise fail(ExitCode.USAGE, "--spec holds the program, inputs, args and env: do not repeat them")
                spec = JobSpec.from_bytes(spec_file.read_bytes(), source=str(spec_file))
                handle = sdk.submit(spec, **terms)
            else:
                handle = sdk.submit(
                    module=module,
                    image=image,
                    inputs=named,
                    args=args or [],
                    env=dict(_pairs(env or [], "--env")),
                    limits=Limits.model_validate({name: value for name, value in given.items() if value is not None}),
                    network=network,
                    description=description,
                    **terms,
                )
        except errors.SpecError as exc:  # nothing was posted
            raise fail(ExitCode.INVALID_SPEC, str(exc).replace("force=True", "--force")) from None
        except ValueError as exc:  # a bad path, min units over max units, or limits out of range (pydantic)
            code = ExitCode.INVALID_SPEC if "validation error" in str(exc) else ExitCode.USAGE
            raise fail(code, str(exc).splitlines()[0] if code == ExitCode.USAGE else str(exc)) from None
        posted = {"job_id": handle.job_id, "spec_cid": handle.spec_cid, "escrow": handle.terms().escrow}
        if no_wait:
            emit(posted | {"status": "open"}, as_json)
            return
        progress = _Progress()
        progress.say("posted", f"posted     job {handle.job_id}: k={k} m={m}, escrow {posted['escrow']} wei")
        until = (
            frozenset({JobStatus.FINALIZED})
            if challenge_window <= timeout
            else frozenset({JobStatus.SUCCEEDED, JobStatus.FINALIZED})
        )
        job = _follow(handle, until=until, timeout=timeout, progress=progress)
        dest = out or Path(f"job-{handle.job_id}")
        if dest.exists():  # the default name: keep what is there, write beside it
            dest = Path(f"job-{handle.job_id}-{int(time.time())}")
        outputs = handle.fetch(dest)
        receipt_file = dest / "receipt.json"
        consensus: dict[str, Any] = json.loads(receipt_file.read_text()) if receipt_file.is_file() else {}
        data: dict[str, Any] = posted | {
            "status": job.status.name.lower(),
            "result_cid": handle.result_cid(),
            "outputs": str(outputs),
        }
        if job.status == JobStatus.FINALIZED:
            receipt = handle.receipt()
            data |= {"paid": receipt.paid, "refund": receipt.refund, "providers": len(receipt.providers),
                     "slashed": len(receipt.slashed)}  # fmt: skip
        else:
            data |= {"paid": None, "note": "payment at finalization: see `chainsched job receipt`"}
        failure = consensus.get("reason")
        if failure:  # a failure result: the providers agreed the job could not run
            data |= {"failure": failure, "error": consensus.get("error")}
        emit(data, as_json)
        if failure:
            raise fail(ExitCode.FAILURE, f"job {handle.job_id} could not run: {failure}: {data['error']}")


@app.command("status")
def status(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    as_json: JsonOpt = False,
) -> None:
    """Show a job's on-chain state."""
    with client(endpoints(rpc, contract, None, devnet), need_store=False) as sdk:
        handle = sdk.job(job_id)
        job = handle.status()
        handle.spec_cid = str(sdk.market.job_posted(job_id).args["specCid"])
        emit(_job_json(handle, job), as_json)


@app.command("list")
def list_jobs(
    state: Annotated[
        list[str] | None, typer.Option("--state", help=f"Only these statuses: {', '.join(_STATUS_NAMES)}.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only jobs posted by this address ('me': your account).")] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, by state and owner."""
    wanted = None
    if state:
        unknown = [s for s in state if s.lower() not in _STATUS_NAMES]
        if unknown:
            raise fail(ExitCode.USAGE, f"--state {unknown[0]!r}: use one of {', '.join(_STATUS_NAMES)}")
        wanted = frozenset(_STATUS_NAMES[s.lower()] for s in state)
    keys = KeyChoice(account, key_file, key_env) if owner == "me" else None
    with client(endpoints(rpc, contract, None, devnet), keys, need_store=False) as sdk:
        who = sdk.address if owner == "me" else owner
        rows = []
        for handle in sdk.jobs(owner=who, statuses=wanted):
            rows.append(_job_json(handle, handle.status()))
    if as_json:
        emit({"jobs": rows}, True)
        return
    if not rows:
        note("no jobs")
    for row in rows:
        typer.echo(
            f"{row['job_id']:>6}  {row['status']:<10} {row['round']:<6} filled {row['filled']} "
            f"committed {row['committed']} revealed {row['revealed']}  spec {row['spec_cid']}"
        )


@app.command("result")
def result(
    job_id: int,
    out: Annotated[Path | None, typer.Option(help="Directory to create \\[default: ./job-ID].")] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    as_json: JsonOpt = False,
) -> None:
    """Fetch a job's verified result (outputs/ and receipt.json) to a directory."""
    dest = out or Path(f"job-{job_id}")
    if dest.exists():
        raise fail(ExitCode.USAGE, f"{dest} exists: pass --out to a new directory")
    with client(endpoints(rpc, contract, store, devnet)) as sdk:
        handle = sdk.job(job_id)
        cid = handle.result_cid()
        outputs = handle.fetch(dest)
        files = sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if p.is_file())
        emit({"job_id": job_id, "result_cid": cid, "outputs": str(outputs), "files": files}, as_json)


@app.command("receipt")
def receipt(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    as_json: JsonOpt = False,
) -> None:
    """The metering and the price computation, per provider: what was paid, and why."""
    with client(endpoints(rpc, contract, store, devnet)) as sdk:
        data = sdk.job(job_id).receipt().to_json()
    if as_json:
        emit(data, True)
        return
    consensus = data["consensus"]
    typer.echo(f"job {job_id}  result {data['result_cid']}")
    if consensus.get("reason"):
        typer.echo(f"failure result: the job could not run ({consensus['reason']}): {consensus.get('error')}")
    typer.echo(
        f"metered by every agreeing replica: {consensus.get('executor', '?')}, exit code "
        f"{consensus.get('exit_code', '?')}, {consensus.get('usage', '?')} {consensus.get('units', 'units')}"
    )
    typer.echo(
        f"{'provider':<42} {'slot':>4} {'seat':>7} {'votes':>5} {'price':>7} {'paid units':>12} {'reported':>12} "
        f"{'amount (wei)':>14}"
    )
    for p in data["providers"]:
        check = "" if p["checks"] else "  (!= price x units x votes)"
        reported = "-" if p["reported_usage"] is None else p["reported_usage"]
        typer.echo(
            f"{p['provider']:<42} {p['slot']:>4} {p['seat']:>7} {p['votes']:>5} {p['price']:>7} {p['units']:>12} "
            f"{reported:>12} {p['amount']:>14}{check}"
        )
    for x in data["slashed"]:
        typer.echo(f"slashed {x['provider']} slot {x['slot']}: {x['amount']} wei of collateral")
    typer.echo(f"escrow {data['escrow']} wei: paid to providers {data['paid']}, refunded {data['refund']}")


@app.command("logs")
def logs(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    as_json: JsonOpt = False,
) -> None:
    """The job's stdout and stderr (from its verified result)."""
    with client(endpoints(rpc, contract, store, devnet)) as sdk:
        out, err = sdk.job(job_id).logs()
    if as_json:
        emit({"job_id": job_id, "stdout": out, "stderr": err}, True)
        return
    typer.echo(out, nl=False)
    typer.echo(err, nl=False, err=True)


@app.command("cancel")
def cancel(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel your job while it is Open; its escrow goes back to your credit."""
    with client(endpoints(rpc, contract, None, devnet), KeyChoice(account, key_file, key_env), need_store=False) as sdk:
        refund = sdk.job(job_id).cancel()
        emit({"job_id": job_id, "status": "cancelled", "refund": refund, "credit": sdk.market.credit_of(sdk.address)},
             as_json)  # fmt: skip


@app.command("challenge")
def challenge(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dispute a result in its challenge window: verifiers re-run the job; pays the job's collateral as bond.

    If the sealed result's envelope does not open with your key, the challenge is "unread":
    its bond comes back even if the result stands.
    """
    with client(endpoints(rpc, contract, None, devnet), KeyChoice(account, key_file, key_env), need_store=False) as sdk:
        handle = sdk.job(job_id)
        unread = handle.envelope_unreadable()
        bond = handle.challenge(unread=unread)
        emit({"job_id": job_id, "bond": bond, "unread": unread, "status": handle.status().status.name.lower()},
             as_json)  # fmt: skip


@app.command("publish")
def publish(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a succeeded job's sealed result CID once its challenge window is over, which settles the job.

    Its winning provider usually does; a client that opened its envelope can too. A sealed
    result nobody publishes within a reveal window fails the job and slashes its providers.
    """
    with client(endpoints(rpc, contract, None, devnet), KeyChoice(account, key_file, key_env), need_store=False) as sdk:
        cid = sdk.job(job_id).publish()
        emit({"job_id": job_id, "result_cid": cid}, as_json)


@app.command("timeout")
def timeout(
    job_id: int,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a job past an expired phase (anyone may): fill, commit or reveal deadline, or challenge window."""
    with client(endpoints(rpc, contract, None, devnet), KeyChoice(account, key_file, key_env), need_store=False) as sdk:
        handle = sdk.job(job_id)
        before = handle.status()
        try:
            after = handle.timeout()
        except errors.DeadlineNotReached as exc:
            deadline, now = int(exc.fields["deadline"]), int(exc.fields["now_"])
            raise fail(
                ExitCode.REVERTED,
                f"job {job_id} is {before.status.name.title()} and its deadline is {deadline - now} s away "
                f"(block time {now}, deadline {deadline}): nothing has expired yet. "
                f"Run `chainsched job timeout {job_id}` again after it.",
            ) from None
        except errors.WrongStatus:
            raise fail(
                ExitCode.REVERTED,
                f"job {job_id} is {before.status.name.title()}: it has no phase left to move "
                "(only Open, Running, Revealing and Succeeded jobs have a deadline).",
            ) from None
        emit(
            {"job_id": job_id, "before": before.status.name.lower(), "status": after.status.name.lower(),
             "round": after.round.name.lower(), "deadline": after.deadline},
            as_json,
        )  # fmt: skip
