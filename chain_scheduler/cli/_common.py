"""What every ``chainsched`` command shares: options, exit codes, errors, output.

Where to connect: ``--rpc``, ``--contract`` and ``--store`` (or their
``CHAINSCHED_*`` environment variables); any of them not given is taken from the
devnet record (``.devnet/devnet.json``, or ``--devnet DIR``) when there is one.

Who signs: exactly one of ``--account N`` (devnet account N of the public
mnemonic: local chains only), ``--key-file FILE`` (0x-hex or an encrypted JSON
keystore, password in ``$CHAINSCHED_KEY_PASSWORD``) or ``--key-env VAR``. With none
on a local chain the client account (devnet account 1) signs. A private key is
never printed.

Exit codes (:class:`ExitCode`): 0 ok, 1 failure (a job failed, a wait timed out,
a store error), 2 usage (bad option, no key, no contract), 3 chain node
unreachable, 4 transaction reverted, or refused before sending as the contract
would (the contract error is named, with what to do), 5 unknown job, 6 job spec
that does not validate, or a job every provider would end in a failure result
(nothing posted: ``job submit --force`` posts it).
"""

from __future__ import annotations

import contextlib
import enum
import importlib.metadata
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import is_hex_address, to_checksum_address
from web3 import Web3

from chain_scheduler import errors
from chain_scheduler._client import CLIENT_ACCOUNT, Client
from chain_scheduler._devnet import Devnet
from chain_scheduler._keys import DEVNET_CHAIN_IDS, devnet_key, load_account
from chain_scheduler._market import ZERO_ADDRESS, Market
from chain_scheduler._rpc import http_web3, rpc_call
from storage import StorageError

DEFAULT_RPC = "http://127.0.0.1:8545"


class ExitCode(enum.IntEnum):
    """Documented exit codes of every command."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CHAIN_UNAVAILABLE = 3
    REVERTED = 4
    UNKNOWN_JOB = 5
    INVALID_SPEC = 6


def package_version() -> str:
    """The installed chain-scheduler distribution's version ("unknown" when run from a bare tree)."""
    try:
        return importlib.metadata.version("chain-scheduler")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"chainsched {package_version()}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
]
RpcOpt = Annotated[
    str | None,
    typer.Option("--rpc", envvar="CHAINSCHED_RPC", help="Chain node JSON-RPC endpoint \\[default: the devnet's]."),
]
ContractOpt = Annotated[
    str | None,
    typer.Option("--contract", envvar="CHAINSCHED_CONTRACT", help="Market contract address \\[default: the devnet's]."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CHAINSCHED_STORE",
        help="Content store: local:DIR or ipfs:/ip4/127.0.0.1/tcp/5001 \\[default: the devnet's].",
    ),
]
DevnetOpt = Annotated[
    Path,
    typer.Option(
        "--devnet", envvar="CHAINSCHED_DEVNET", file_okay=False, help="Devnet directory to take defaults from."
    ),
]
AccountOpt = Annotated[
    int | None,
    typer.Option("--account", metavar="N", help="Sign with devnet account N (local chains only) \\[default: 1]."),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="CHAINSCHED_KEY_FILE",
        dir_okay=False,
        help="File with the private key: 0x-hex, or a JSON keystore (password in $CHAINSCHED_KEY_PASSWORD).",
    ),
]
KeyEnvOpt = Annotated[
    str | None,
    typer.Option("--key-env", metavar="VAR", help="Name of an environment variable holding the private key (hex)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


def fail(code: ExitCode, message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


def emit(data: dict[str, Any], as_json: bool) -> None:
    """One JSON document on stdout, or ``key: value`` lines for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        typer.echo(f"{key:>{width}}: {value}")


def note(message: str) -> None:
    """A line for people on stderr (never mixed into the JSON on stdout)."""
    typer.echo(message, err=True)


# Hints for reverts a user can act on; every other one is explained by its message.
_HINTS: dict[str, str] = {
    "NotClient": "only the account that posted the job may do this: pass the same --account/--key-file",
    "NotCancellable": "a job can be cancelled only while it is Open (before its slots are filled)",
    "NotChallengeable": "a result can be challenged only while the job is Succeeded, in its challenge window",
    "WrongBond": "the challenge bond is the job's collateral: see `chainsched job status`",
    "NothingToWithdraw": "this account has no credit: see `chainsched account balance`",
    "NotRegistered": "register first: `chainsched provider register --stake 1ether`",
    "AlreadyRegistered": "this account is already a provider: see `chainsched provider status`",
    "StakeLocked": "stake locked in running jobs cannot be withdrawn: wait for them to finish",
    "Unbonding": "the unbonding delay has not passed yet: try again later",
    "DeadlineNotReached": "nothing has expired yet: `chainsched job status` shows the deadline; "
    "`chainsched job timeout` moves the job once it has passed",
}


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn the package's errors into one ``error:`` line and the documented exit code."""
    try:
        yield
    except errors.UnknownJob as exc:
        raise fail(ExitCode.UNKNOWN_JOB, str(exc)) from None
    except errors.ContractError as exc:
        name = type(exc).__name__
        hint = _HINTS.get(name)
        raise fail(ExitCode.REVERTED, f"reverted with {name}: {exc}" + (f" ({hint})" if hint else "")) from None
    except (errors.TransactionFailed, errors.OutOfFunds) as exc:
        raise fail(ExitCode.REVERTED, str(exc)) from None
    except errors.ChainUnavailable as exc:
        raise fail(ExitCode.CHAIN_UNAVAILABLE, str(exc)) from None
    except errors.SpecError as exc:
        raise fail(ExitCode.INVALID_SPEC, str(exc)) from None
    except errors.KeyConfigError as exc:
        raise fail(ExitCode.USAGE, str(exc)) from None
    except (errors.ChainSchedulerError, StorageError) as exc:
        raise fail(ExitCode.FAILURE, str(exc)) from None


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a command connects: the node, the contract, the content store (None: not known)."""

    rpc: str
    contract: str | None
    store: str | None


def endpoints(rpc: str | None, contract: str | None, store: str | None, devnet: Path) -> Endpoints:
    """The options given, completed from the devnet record."""
    record = Devnet(root=devnet).record()
    return Endpoints(
        rpc=rpc or str(record.get("rpc_url") or DEFAULT_RPC),
        contract=contract or record.get("contract"),
        store=store or record.get("store_url"),
    )


def connect(url: str) -> Web3:
    """A Web3 on ``url`` that answered; exit 3 when it does not."""
    w3 = http_web3(url)
    try:
        rpc_call(lambda: w3.eth.chain_id)
    except errors.ChainUnavailable:
        raise fail(ExitCode.CHAIN_UNAVAILABLE, f"cannot reach the chain node at {url}: is it running?") from None
    return w3


def signer(w3: Web3, account: int | None, key_file: Path | None, key_env: str | None) -> LocalAccount:
    """The signing key from the options; the client devnet account on a local chain when none is given."""
    chain_id = w3.eth.chain_id
    if account is None and key_file is None and key_env is None:
        if chain_id in DEVNET_CHAIN_IDS:
            return devnet_key(CLIENT_ACCOUNT)
        raise fail(ExitCode.USAGE, "no signing key: pass --key-file FILE or --key-env VAR")
    if account is not None and chain_id not in DEVNET_CHAIN_IDS:
        raise fail(ExitCode.USAGE, f"--account uses the public devnet keys: refused on chain {chain_id}")
    with exit_on_error():
        return load_account(
            key_file=key_file,
            key_env=key_env,
            devnet_account=account,
            password_env="CHAINSCHED_KEY_PASSWORD",
            flags=("--key-file", "--key-env", "--account"),
        )


def require_contract(ends: Endpoints) -> ChecksumAddress:
    """The contract address, or exit 2 saying how to give one, or that it is not an address."""
    if not ends.contract:
        raise fail(
            ExitCode.USAGE,
            "no contract address: pass --contract, set CHAINSCHED_CONTRACT, or start a devnet (chainsched devnet up)",
        )
    if not is_hex_address(ends.contract):
        raise fail(ExitCode.USAGE, f"--contract {ends.contract!r} is not an address (0x and 40 hex digits)")
    return to_checksum_address(ends.contract)


def deployed_contract(w3: Web3, ends: Endpoints) -> ChecksumAddress:
    """:func:`require_contract`, with code behind it on the chain; exit 2 when there is none."""
    address = require_contract(ends)
    with exit_on_error():
        code = rpc_call(lambda: w3.eth.get_code(address))
    if not code:
        raise fail(
            ExitCode.USAGE,
            f"no contract at {address} on the chain at {ends.rpc}: check --contract "
            "(a devnet started afresh deploys a new one; `chainsched devnet status` shows it)",
        )
    return address


def reader(ends: Endpoints) -> Market:
    """A read-only binding (it never signs)."""
    w3 = connect(ends.rpc)
    return Market(w3=w3, address=deployed_contract(w3, ends), account=ZERO_ADDRESS)


def market(ends: Endpoints, account: int | None, key_file: Path | None, key_env: str | None) -> Market:
    """A binding that signs with the chosen key."""
    w3 = connect(ends.rpc)
    key = signer(w3, account, key_file, key_env)
    return Market(w3=w3, address=deployed_contract(w3, ends), account=key)


@dataclass(frozen=True, slots=True)
class KeyChoice:
    """The signing options as given (at most one is set; none: the default devnet client)."""

    account: int | None = None
    key_file: Path | None = None
    key_env: str | None = None


@contextlib.contextmanager
def client(ends: Endpoints, keys: KeyChoice | None = None, *, need_store: bool = True) -> Iterator[Client]:
    """A connected :class:`Client` (closed on exit), errors mapped to exit codes.

    Args:
        ends: Where to connect.
        keys: Who signs; None for commands that only read (nothing can be sent).
        need_store: Exit 2 when no store is known (commands that read or write content).
    """
    w3 = connect(ends.rpc)
    key: LocalAccount | str = ZERO_ADDRESS if keys is None else signer(w3, keys.account, keys.key_file, keys.key_env)
    if ends.store is None and need_store:
        raise fail(ExitCode.USAGE, "no content store: pass --store local:DIR (or ipfs:...), or start a devnet")
    with contextlib.ExitStack() as stack:
        store = ends.store
        if store is None:
            # A command that reads only the chain still gets a store object: an empty, throwaway one.
            store = "local:" + stack.enter_context(tempfile.TemporaryDirectory(prefix="chainsched-nostore-"))
        with exit_on_error():
            sdk = Client(w3=w3, contract=deployed_contract(w3, ends), key=key, store=store).connect()
        stack.callback(sdk.close)
        with exit_on_error():
            yield sdk
