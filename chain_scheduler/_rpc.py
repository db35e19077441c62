"""One guard for every call to the Ethereum node: transport failures become ChainUnavailable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from chain_scheduler import errors

T = TypeVar("T")


def rpc_call(call: Callable[[], T]) -> T:
    """Run ``call``; a connection failure raises :class:`errors.ChainUnavailable` with what to do."""
    try:
        return call()
    except (ConnectionError, OSError) as exc:
        raise errors.ChainUnavailable(
            f"The Ethereum node did not answer ({exc.__class__.__name__}: {exc}). "
            "Is it running? See: chainsched devnet status"
        ) from exc
