"""``chainsched devnet``: a whole local market (anvil, contract, provider daemons) in one command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from chain_scheduler import errors
from chain_scheduler._anvil import ChainJournal, ChainRestore
from chain_scheduler._devnet import BEHAVIOURS, Devnet
from chain_scheduler.errors import DevnetError

app = typer.Typer(no_args_is_help=True, help="Start, inspect and stop a local market under .devnet/.")

RootOpt = Annotated[
    Path, typer.Option("--root", "--devnet", envvar="CHAINSCHED_DEVNET", file_okay=False, help="The devnet directory.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

# Exit codes, as chain_scheduler.cli.ExitCode (not imported: that module imports this one).
_FAILURE = 1
_USAGE = 2
_CHAIN_UNAVAILABLE = 3


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _parse_bad(values: list[str]) -> dict[int, str]:
    bad: dict[int, str] = {}
    for value in values:
        index, sep, behaviour = value.partition(":")
        if not sep or not index.strip().isdigit() or behaviour.strip().lower() not in BEHAVIOURS:
            raise _fail(
                _USAGE,
                f"--bad {value!r}: use K:BEHAVIOUR, K a provider index, BEHAVIOUR one of {', '.join(BEHAVIOURS)}",
            )
        bad[int(index)] = behaviour.strip().lower()
    return bad


def _parse_prices(values: list[str]) -> tuple[int | None, dict[int, int]]:
    """``--price WEI`` (everyone) and ``--price K:WEI`` (provider K) into (default, per provider)."""
    default: int | None = None
    prices: dict[int, int] = {}
    for value in values:
        index, sep, price = value.rpartition(":")
        if not price.strip().isdigit() or (sep and not index.strip().isdigit()):
            raise _fail(_USAGE, f"--price {value!r}: use WEI (every provider) or K:WEI (provider K), e.g. 3:1")
        if sep:
            prices[int(index)] = int(price)
        else:
            default = int(price)
    return default, prices


def _restore_line(restore: ChainRestore) -> str:
    """One line on a restore: when, to which block, from what, and what was lost."""
    if restore.head is None:
        return f"restored  {restore.at}: anvil had died and there was no saved state: the chain starts anew"
    line = (
        f"restored  {restore.at}: anvil had died; chain restored to block {restore.head} "
        f"(snapshot at block {restore.snapshot_block} + {restore.replayed} journaled blocks replayed); "
    )
    if restore.reached is None or restore.lost is None:
        line += "the block it had reached is unknown (no journal)"
    elif restore.lost == 0:
        line += f"it had reached block {restore.reached}: no block lost"
    else:
        line += f"it had reached block {restore.reached}: blocks {restore.head + 1}..{restore.reached} lost"
    if restore.diverged_at is not None:
        line += f" (block {restore.diverged_at} replayed differently: a change no transaction made, e.g. setBalance)"
    return line


@app.command("up")
def up(
    providers: Annotated[int, typer.Option("--providers", "-n", min=0, help="Provider daemons to run.")] = 2,
    bad: Annotated[
        list[str] | None,
        typer.Option("--bad", metavar="K:BEHAVIOUR", help="Provider K cheats (repeatable), e.g. 3:lazy."),
    ] = None,
    ipfs: Annotated[bool, typer.Option("--ipfs", help="Start an IPFS node instead of the embedded store.")] = False,
    docker: Annotated[
        bool,
        typer.Option("--docker", help="Also run Docker jobs (starts a Docker engine unless one answers)."),
    ] = False,
    price: Annotated[
        list[str] | None,
        typer.Option(
            "--price",
            metavar="[K:]WEI",
            help="Wei per unit the providers bid (default 1); K:WEI sets provider K's (repeatable).",
        ),
    ] = None,
    capacity: Annotated[int, typer.Option(min=1, help="Jobs each daemon holds at once.")] = 1,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between the daemons' chain polls.")] = 0.25,
    root: RootOpt = Path(".devnet"),
    as_json: JsonOpt = False,
) -> None:
    """Start the devnet, or whatever part of it is not running (keeps the chain's state)."""
    default_price, prices = _parse_prices(price or [])
    net = Devnet(
        root=root, poll_interval=poll_interval, price=1 if default_price is None else default_price, capacity=capacity
    )
    try:
        record = net.up(providers=providers, bad=_parse_bad(bad or []), ipfs=ipfs, docker=docker, prices=prices)
    except ValueError as exc:
        raise _fail(_USAGE, str(exc)) from None
    except errors.ChainUnavailable as exc:
        raise _fail(_CHAIN_UNAVAILABLE, str(exc)) from None
    except errors.ChainSchedulerError as exc:
        raise _fail(_FAILURE, f"{exc} (see `chainsched devnet logs`)") from None
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
        return
    typer.echo(f"rpc       {record['rpc_url']} (chain {record['chain_id']})")
    typer.echo(f"contract  {record['contract']}")
    typer.echo(f"store     {record['store_url']}")
    if record.get("docker"):
        typer.echo(f"docker    {'started by the devnet' if record.get('docker_started') else 'engine already running'}")
    if record.get("restored"):
        typer.echo(_restore_line(ChainRestore(**record["restored"])))
    for p in record["providers"]:
        typer.echo(
            f"node-{p['index']}    {p['address']} pid {p['pid']} {p['behaviour']} price {p['price']}  log {p['log']}"
        )
    typer.echo(f"export CHAINSCHED_RPC={record['rpc_url']} CHAINSCHED_CONTRACT={record['contract']}", err=True)


@app.command("down")
def down(root: RootOpt = Path(".devnet"), as_json: JsonOpt = False) -> None:
    """Stop the daemons, then the chain node (it saves its state for the next `up`)."""
    stopped = Devnet(root=root).down()
    if as_json:
        sys.stdout.write(json.dumps({"stopped": stopped}) + "\n")
    else:
        typer.echo("stopped " + (", ".join(stopped) or "nothing (was not running)"))


@app.command("status")
def status(root: RootOpt = Path(".devnet"), as_json: JsonOpt = False) -> None:
    """The chain (and whether it was restored from saved state), each provider and their health."""
    state = Devnet(root=root).status()
    if as_json:
        sys.stdout.write(json.dumps(state.to_json()) + "\n")
        return
    chain = f"head {state.head}" if state.reachable else "unreachable"
    typer.echo(
        f"chain     {state.rpc_url or '-'}  {chain}  anvil {'up' if state.anvil_alive else 'down'}  "
        f"journal {'up' if state.journal_alive else 'DOWN' if state.anvil_alive else 'down'}"
    )
    if state.restored is not None:
        typer.echo(_restore_line(state.restored))
    typer.echo(f"contract  {state.contract or '-'}{'' if state.contract_deployed else ' (no code)'}")
    if state.docker:
        engine = "up" if state.docker_engine else "DOWN"
        typer.echo(f"docker    engine {engine}{' (started by the devnet)' if state.docker_started else ''}")
    for p in state.providers:
        health = f"pid {p.pid}" if p.alive else "DOWN"
        typer.echo(
            f"node-{p.index}  {p.address}  {health}  {p.behaviour}  price {p.price}  "
            f"stake {p.stake_free}/{p.stake_locked}  "
            f"caps {','.join(p.capabilities) or '-'}  ok {p.succeeded} slashed {p.slashed}  "
            f"in flight {p.jobs_in_flight}"
        )


@app.command("logs")
def logs(
    name: Annotated[str | None, typer.Argument(help="anvil, chain-journal, node-K or K (default: every log).")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end of each log.")] = 50,
    root: RootOpt = Path(".devnet"),
) -> None:
    """Show the providers' (and anvil's) logs."""
    net = Devnet(root=root)
    names = [name] if name else net.log_names()
    try:
        for each in names:
            if not name:
                typer.echo(f"==> {each} <==")
            typer.echo(net.logs(each, lines=lines), nl=False)
    except DevnetError as exc:
        raise _fail(_USAGE, str(exc)) from None


@app.command("journal", hidden=True)
def journal(
    rpc: Annotated[str, typer.Option("--rpc", help="anvil's HTTP endpoint.")],
    snapshot: Annotated[Path, typer.Option(dir_okay=False, help="The state file anvil loads.")],
    journal_file: Annotated[Path, typer.Option("--journal", dir_okay=False, help="The journal of blocks.")],
    anvil_pid: Annotated[int | None, typer.Option(help="Stop when this process is gone.")] = None,
    snapshot_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between snapshots.")] = 60.0,
    snapshot_blocks: Annotated[int, typer.Option(min=1, help="Journaled blocks that call for a snapshot.")] = 1000,
    fsync: Annotated[bool, typer.Option(help="fsync every journal write.")] = False,
) -> None:
    """Keep the devnet's chain restorable after kill -9 (`devnet up` runs this beside anvil)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    keeper = ChainJournal(
        url=rpc,
        snapshot=snapshot,
        journal=journal_file,
        anvil_pid=anvil_pid,
        snapshot_interval=snapshot_interval,
        snapshot_blocks=snapshot_blocks,
        fsync=fsync,
    )
    try:
        keeper.run(stop)
    except errors.ChainUnavailable as exc:
        raise _fail(_CHAIN_UNAVAILABLE, str(exc)) from None
