"""The Python pricing (chain_scheduler._pricing) agrees with the contract.

Each example drives a real k=3 m=2 job through its whole lifecycle on eth-tester
with random prices, usages and possibly one wrong provider, then compares every
ProviderPaid amount, the refund and the credits with the Python computation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chain_harness import BAD, GOOD, Chain, Harness, docker_terms, events, in_big_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain_scheduler import lower_median, paid_units, payment, pool_shares


@contextmanager
def fresh(chain: Chain) -> Iterator[Harness]:
    snapshot = chain.tester.take_snapshot()
    chain.market._terms.clear()
    try:
        yield Harness(chain)
    finally:
        chain.tester.revert_to_snapshot(snapshot)
        chain.market._terms.clear()


@dataclass(frozen=True)
class Scenario:
    deterministic: bool
    max_units: int
    min_units: int
    max_price: int
    prices: list[int]
    usages: list[int]
    wrong: int | None  # the slot that reveals another result, if any
    collateral: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    deterministic = draw(st.booleans())
    max_units = draw(st.integers(1, 10**9))
    min_units = draw(st.sampled_from([0, 1, max_units]) | st.integers(0, max_units))
    max_price = draw(st.integers(1, 10**9))
    prices = draw(st.lists(st.integers(0, max_price), min_size=3, max_size=3))
    wrong = draw(st.none() | st.integers(0, 2))
    usage = st.integers(0, 2 * max_units) | st.sampled_from([0, max_units, max_units + 1])
    if deterministic:
        usages = [draw(usage)] * 3
        if wrong is not None:
            usages[wrong] = draw(usage)
    else:
        usages = draw(st.lists(usage, min_size=3, max_size=3))
    collateral = draw(st.integers(1, 10**15))
    return Scenario(deterministic, max_units, min_units, max_price, prices, usages, wrong, collateral)


def test_contract_pays_what_python_computes(chain: Chain) -> None:
    in_big_frame(_contract_pays_what_python_computes, chain)


def _contract_pays_what_python_computes(chain: Chain) -> None:
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(s=scenarios())
    def check(s: Scenario) -> None:
        _check_one(chain, s)

    check()


def _check_one(chain: Chain, s: Scenario) -> None:
    results = [(BAD if i == s.wrong else GOOD, s.usages[i]) for i in range(3)]
    with fresh(chain) as h:
        run = h.drive(
            "succeeded",
            k=3,
            m=2,
            prices=s.prices,
            results=results,
            max_units=s.max_units,
            min_units=s.min_units,
            max_price=s.max_price,
            collateral=s.collateral,
            **({} if s.deterministic else docker_terms()),
        )

        tx = run.finalize()

        winners = [i for i in range(3) if i != s.wrong]
        units = paid_units(
            [s.usages[i] for i in winners], deterministic=s.deterministic, max_units=s.max_units, min_units=s.min_units
        )
        amounts = [payment(s.prices[i], units) for i in winners]
        assert [(e["slot"], e["amount"], e["units"]) for e in events(tx, "ProviderPaid")] == [
            (i, a, units) for i, a in zip(winners, amounts, strict=True)
        ]
        pool = 0 if s.wrong is None else s.collateral
        share, client_share = pool_shares(pool, len(winners))
        finalized = events(tx, "JobFinalized")[0]
        assert finalized["paid"] == sum(amounts)
        assert finalized["refund"] == run.escrow - sum(amounts)
        for i, amount in zip(winners, amounts, strict=True):
            assert h.credit(run.holders[i]) == amount + share
        assert h.credit(run.client) == run.escrow - sum(amounts) + client_share


@settings(max_examples=200, deadline=None, database=None)
@given(values=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=17))
def test_lower_median_is_the_lower_middle(values: list[int]) -> None:
    m = lower_median(values)
    below = sum(1 for v in values if v < m)
    at_or_below = sum(1 for v in values if v <= m)
    # At least half (rounded up) are <= m, and fewer than half (rounded up) are < m.
    assert at_or_below >= (len(values) + 1) // 2 > below


@settings(max_examples=200, deadline=None, database=None)
@given(pool=st.integers(0, 2**96), winners=st.integers(1, 32))
def test_pool_shares_conserve_the_pool(pool: int, winners: int) -> None:
    share, client = pool_shares(pool, winners)
    assert share * winners + client == pool
    assert 0 <= client - share <= winners  # the client keeps only the rounding dust on top
