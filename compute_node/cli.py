"""The ``compute-node`` command line (provider side). Nothing imports this module.

Commands:
    compute-node run        run the provider daemon until SIGTERM / SIGINT
    compute-node register   become a provider: deposit stake, declare capabilities
    compute-node exec wasm  run a Wasm job locally, without the chain

Logs go to stderr; ``register --json`` prints one JSON document on stdout.
Errors are one line on stderr with an exit code from :class:`ExitCode`. The
private key is read from a file, an environment variable, or (devnets only) the
public devnet mnemonic, and is never printed.
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain_scheduler import Capability, Executor, Market, Round, SafetyClass, TxSender, errors
from chain_scheduler._keys import load_account, parse_wei
from chain_scheduler._model import capability_bits, capability_names
from chain_scheduler._rpc import http_web3
from compute_node._behaviour import Behaviour
from compute_node._node import NodeStatus, ProviderNode
from compute_node._policy import SLOT_GAS, NodePolicy
from compute_node._runner import JobRunner
from compute_node._state import NodeState, StateError
from compute_node.executors import DockerEngineUnavailableError, DockerExecutor, ExecutionRequest, WasmExecutor
from compute_node.executors._base import Executor as Sandbox
from storage import DEFAULT_STORE_URL, StorageError, open_store

logger = logging.getLogger("compute_node.cli")

app = typer.Typer(no_args_is_help=True, help="chain-scheduler provider node.")
exec_app = typer.Typer(no_args_is_help=True, help="Run a job locally in a sandbox, without the chain.")
app.add_typer(exec_app, name="exec")


def _print_version(value: bool) -> None:
    if value:
        try:
            version = importlib.metadata.version("chain-scheduler")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        typer.echo(f"compute-node {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """chain-scheduler provider node."""


class ExitCode(enum.IntEnum):
    """Documented exit codes of every command."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CHAIN_UNAVAILABLE = 3
    REVERTED = 4
    SERVICE_UNAVAILABLE = 5  # the content store or the Docker engine
    INTERRUPTED = 130  # a second signal stopped the node at once


RpcOpt = Annotated[str, typer.Option("--rpc", envvar="CHAINSCHED_RPC", help="JSON-RPC endpoint of the chain node.")]
ContractOpt = Annotated[str, typer.Option("--contract", envvar="CHAINSCHED_CONTRACT", help="Market contract address.")]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="COMPUTE_NODE_KEY_FILE",
        dir_okay=False,
        help="File with the provider's private key: 0x-hex, or an encrypted JSON keystore "
        "(password in $COMPUTE_NODE_KEY_PASSWORD).",
    ),
]
KeyEnvOpt = Annotated[
    str | None,
    typer.Option("--key-env", metavar="VAR", help="Name of an environment variable holding the private key (hex)."),
]
DevnetAccountOpt = Annotated[
    int | None,
    typer.Option(
        "--devnet-account",
        metavar="N",
        help="Use account N of the public devnet mnemonic (anvil's test keys). Devnet chains only.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _fail(code: ExitCode, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


def _load_account(key_file: Path | None, key_env: str | None, devnet_account: int | None) -> LocalAccount:
    """The signing key from exactly one source. Error messages never include key material."""
    try:
        return load_account(
            key_file=key_file, key_env=key_env, devnet_account=devnet_account, password_env="COMPUTE_NODE_KEY_PASSWORD"
        )
    except errors.KeyConfigError as exc:
        raise _fail(ExitCode.USAGE, str(exc)) from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("web3", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _web3(rpc: str) -> Web3:
    return http_web3(rpc, timeout=10)


def _parse_wei(text: str) -> int:
    try:
        return parse_wei(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _capability_bits(names: list[str]) -> int:
    try:
        return capability_bits(names)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


# ----------------------------------------------------------------------- run


@app.command("run")
def run(
    contract: ContractOpt,
    rpc: RpcOpt = "http://127.0.0.1:8545",
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    devnet_account: DevnetAccountOpt = None,
    store: Annotated[
        str,
        typer.Option(
            envvar="CHAINSCHED_STORE", help="Content store: local:PATH (embedded) or ipfs:/ip4/HOST/tcp/PORT."
        ),
    ] = DEFAULT_STORE_URL,
    state: Annotated[
        Path,
        typer.Option(
            envvar="COMPUTE_NODE_STATE",
            file_okay=False,
            help="Directory of the node's durable state (state.db: cursor, jobs, salts, pending "
            "transactions), its work files and module cache. One per provider account.",
        ),
    ] = Path("~/.local/share/chain-scheduler/node"),
    price: Annotated[int, typer.Option(envvar="COMPUTE_NODE_PRICE", min=0, help="Wei per metered unit to bid.")] = 1,
    capacity: Annotated[int, typer.Option(envvar="COMPUTE_NODE_CAPACITY", min=1, help="Jobs executed at once.")] = 1,
    pending_bids: Annotated[
        int, typer.Option(min=1, help="Bids on rounds that have not filled yet, at most (they lock collateral).")
    ] = 4,
    fill_wait: Annotated[
        float, typer.Option(min=0, help="Seconds to hold a slot of a round that does not fill before leaving it.")
    ] = 10.0,
    behaviour: Annotated[
        Behaviour, typer.Option(case_sensitive=False, help="Anything but honest cheats: devnet only (needs --devnet).")
    ] = Behaviour.HONEST,
    devnet: Annotated[
        bool, typer.Option("--devnet", help="This is a local devnet (chain id 31337/1337): allows cheating behaviours.")
    ] = False,
    docker: Annotated[
        bool, typer.Option("--docker/--no-docker", help="Also run Docker jobs (needs an engine).")
    ] = False,
    gpu: Annotated[bool, typer.Option("--gpu", help="Take jobs that require the GPU capability.")] = False,
    accept_destructive: Annotated[
        bool, typer.Option("--accept-destructive", help="Take destructive (side-effecting, run-once) Docker jobs.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Also bid for audit and verification slots.")
    ] = True,
    max_units: Annotated[
        int | None, typer.Option(min=1, help="Refuse jobs whose maxUnits is above this (default: no limit).")
    ] = None,
    max_collateral: Annotated[
        str, typer.Option(help="Most collateral risked on one slot (wei, or 0.1ether); 'none': only --max-stake-share.")
    ] = "none",
    max_stake_share: Annotated[
        float, typer.Option(min=0.0001, max=1.0, help="Most of the whole stake risked on one slot (0.25 = 25%).")
    ] = 0.25,
    failure_gas: Annotated[
        int,
        typer.Option(
            min=0, help="Bid on a job that will end in a failure result only if minUnits x price covers this gas."
        ),
    ] = SLOT_GAS,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls of the chain.")] = 1.0,
    confirmations: Annotated[int, typer.Option(min=0, help="Blocks to stay behind the head (reorg safety).")] = 0,
    start_block: Annotated[
        int | None, typer.Option(min=0, help="First block to watch on a fresh state (default: head - 1000).")
    ] = None,
    withdraw_threshold: Annotated[
        str, typer.Option(help="Withdraw credit once it reaches this amount (wei, or 0.01ether); 'never' to keep it.")
    ] = "0.01ether",
    keeper: Annotated[
        bool, typer.Option("--keeper/--no-keeper", help="Call timeout/finalize for this node's jobs.")
    ] = True,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a graceful stop waits for running jobs before abandoning them.")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(envvar="COMPUTE_NODE_LOG_LEVEL", help="DEBUG, INFO, WARNING...")] = "INFO",
) -> None:
    """Run the provider daemon: watch, bid, run, commit, reveal, keep jobs moving, withdraw.

    The first SIGTERM/SIGINT stops gracefully (no new bids, running jobs finish and
    commit, pending transactions are flushed; exit 0); a second one stops at once.
    """
    _configure_logging(log_level)
    account = _load_account(key_file, key_env, devnet_account)
    devnet = devnet or devnet_account is not None
    if behaviour != Behaviour.HONEST and not devnet:
        raise _fail(ExitCode.USAGE, f"--behaviour {behaviour.value} cheats: it needs --devnet (and a devnet chain)")
    threshold = None if withdraw_threshold.strip().lower() == "never" else _parse_wei(withdraw_threshold)
    state_dir = state.expanduser()
    executors: set[Executor] = {Executor.WASM} | ({Executor.DOCKER} if docker else set())
    safety = {SafetyClass.DETERMINISTIC, SafetyClass.NONDESTRUCTIVE} | (
        {SafetyClass.DESTRUCTIVE} if accept_destructive else set()
    )
    try:
        policy = NodePolicy(
            price=price,
            capacity=capacity,
            pending_bids=pending_bids,
            executors=frozenset(executors),
            capabilities=int(Capability.GPU) if gpu else 0,
            safety_classes=frozenset(safety),
            rounds=frozenset(Round) if verify else frozenset({Round.MAIN}),
            max_units=max_units,
            max_collateral=None if max_collateral.strip().lower() == "none" else _parse_wei(max_collateral),
            max_stake_share_bps=max(1, round(max_stake_share * 10_000)),
            failure_gas=failure_gas,
        )
    except ValueError as exc:
        raise _fail(ExitCode.USAGE, str(exc)) from None

    w3 = _web3(rpc)
    node_state = NodeState(state_dir / "state.db")
    sender = TxSender(w3=w3, account=account, journal=node_state, poll_interval=min(0.5, poll_interval))
    try:
        market = Market(w3=w3, address=contract, account=account, sender=sender)
    except ValueError as exc:
        raise _fail(ExitCode.USAGE, f"--contract {contract!r} is not an address ({exc})") from None
    try:
        content = open_store(store)
    except StorageError as exc:
        raise _fail(ExitCode.SERVICE_UNAVAILABLE, f"content store {store}: {exc}") from None
    wasm = WasmExecutor(cache_dir=state_dir / "wasm-cache")
    sandboxes: dict[str, Sandbox] = {"wasm": wasm}
    docker_executor: DockerExecutor | None = None
    if docker:
        docker_executor = DockerExecutor(work_dir=state_dir / "work")
        try:
            docker_executor.start()
        except DockerEngineUnavailableError as exc:
            wasm.close()
            content.close()
            raise _fail(ExitCode.SERVICE_UNAVAILABLE, str(exc)) from None
        sandboxes["docker"] = docker_executor
    runner = JobRunner(store=content, executors=sandboxes, work_dir=state_dir / "work", market=market)
    try:
        node = ProviderNode(
            market=market,
            sender=sender,
            state=node_state,
            runner=runner,
            policy=policy,
            behaviour=behaviour,
            devnet=devnet,
            poll_interval=poll_interval,
            confirmations=confirmations,
            start_block=start_block,
            withdraw_threshold=threshold,
            keeper=keeper,
            fill_wait=fill_wait,
        )
    except ValueError as exc:
        raise _fail(ExitCode.USAGE, str(exc)) from None

    stop_asked: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop_asked:
            logger.warning("second %s: stopping at once (the state file holds everything to resume)", name)
            logging.shutdown()
            os._exit(int(ExitCode.INTERRUPTED))
        stop_asked.append(time.monotonic())
        logger.info("%s: stopping gracefully (send it again to stop at once)", name)
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("provider %s, state %s, store %s, rpc %s", account.address, state_dir, store, rpc)
    try:
        try:
            node.start()
        except StateError as exc:  # e.g. a second daemon on the same state directory
            raise _fail(ExitCode.USAGE, str(exc)) from None
        while not node.join(0.5):
            if stop_asked and time.monotonic() - stop_asked[0] > drain_timeout:
                logger.warning("running jobs did not finish within %.0fs: abandoning them", drain_timeout)
                node.abort()
                node.join(10.0)
                break
    finally:
        wasm.close()
        if docker_executor is not None:
            docker_executor.close()
        content.close()
        node_state.close()
    if node.status == NodeStatus.FAILED:
        raise _fail(ExitCode.FAILURE, node.error or "the node failed; see the log above")


# ------------------------------------------------------------------ register


@app.command("register")
def register(
    contract: ContractOpt,
    stake: Annotated[str, typer.Option(help="Stake to deposit: wei (1000) or with a unit (1ether, 0.5ether).")],
    rpc: RpcOpt = "http://127.0.0.1:8545",
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    devnet_account: DevnetAccountOpt = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            "-c",
            help="Capabilities: wasm, docker, gpu, verifier (repeat or comma-separate) "
            "\\[default: wasm,verifier]. verifier: may be drawn to audit and verify other providers' jobs.",
        ),
    ] = None,
    add: Annotated[
        bool, typer.Option("--add", help="Already registered: add this stake and set these capabilities.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Become a provider: deposit stake and declare what this node can run."""
    _configure_logging("WARNING")
    account = _load_account(key_file, key_env, devnet_account)
    amount = _parse_wei(stake)
    bits = _capability_bits(capabilities or ["wasm", "verifier"])
    w3 = _web3(rpc)
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any failure to reach the node
        message = f"cannot reach the chain node at {rpc} ({exc.__class__.__name__})"
        raise _fail(ExitCode.CHAIN_UNAVAILABLE, message) from None
    if devnet_account is not None and chain_id not in (31337, 1337):
        raise _fail(ExitCode.USAGE, f"--devnet-account uses public keys: refused on chain {chain_id}")
    market = Market(w3=w3, address=contract, account=account)
    try:
        before = market.provider(account.address)
        if before.registered and not add:
            raise _fail(
                ExitCode.REVERTED,
                f"{account.address} is already a provider (stake {before.free} wei free): pass --add to add stake",
            )
        gas = 0
        if before.registered:
            if amount:
                gas += market.add_stake(amount).gas_used
            if bits != before.capabilities:
                gas += market.set_capabilities(bits).gas_used
        else:
            gas += market.register(bits, amount).gas_used
        after = market.provider(account.address)
    except errors.ChainUnavailable as exc:
        raise _fail(ExitCode.CHAIN_UNAVAILABLE, str(exc)) from None
    except errors.ChainSchedulerError as exc:
        raise _fail(ExitCode.REVERTED, str(exc)) from None
    data: dict[str, Any] = {
        "provider": account.address,
        "stake_free": after.free,
        "stake_locked": after.locked,
        "capabilities": list(capability_names(after.capabilities)),
        "gas_used": gas,
    }
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        for key, value in data.items():
            typer.echo(f"{key:>14}: {value}")


# ---------------------------------------------------------------------- exec


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


if __name__ == "__main__":
    main()
