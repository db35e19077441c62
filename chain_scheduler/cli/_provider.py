"""``chainsched provider`` and ``chainsched account``: stake, run a node, and move money out.

``provider run`` hands over to the provider daemon (``python -m compute_node.cli
run``) in the same process slot (exec): this package never imports
``compute_node``, and signals reach the daemon directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_typing import ChecksumAddress
from web3 import Web3

from chain_scheduler._keys import DEVNET_CHAIN_IDS, parse_wei
from chain_scheduler._market import Market
from chain_scheduler._model import capability_bits, capability_names
from chain_scheduler.cli._common import (
    AccountOpt,
    ContractOpt,
    DevnetOpt,
    Endpoints,
    ExitCode,
    JsonOpt,
    KeyEnvOpt,
    KeyFileOpt,
    RpcOpt,
    StoreOpt,
    connect,
    emit,
    endpoints,
    exit_on_error,
    fail,
    market,
    reader,
    require_contract,
)

provider_app = typer.Typer(no_args_is_help=True, help="Become a provider, run a node, see your stake, withdraw.")
account_app = typer.Typer(no_args_is_help=True, help="Your balance and credit, and withdrawing the credit.")


def _provider_json(m: Market, address: str) -> dict[str, Any]:
    info = m.provider(address)
    return {
        "provider": address,
        "registered": info.registered,
        "stake_free": info.free,
        "stake_locked": info.locked,
        "capabilities": list(capability_names(info.capabilities)),
        "succeeded": info.succeeded,
        "slashed": info.slashed,
        "unbonding_until": info.unbonding_at or None,
        "credit": m.credit_of(address),
    }


def _whose(
    ends: Endpoints, address: str | None, account: int | None, key_file: Path | None, key_env: str | None
) -> tuple[Market, ChecksumAddress]:
    """A binding, and the address asked about: the one given (read-only, no key needed) or the signer's."""
    m = reader(ends) if address else market(ends, account, key_file, key_env)
    who = address or m.account
    if not Web3.is_address(who):
        raise fail(ExitCode.USAGE, f"{who!r} is not an address")
    return m, Web3.to_checksum_address(who)


@provider_app.command("register")
def register(
    stake: Annotated[str, typer.Option(help="Stake to deposit: wei (1000) or with a unit (1ether).")] = "1ether",
    capabilities: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            "-c",
            help="wasm, docker, gpu, verifier (repeat or comma-separate) \\[default: wasm,verifier]. "
            "verifier: may be drawn to audit and verify other providers' jobs.",
        ),
    ] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deposit stake and declare what your node runs; registered already: add stake and set capabilities."""
    try:
        amount = parse_wei(stake)
    except ValueError as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None
    try:
        bits = capability_bits(capabilities or ["wasm", "verifier"])
    except ValueError as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None
    m = market(endpoints(rpc, contract, None, devnet), account, key_file, key_env)
    with exit_on_error():
        before = m.provider(m.account)
        gas = 0
        if not before.registered:
            gas += m.register(bits, amount).gas_used
        else:
            if amount:
                gas += m.add_stake(amount).gas_used
            if bits != before.capabilities:
                gas += m.set_capabilities(bits).gas_used
        emit(_provider_json(m, m.account) | {"gas_used": gas}, as_json)


@provider_app.command("status")
def status(
    address: Annotated[str | None, typer.Argument(help="A provider's address \\[default: your account].")] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A provider's stake (free and locked), capabilities, reputation and credit."""
    m, who = _whose(endpoints(rpc, contract, None, devnet), address, account, key_file, key_env)
    with exit_on_error():
        emit(_provider_json(m, who), as_json)


@provider_app.command("withdraw")
def provider_withdraw(
    stake: Annotated[
        str | None,
        typer.Option(help="Also take this much free stake out (starts the unbonding delay the first time)."),
    ] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw your earnings (credit); with --stake, unstake too (after the unbonding delay)."""
    m = market(endpoints(rpc, contract, None, devnet), account, key_file, key_env)
    with exit_on_error():
        data: dict[str, Any] = {"provider": m.account, "withdrawn": 0}
        credit = m.credit_of(m.account)
        if credit:
            m.withdraw()
            data["withdrawn"] = credit
        if stake is not None:
            try:
                amount = parse_wei(stake)
            except ValueError as exc:
                raise fail(ExitCode.USAGE, str(exc)) from None
            info = m.provider(m.account)
            if not info.unbonding_at:
                m.begin_unbonding()
                data["unbonding_until"] = m.provider(m.account).unbonding_at
                data["note"] = "unbonding started: run this again after the delay to take the stake out"
            else:
                m.unstake(amount)
                data["unstaked"] = amount
        data["balance"] = m.w3.eth.get_balance(m.w3.to_checksum_address(m.account))
        emit(data, as_json)


@provider_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(
    ctx: typer.Context,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    store: StoreOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    state: Annotated[Path | None, typer.Option(help="Node state directory \\[default: ./provider-state].")] = None,
) -> None:
    """Run the provider daemon (compute-node run) until SIGTERM; other options pass through to it.

    Example: chainsched provider run --account 6 --docker --price 3
    """
    ends = endpoints(rpc, contract, store, devnet)
    cmd = [sys.executable, "-m", "compute_node.cli", "run", "--rpc", ends.rpc, "--contract", require_contract(ends)]
    cmd += ["--store", ends.store or "local:" + str(Path("provider-store").resolve())]
    cmd += ["--state", str(state or Path("provider-state"))]
    if key_file is not None:
        cmd += ["--key-file", str(key_file)]
    elif key_env is not None:
        cmd += ["--key-env", key_env]
    elif account is not None:
        cmd += ["--devnet-account", str(account)]
    else:
        raise fail(ExitCode.USAGE, "a provider needs its key: --key-file FILE, --key-env VAR or --account N (devnet)")
    if account is not None and connect(ends.rpc).eth.chain_id in DEVNET_CHAIN_IDS:
        cmd.append("--devnet")
    cmd += list(ctx.args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


@account_app.command("balance")
def balance(
    address: Annotated[str | None, typer.Argument(help="An address \\[default: your account].")] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wallet balance, and the credit the contract holds for you (refunds, payments, returned bonds)."""
    m, who = _whose(endpoints(rpc, contract, None, devnet), address, account, key_file, key_env)
    with exit_on_error():
        emit({"address": who, "balance": m.w3.eth.get_balance(who), "credit": m.credit_of(who)}, as_json)


@account_app.command("withdraw")
def account_withdraw(
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    devnet: DevnetOpt = Path(".devnet"),
    account: AccountOpt = None,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move your whole credit from the contract to your wallet."""
    m = market(endpoints(rpc, contract, None, devnet), account, key_file, key_env)
    with exit_on_error():
        credit = m.credit_of(m.account)
        tx = m.withdraw()
        emit(
            {
                "address": m.account,
                "withdrawn": credit,
                "gas_used": tx.gas_used,
                "balance": m.w3.eth.get_balance(m.w3.to_checksum_address(m.account)),
            },
            as_json,
        )
