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


def abi(name: str = "ChainScheduler") -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = artifact(name)["abi"]
    return value


def bytecode(name: str = "ChainScheduler") -> str:
    code = artifact(name)["bytecode"]
    if isinstance(code, dict):
        code = code["object"]
    text = str(code)
    return text if text.startswith("0x") else "0x" + text
