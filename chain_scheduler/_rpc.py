"""Talking to the Ethereum node: one guard for every call (transport failures become
ChainUnavailable), and one way to open an HTTP connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from web3 import Web3

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


def http_web3(url: str, *, timeout: float = 30.0) -> Web3:
    """A Web3 on an HTTP JSON-RPC endpoint, without web3's per-request validation middleware.

    That middleware asks the node for ``eth_chainId`` twice before every
    ``eth_call``: half of a provider daemon's requests and of its CPU time
    (bench/e2e.py). Our transactions are signed locally with the chain id read
    once, and the node checks it anyway, so nothing is lost.
    """
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))
    w3.middleware_onion.remove("validation")
    return w3
