"""The compiled contract, loaded from the committed artifacts (never compiled at run time)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def artifact(name: str = "ChainScheduler") -> dict[str, Any]:
    """The committed artifact of a contract: ``abi``, ``bytecode`` and metadata."""
    text = resources.files("chain_scheduler").joinpath("_artifacts", f"{name}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@functools.cache
def abi(name: str = "ChainScheduler") -> list[dict[str, Any]]:
    """A contract's ABI. The market's includes its extension's functions, events and errors:
    the market answers them too (its fallback runs them in the extension by delegatecall)."""
    value: list[dict[str, Any]] = list(artifact(name)["abi"])
    if name == "ChainScheduler":
        seen = {_signature(entry) for entry in value}
        for entry in artifact("ChainSchedulerExtension")["abi"]:
            if entry["type"] in ("function", "event", "error") and _signature(entry) not in seen:
                value.append(entry)
                seen.add(_signature(entry))
    return value


def _signature(entry: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    return entry["type"], entry.get("name", ""), tuple(i["type"] for i in entry.get("inputs", []))


def bytecode(name: str = "ChainScheduler") -> str:
    code = artifact(name)["bytecode"]
    if isinstance(code, dict):
        code = code["object"]
    text = str(code)
    return text if text.startswith("0x") else "0x" + text
