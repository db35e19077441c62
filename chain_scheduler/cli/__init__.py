"""The ``chainsched`` command line (client side). Nothing imports this package.

    chainsched devnet  up|down|status|logs            a whole local market
    chainsched job     submit|status|list|result|receipt|logs|cancel|challenge
    chainsched workflow run FILE                      a DAG of jobs from YAML
    chainsched provider register|run|status|withdraw
    chainsched account balance|withdraw
    chainsched contract deploy

Data commands take ``--json`` and then print exactly one JSON document on
stdout; errors are one line on stderr with an exit code from :class:`ExitCode`
(see :mod:`chain_scheduler.cli._common` for the options every command shares).
"""

from __future__ import annotations

from typing import Annotated

import typer

from chain_scheduler import Market
from chain_scheduler.cli._common import DEFAULT_RPC, ExitCode, JsonOpt, VersionOpt, connect, emit, exit_on_error
from chain_scheduler.cli._devnet import app as devnet_app
from chain_scheduler.cli._job import app as job_app
from chain_scheduler.cli._provider import account_app, provider_app
from chain_scheduler.cli._workflow import app as workflow_app

app = typer.Typer(no_args_is_help=True, help="chain-scheduler: a verifiable compute market on Ethereum.")
contract_app = typer.Typer(no_args_is_help=True, help="Deploy the market contract.")
app.add_typer(devnet_app, name="devnet")
app.add_typer(job_app, name="job")
app.add_typer(workflow_app, name="workflow")
app.add_typer(provider_app, name="provider")
app.add_typer(account_app, name="account")
app.add_typer(contract_app, name="contract")

__all__ = ["ExitCode", "app", "main"]


@app.callback()
def _root(version: VersionOpt = False) -> None:
    """chain-scheduler: a verifiable compute market on Ethereum."""


@contract_app.command("deploy")
def deploy(
    rpc: Annotated[str, typer.Option("--rpc", envvar="CHAINSCHED_RPC", help="JSON-RPC endpoint.")] = DEFAULT_RPC,
    account: Annotated[int, typer.Option(help="Index of the node's unlocked (devnet) account to deploy from.")] = 0,
    unbonding_delay: Annotated[int, typer.Option(help="Seconds providers wait to unstake.")] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a fresh market contract from an account the node holds (a devnet)."""
    w3 = connect(rpc)
    with exit_on_error():
        market = Market.deploy(w3=w3, account=w3.eth.accounts[account], unbonding_delay=unbonding_delay)
    emit({"address": market.address, "chain_id": w3.eth.chain_id, "unbonding_delay": unbonding_delay}, as_json)


def main() -> None:
    """Console-script entry point."""
    app()
