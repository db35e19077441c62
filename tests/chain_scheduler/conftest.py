"""Fixtures for the contract tests: one eth-tester chain per session, a snapshot per test.

The chain (contract deployed, providers registered) is built once; each test runs
on a snapshot taken before it and reverted after it (about 10 ms each), so tests
see the same starting state and cannot leak into each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chain_harness import Chain, Harness, build_chain, compile_test_contracts


@pytest.fixture(scope="session")
def chain() -> Chain:
    """The session's chain: contract deployed, providers registered."""
    return build_chain()


@pytest.fixture
def h(chain: Chain) -> Iterator[Harness]:
    """A harness on a snapshot of the session chain, reverted after the test."""
    snapshot = chain.tester.take_snapshot()
    # Job ids restart after a revert: the shared terms cache must not outlive the test.
    chain.market._terms.clear()
    try:
        yield Harness(chain)
    finally:
        chain.tester.revert_to_snapshot(snapshot)
        chain.market._terms.clear()


@pytest.fixture(scope="session")
def test_contracts() -> dict[str, dict[str, Any]]:
    """ABI and bytecode of the test-only contracts (tests/chain_scheduler/contracts), compiled once."""
    return compile_test_contracts()
