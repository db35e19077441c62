"""``chainsched workflow``: run a YAML workflow of jobs whose inputs are earlier jobs' results.

``run`` posts the stages (independent ones in parallel), prints each job's
progress on stderr, writes the leaf stages' results under ``--out``, and ends
with the result CIDs, the output directories and the price paid (with
``--json``: one JSON document on stdout). ``check`` validates a file without
touching the chain. A file that does not validate exits 6.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from chain_scheduler._workflow import FromStage, Until, Workflow, WorkflowEvent, WorkflowRun
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
    exit_on_error,
    fail,
    note,
)

app = typer.Typer(no_args_is_help=True, help="Run workflows: stages of jobs that read earlier jobs' results.")

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The workflow YAML file.", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Force a job option on every stage, e.g. --set k=1 --set m=1 --set collateral=0.001ether.",
    ),
]


def _load(file: Path, overrides: list[str] | None) -> Workflow:
    forced: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(ExitCode.USAGE, f"--set {item!r}: use KEY=VALUE, e.g. --set k=1")
        forced[key.strip()] = yaml.safe_load(value) if value.strip() else value
    with exit_on_error():
        workflow = Workflow.load(file)
        return workflow.override(**forced) if forced else workflow


@app.command("run")
def run(
    file: FileArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            help="Where the final stages' results go (default: ./NAME-out, NAME the workflow's).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds for the whole workflow.")] = 900.0,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between two reads of the jobs' states.")] = 0.5,
    eager: Annotated[
        bool,
        typer.Option(
            "--eager/--no-eager",
            help="Post each stage as soon as the stages it reads are posted (the contract holds it "
            "until they are Finalized); --no-eager posts it only once they are Finalized.",
        ),
    ] = True,
    overrides: SetOpt = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Post a workflow's jobs, follow them to the end, and fetch the final results."""
    workflow = _load(file, overrides)
    out = out if out is not None else Path(f"{workflow.name}-out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise fail(ExitCode.USAGE, f"{out} exists and is not empty: pass --out with a new directory")
    ends = endpoints(rpc, contract, store, devnet)
    started = time.monotonic()

    def progress(event: WorkflowEvent) -> None:
        note(f"{time.monotonic() - started:7.1f}s  {event.message}")

    jobs = sum(s.width for s in workflow.stages)
    note(f"workflow {workflow.name}: {len(workflow.stages)} stage(s), {jobs} job(s) to start with")
    with client(ends, KeyChoice(account=account, key_file=key_file, key_env=key_env)) as sdk:
        result = workflow.run(sdk, out=out, timeout=timeout, poll=poll, eager=eager, on_event=progress)
    _report(result, as_json)


def _report(result: WorkflowRun, as_json: bool) -> None:
    if as_json:
        emit(result.to_json(), True)
        return
    jobs = sum(len(s.jobs) for s in result.stages.values())
    typer.echo(f"workflow {result.name}: {jobs} job(s) in {result.elapsed:.1f}s")
    for name, stage in result.stages.items():
        extra = ""
        if stage.iterations > 1 or stage.converged is not None:
            extra = f", {stage.iterations} iteration(s)"
            if stage.converged is not None:
                extra += ", converged" if stage.converged else ", not converged"
            if stage.values:
                extra += f", last value {stage.values[-1]:.6g}"
        typer.echo(f"  {name}: jobs {' '.join(str(j.job_id) for j in stage.jobs)}{extra}")
        for job in stage.final:
            where = f"  -> {job.outputs}" if job.outputs is not None else ""
            typer.echo(f"    job {job.job_id}  {job.result_cid}{where}")
    typer.echo(f"paid {result.paid:,} wei to providers (escrow {result.escrow:,}, refunded {result.refund:,})")
    if result.out is not None:
        typer.echo(f"summary {result.out / 'workflow.json'}")


@app.command("check")
def check(file: FileArg, overrides: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Validate a workflow file and show its stages, without touching the chain."""
    workflow = _load(file, overrides)
    stages: list[dict[str, Any]] = []
    for stage in workflow.stages:
        options = workflow.options(stage)
        inputs = {
            name: (f"stage {src.stage}" + (f"[{src.index}]" if src.index is not None else ""))
            if isinstance(src, FromStage)
            else str(src)
            for name, src in stage.sources().items()
        }
        repeat: dict[str, Any] | None = None
        if stage.repeat is not None:
            until = stage.repeat.until
            repeat = {"max": stage.repeat.max, "until": until.describe() if isinstance(until, Until) else None}
        stages.append(
            {
                "name": stage.name,
                "program": str(workflow.resolve(stage.module or stage.image or "")),
                "jobs": stage.width,
                "inputs": inputs,
                "after": list(stage.after),
                "depends_on": stage.depends_on(),
                "repeat": repeat,
                "k": options.k or 1,
                "m": options.m or 1,
                # What postJob locks per job: every slot it may pay (replicas, audit, verifiers), at most.
                "escrow_per_job": ((options.k or 1) + (1 if options.audit_bps else 0) + (options.verifiers or 0))
                * (options.max_units or 0)
                * (options.max_price or 0),
            }
        )
    if as_json:
        emit({"workflow": workflow.name, "valid": True, "stages": stages}, True)
        return
    typer.echo(f"workflow {workflow.name}: valid, {len(stages)} stage(s)")
    for s in stages:
        after = f" after {', '.join(s['depends_on'])}" if s["depends_on"] else ""
        again = f", repeat up to {s['repeat']['max']}x" if s["repeat"] else ""
        typer.echo(
            f"  {s['name']}: {s['jobs']} job(s) of {Path(s['program']).name}, k={s['k']} m={s['m']}{after}{again}"
        )
