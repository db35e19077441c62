"""The ``compute-node`` command line (provider side). Nothing imports this module."""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from compute_node.executors import ExecutionRequest, WasmExecutor

app = typer.Typer(no_args_is_help=True, help="chain-scheduler provider node.")
exec_app = typer.Typer(no_args_is_help=True, help="Run a job locally in a sandbox, without the chain.")
app.add_typer(exec_app, name="exec")


@exec_app.command("wasm")
def exec_wasm(
    module: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A WASI command module (.wasm).")],
    inputs: Annotated[Path, typer.Option(exists=True, file_okay=False, help="Directory mounted read-only at /inputs.")],
    outputs: Annotated[Path, typer.Option(help="Directory the job writes /outputs to (created).")],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments passed to the program.")] = None,
    fuel: Annotated[int, typer.Option(help="Fuel limit (metered units).")] = 10_000_000_000,
    memory_mb: Annotated[int, typer.Option(help="Memory limit in MiB.")] = 256,
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 60.0,
    seed: Annotated[str, typer.Option(help="32-byte hex seed (default: random).")] = "",
) -> None:
    """Run a Wasm job once and print its metered result as JSON."""
    outputs.mkdir(parents=True, exist_ok=True)
    seed_bytes = bytes.fromhex(seed) if seed else secrets.token_bytes(32)
    request = ExecutionRequest(
        job_id=0,
        artifact=module,
        artifact_cid=str(module),
        args=tuple(args or ()),
        inputs_dir=inputs,
        outputs_dir=outputs,
        seed=seed_bytes,
        max_units=fuel,
        memory_limit=memory_mb * 1024 * 1024,
        timeout=timeout,
    )
    with WasmExecutor() as wasm:
        result = wasm.run(request)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    if result.error:
        typer.echo(f"error: {result.error}", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()
