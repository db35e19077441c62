#!/usr/bin/env python3
"""The root finder of ``ga_root.yaml``, driven from Python with the SDK.

Island iterations of a genetic algorithm (``examples/wasm/ga.c``) look for a
root of x^3 - 2x - 5: three islands evolve in parallel, every later iteration
starts from all the previous populations, and the run stops once the best
|f(x)| is below the tolerance. Each iteration's jobs name the previous ones as
parents on chain, so their inputs are results the market accepted.

Two ways to write it:

* the default builds a :class:`chain_scheduler.Workflow` in Python, with a Python
  function as the stop condition;
* ``--by-hand`` is the same loop with :meth:`Client.submit` alone: a
  :class:`JobHandle` given as an input makes that job a parent.

Run it against a local market (build the modules first)::

    python scripts/build_examples.py
    chainsched devnet up --providers 3
    python examples/workflows/ga_root.py            # or --by-hand, --k 1 --m 1 for speed

It prints progress on stderr and one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chain_scheduler import Client, FromStage, JobHandle, JobOptions, JobStatus, Repeat, Stage, Workflow

GA = Path(__file__).resolve().parent.parent / "wasm" / "build" / "ga.wasm"
COEFFS = "1,0,-2,-5"  # x^3 - 2x - 5, highest degree first
GA_ARGS = (COEFFS, "--lo", "-10", "--hi", "10", "--pop", "64", "--gens", "40")
ISLANDS = 3


def read_best(outputs: Sequence[Path]) -> dict[str, Any]:
    """The best candidate over the islands' ``best.json`` files."""
    bests = [json.loads((d / "best.json").read_text()) for d in outputs]
    return min(bests, key=lambda b: float(b["abs_fx"]))


def with_workflow(client: Client, options: JobOptions, *, tolerance: float, max_iterations: int) -> dict[str, Any]:
    """The ``ga_root.yaml`` workflow, built in Python."""
    history: list[dict[str, Any]] = []

    def converged(outputs: Sequence[Path]) -> bool:
        best = read_best(outputs)
        history.append(best)
        return float(best["abs_fx"]) < tolerance

    evolve = Stage(
        name="evolve",
        module=GA,
        args=GA_ARGS,
        foreach=ISLANDS,  # three jobs per iteration: islands 0, 1, 2
        inputs={"prev": FromStage("self")},  # every job of the previous iteration (none in the first)
        repeat=Repeat(max=max_iterations, until=converged),
    )
    workflow = Workflow(name="ga-root", stages=[evolve], defaults=options)
    run = workflow.run(client, timeout=600, poll=0.25, on_event=lambda e: print(e.message, file=sys.stderr))
    stage = run["evolve"]
    return {
        "x": history[-1]["x"],
        "abs_fx": history[-1]["abs_fx"],
        "history": [b["abs_fx"] for b in history],
        "iterations": stage.iterations,
        "converged": stage.converged,
        "jobs": [j.job_id for j in stage.jobs],
        "paid": run.paid,
    }


def by_hand(client: Client, options: JobOptions, *, tolerance: float, max_iterations: int) -> dict[str, Any]:
    """The same iterations with ``Client.submit``: the previous jobs' handles are the inputs."""
    previous: list[JobHandle] = []
    history: list[dict[str, Any]] = []
    jobs: list[int] = []
    for iteration in range(max_iterations):
        islands = [
            client.submit(
                module=GA,
                args=GA_ARGS,
                inputs={f"prev-{i}": job for i, job in enumerate(previous)},  # parents, mounted at /inputs/prev-i
                **options.submit_kwargs(),
            )
            for _ in range(ISLANDS)
        ]
        jobs += [job.job_id for job in islands]
        print(f"iteration {iteration}: jobs {[job.job_id for job in islands]}", file=sys.stderr)
        for job in islands:
            # Finalized, not just Succeeded: the next iteration's providers only run on final parents.
            job.wait(timeout=300, poll=0.25, until=JobStatus.FINALIZED)
        with tempfile.TemporaryDirectory() as tmp:
            best = read_best([job.fetch(Path(tmp) / str(job.job_id)) for job in islands])
        history.append(best)
        print(f"iteration {iteration}: x = {best['x']:.15g}, |f(x)| = {best['abs_fx']:.3g}", file=sys.stderr)
        if float(best["abs_fx"]) < tolerance:
            break
        previous = islands
    paid = sum(client.job(job_id).receipt().paid for job_id in jobs)
    return {
        "x": history[-1]["x"],
        "abs_fx": history[-1]["abs_fx"],
        "history": [b["abs_fx"] for b in history],
        "iterations": len(history),
        "converged": float(history[-1]["abs_fx"]) < tolerance,
        "jobs": jobs,
        "paid": paid,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--devnet", type=Path, default=Path(".devnet"), help="the devnet directory (.devnet)")
    parser.add_argument("--k", type=int, default=3, help="replicas per job (3)")
    parser.add_argument("--m", type=int, default=2, help="replicas that must agree (2)")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="stop once |f(x)| is below this (1e-9)")
    parser.add_argument("--max-iterations", type=int, default=6, help="at most this many iterations (6)")
    parser.add_argument("--by-hand", action="store_true", help="use Client.submit directly, not Workflow")
    args = parser.parse_args(argv)
    if not GA.is_file():
        parser.error(f"{GA} is missing: run python scripts/build_examples.py")
    options = JobOptions(
        k=args.k, m=args.m, max_price=5, max_units=50_000_000, collateral=10**16, challenge_window=0
    )  # fmt: skip
    drive = by_hand if args.by_hand else with_workflow
    with Client.from_devnet(args.devnet) as client:
        result = drive(client, options, tolerance=args.tolerance, max_iterations=args.max_iterations)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
