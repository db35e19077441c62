"""One place that turns a failed call or transaction into a Python exception.

Handles both a real node (JSON-RPC error data holding the custom error's
selector and ABI-encoded arguments, raised by web3 as ``ContractCustomError``)
and eth-tester (``TransactionFailed`` whose cause carries the raw revert bytes).
"""

from __future__ import annotations

import ast
import functools
from typing import Any

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector

from chain_scheduler import errors
from chain_scheduler._abi import abi

_PREFIX = "ChainScheduler"


@functools.cache
def _selectors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for item in abi():
        if item.get("type") != "error":
            continue
        types = [_abi_type(i) for i in item["inputs"]]
        names = [i["name"] for i in item["inputs"]]
        selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
        table[selector] = (item["name"], types, names)
    return table


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def decode_error_data(data: bytes) -> errors.ContractError | None:
    """The contract error encoded in revert data, or None when it is not one of ours."""
    entry = _selectors().get(bytes(data[:4]))
    if entry is None:
        return None
    name, types, names = entry
    values = decode(types, bytes(data[4:]))
    fields = {n: (v.hex() if isinstance(v, bytes) else v) for n, v in zip(names, values, strict=True)}
    cls = errors.CONTRACT_ERRORS.get(name.removeprefix(_PREFIX))
    if cls is None:
        return None
    return cls(**fields)


def revert_data(exc: BaseException) -> bytes | None:
    """Raw revert bytes carried by a web3 or eth-tester exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        inner = data.get("data")
        if isinstance(inner, str) and inner.startswith("0x"):
            return bytes.fromhex(inner[2:])
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause.args and isinstance(cause.args[0], bytes | bytearray):
        return bytes(cause.args[0])
    message = str(exc.args[0]) if exc.args else ""
    marker = "execution reverted: "
    if marker in message:
        tail = message.split(marker, 1)[1].strip()
        if tail.startswith(("b'", 'b"')):
            try:
                value = ast.literal_eval(tail)
            except (ValueError, SyntaxError):
                return None
            if isinstance(value, bytes):
                return value
        if tail.startswith("0x"):
            try:
                return bytes.fromhex(tail[2:])
            except ValueError:
                return None
    return None


def decode_revert(exc: BaseException) -> errors.ChainSchedulerError | None:
    """The package exception for a revert, or None when ``exc`` is not a revert."""
    data = revert_data(exc)
    if data is not None:
        decoded = decode_error_data(data)
        if decoded is not None:
            return decoded
        return errors.TransactionFailed(f"The transaction reverted with unknown data 0x{data.hex()}.")
    if "revert" in str(exc).lower():
        return errors.TransactionFailed(f"The transaction reverted: {exc}")
    return None
