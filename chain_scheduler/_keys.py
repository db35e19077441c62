"""Signing keys and amounts, as both command lines take them.

A key comes from exactly one source: a devnet account by index (the public
anvil mnemonic: local chains only), a key file (0x-hex, or an encrypted JSON
keystore whose password is in an environment variable), or an environment
variable holding the hex key. Error messages never include key material.

    KeyConfigError (chain_scheduler.errors)   no key, two keys, or one that does not load

Example:
    >>> account = load_account(devnet_account=1)
    >>> account.address
    '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'
    >>> parse_wei("0.5ether")
    500000000000000000
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain_scheduler._anvil import DEVNET_MNEMONIC
from chain_scheduler.errors import KeyConfigError

#: Chain ids on which the public devnet keys may be used.
DEVNET_CHAIN_IDS = frozenset({31337, 1337})


def devnet_key(index: int) -> LocalAccount:
    """Account ``index`` of the public devnet mnemonic (anvil's well-known test keys).

    Raises:
        KeyConfigError: a negative index.
    """
    if index < 0:
        raise KeyConfigError(f"a devnet account is an index >= 0, got {index}")
    Account.enable_unaudited_hdwallet_features()
    return cast(LocalAccount, Account.from_mnemonic(DEVNET_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"))


def load_account(
    *,
    key_file: Path | None = None,
    key_env: str | None = None,
    devnet_account: int | None = None,
    password_env: str = "CHAINSCHED_KEY_PASSWORD",
    flags: tuple[str, str, str] = ("--key-file", "--key-env", "--devnet-account"),
) -> LocalAccount:
    """The signing key from exactly one of its three sources.

    Args:
        key_file: A file holding a 0x-hex private key, or an encrypted JSON keystore.
        key_env: The name of an environment variable holding the hex key.
        devnet_account: An index into the public devnet mnemonic.
        password_env: The environment variable holding a keystore's password.
        flags: How the caller names the three sources, for messages.

    Raises:
        KeyConfigError: none or several sources, or a key that does not load.
    """
    sources = tuple(zip(flags, (key_file, key_env, devnet_account), strict=True))
    given = [name for name, value in sources if value is not None]
    if len(given) != 1:
        got = f" (got {', '.join(given)})" if given else ""
        raise KeyConfigError(f"give exactly one of {', '.join(flags)}{got}")
    if devnet_account is not None:
        return devnet_key(devnet_account)
    if key_env is not None:
        secret = os.environ.get(key_env)
        if not secret:
            raise KeyConfigError(f"environment variable {key_env} is not set or empty")
        return _from_key(secret.strip(), given[0])
    assert key_file is not None
    try:
        text = key_file.read_text().strip()
    except OSError as exc:
        raise KeyConfigError(f"cannot read the key file {key_file}: {exc.strerror}") from None
    if not text.startswith("{"):
        return _from_key(text, given[0])
    password = os.environ.get(password_env)
    if password is None:
        raise KeyConfigError(f"{key_file} is an encrypted keystore: set ${password_env} to its password")
    try:
        secret_bytes = Account.decrypt(json.loads(text), password)
    except Exception:  # noqa: BLE001 - say only what to fix
        raise KeyConfigError(f"cannot decrypt the keystore {key_file}: wrong password or not a keystore") from None
    return _from_key(secret_bytes, given[0])


def _from_key(secret: str | bytes, source: str) -> LocalAccount:
    try:
        return cast(LocalAccount, Account.from_key(secret))
    except Exception:  # noqa: BLE001 - the message could echo key material
        raise KeyConfigError(f"the key from {source} is not a valid private key") from None


def parse_wei(text: str) -> int:
    """An amount: ``"1000"`` (wei), ``"1ether"``, ``"0.5 ether"``, ``"100gwei"``.

    Raises:
        ValueError: not an amount (the message says the accepted forms).
    """
    cleaned = text.strip().lower().replace("_", "")
    for unit in ("ether", "eth", "gwei", "wei"):
        if cleaned.endswith(unit):
            number = cleaned[: -len(unit)].strip()
            try:
                return int(Web3.to_wei(Decimal(number), "ether" if unit == "eth" else unit))
            except (InvalidOperation, ValueError):
                break
    else:
        if cleaned.isdigit():
            return int(cleaned)
    raise ValueError(f"{text!r} is not an amount: use wei (1000) or a unit (1ether, 0.5ether, 100gwei)")
