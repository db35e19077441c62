"""The ``chainsched`` command line (client side). Nothing imports this package.

Data commands take ``--json`` and then print exactly one JSON document on
stdout; errors are one line on stderr with an exit code from :class:`ExitCode`.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Any

import typer
from web3 import Web3

from chain_scheduler import Market, errors
from chain_scheduler._market import ZERO_ADDRESS
from chain_scheduler.cli._devnet import app as devnet_app

app = typer.Typer(no_args_is_help=True, help="chain-scheduler: a verifiable compute market on Ethereum.")
contract_app = typer.Typer(no_args_is_help=True, help="Deploy and inspect the market contract.")
job_app = typer.Typer(no_args_is_help=True, help="Inspect jobs.")
app.add_typer(contract_app, name="contract")
app.add_typer(job_app, name="job")
app.add_typer(devnet_app, name="devnet")

RpcOpt = Annotated[str, typer.Option("--rpc", envvar="CHAINSCHED_RPC", help="JSON-RPC endpoint of the chain node.")]
ContractOpt = Annotated[str, typer.Option("--contract", envvar="CHAINSCHED_CONTRACT", help="Market contract address.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


class ExitCode(enum.IntEnum):
    """Documented exit codes of every command."""

    OK = 0
    USAGE = 2
    CHAIN_UNAVAILABLE = 3
    REVERTED = 4
    UNKNOWN_JOB = 5
    INVALID_SPEC = 6
    FAILURE = 1


def _fail(code: ExitCode, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


def _connect(rpc: str) -> Web3:
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10}))
    try:
        w3.eth.chain_id  # noqa: B018 - a cheap liveness probe
    except Exception as exc:
        raise _fail(
            ExitCode.CHAIN_UNAVAILABLE, f"cannot reach the chain node at {rpc} ({exc.__class__.__name__})."
        ) from exc
    return w3


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    else:
        for key, value in data.items():
            typer.echo(f"{key:>14}: {value}")


@contract_app.command("deploy")
def deploy(
    rpc: RpcOpt = "http://127.0.0.1:8545",
    account: Annotated[int, typer.Option(help="Index of the node's unlocked (devnet) account to deploy from.")] = 0,
    unbonding_delay: Annotated[int, typer.Option(help="Seconds providers wait to unstake.")] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a fresh market contract from a devnet account."""
    w3 = _connect(rpc)
    try:
        market = Market.deploy(w3=w3, account=w3.eth.accounts[account], unbonding_delay=unbonding_delay)
    except errors.ChainSchedulerError as exc:
        raise _fail(ExitCode.REVERTED, str(exc)) from exc
    _emit({"address": market.address, "chain_id": w3.eth.chain_id, "unbonding_delay": unbonding_delay}, as_json)


@job_app.command("status")
def status(
    job_id: int,
    rpc: RpcOpt = "http://127.0.0.1:8545",
    contract: ContractOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Show a job's on-chain state."""
    if not contract:
        raise _fail(ExitCode.USAGE, "no contract address: pass --contract or set CHAINSCHED_CONTRACT.")
    w3 = _connect(rpc)
    # Reads only: the binding's account is never used to sign here.
    market = Market(w3=w3, address=contract, account=ZERO_ADDRESS)
    job = market.job(job_id)
    if job.status == 0:
        raise _fail(ExitCode.UNKNOWN_JOB, f"job {job_id} does not exist on {contract}.")
    _emit(
        {
            "job_id": job_id,
            "status": job.status.name.lower(),
            "round": job.round.name.lower(),
            "filled": job.filled,
            "committed": job.committed,
            "revealed": job.revealed,
            "deadline": job.deadline,
        },
        as_json,
    )


def main() -> None:
    """Console-script entry point."""
    app()
