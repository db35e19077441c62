"""The bidding policy: each rule of :func:`compute_node.decide` on its own, then their order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chain_scheduler import Capability, Executor, JobTerms, Round, SafetyClass
from compute_node import Decision, NodePolicy, decide, decide_failure

CLIENT = "0x" + "11" * 20
ETH = 10**18


def make_terms(**overrides: Any) -> JobTerms:
    fields: dict[str, Any] = {
        "client": CLIENT,
        "spec_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        "k": 3,
        "m": 2,
        "max_price": 5,
        "max_units": 1_000_000,
        "collateral": ETH // 100,
    }
    fields.update(overrides)
    return JobTerms.create(**fields)


POLICY = NodePolicy(price=2, capacity=2)


def test_a_job_that_fits_is_taken_at_the_nodes_price() -> None:
    decision = decide(POLICY, make_terms(), round=Round.MAIN, free_stake=ETH, running=0)
    assert decision == Decision(take=True, reason=decision.reason, price=2)
    assert decision.reason.startswith("take:")


def test_unsupported_executor_is_refused() -> None:
    terms = make_terms(executor=Executor.DOCKER)
    decision = decide(POLICY, terms, round=Round.MAIN, free_stake=ETH, running=0)
    assert not decision.take
    assert "executor docker not supported" in decision.reason
    docker_node = dataclasses.replace(POLICY, executors=frozenset({Executor.WASM, Executor.DOCKER}))
    assert decide(docker_node, terms, round=Round.MAIN, free_stake=ETH, running=0).take


def test_missing_capability_is_refused() -> None:
    terms = make_terms(capabilities=int(Capability.GPU))
    decision = decide(POLICY, terms, round=Round.MAIN, free_stake=ETH, running=0)
    assert not decision.take
    assert "missing capability bits 0x4" in decision.reason
    gpu_node = dataclasses.replace(POLICY, capabilities=int(Capability.GPU))
    assert decide(gpu_node, terms, round=Round.MAIN, free_stake=ETH, running=0).take


@pytest.mark.parametrize(("max_price", "take"), [(1, False), (2, True), (3, True)])
def test_max_price_must_reach_the_nodes_price(max_price: int, take: bool) -> None:
    decision = decide(POLICY, make_terms(max_price=max_price), round=Round.MAIN, free_stake=ETH, running=0)
    assert decision.take is take
    if not take:
        assert "max price 1 is below this node's price 2" in decision.reason


@pytest.mark.parametrize(("running", "take"), [(0, True), (1, True), (2, False), (5, False)])
def test_capacity_bounds_the_jobs_in_hand(running: int, take: bool) -> None:
    decision = decide(POLICY, make_terms(), round=Round.MAIN, free_stake=ETH, running=running)
    assert decision.take is take
    assert decision.retry is not take  # busy is "later", not "never"
    if not take:
        assert "at capacity" in decision.reason


@pytest.mark.parametrize(("pending", "take"), [(0, True), (3, True), (4, False)])
def test_unfilled_bids_are_bounded_apart_from_the_capacity(pending: int, take: bool) -> None:
    # Bids on rounds that have not filled do not take an execution slot (an unfillable job
    # must not block other work), but they lock collateral, so they are bounded too.
    decision = decide(POLICY, make_terms(), round=Round.MAIN, free_stake=ETH, running=1, pending=pending)
    assert decision.take is take
    assert decision.retry is not take
    if not take:
        assert "4/4 bids wait for their rounds to fill" in decision.reason


@pytest.mark.parametrize(("free", "take"), [(ETH // 100 - 1, False), (ETH // 100, True), (0, False)])
def test_free_stake_must_cover_the_collateral(free: int, take: bool) -> None:
    decision = decide(POLICY, make_terms(), round=Round.MAIN, free_stake=free, locked_stake=ETH, running=0)
    assert decision.take is take
    if not take:
        assert "cannot cover the collateral" in decision.reason


@pytest.mark.parametrize(("stake", "take"), [(4 * ETH // 100, True), (4 * ETH // 100 - 1, False)])
def test_one_slot_risks_at_most_a_share_of_the_whole_stake(stake: int, take: bool) -> None:
    # Collateral 0.01 ETH: 25% of a 0.04 ETH stake, locked or free, and no more
    decision = decide(POLICY, make_terms(), round=Round.MAIN, free_stake=ETH // 100, locked_stake=stake - ETH // 100,
                      running=0)  # fmt: skip
    assert decision.take is take
    if not take:
        assert "is more than 25% of this node's stake" in decision.reason


def test_collateral_above_the_nodes_cap_is_refused() -> None:
    capped = dataclasses.replace(POLICY, max_collateral=ETH // 100 - 1)
    decision = decide(capped, make_terms(), round=Round.MAIN, free_stake=ETH, running=0)
    assert not decision.take
    assert "above this node's cap" in decision.reason
    assert decide(dataclasses.replace(capped, max_collateral=ETH // 100), make_terms(), round=Round.MAIN,
                  free_stake=ETH, running=0).take  # fmt: skip


def test_safety_class_must_be_accepted() -> None:
    terms = make_terms(executor=Executor.DOCKER, safety=SafetyClass.DESTRUCTIVE, k=1, m=1)
    docker_node = dataclasses.replace(POLICY, executors=frozenset({Executor.DOCKER}))
    decision = decide(docker_node, terms, round=Round.MAIN, free_stake=ETH, running=0)
    assert not decision.take
    assert "safety class destructive not accepted" in decision.reason
    accepting = dataclasses.replace(docker_node, safety_classes=frozenset(SafetyClass))
    assert decide(accepting, terms, round=Round.MAIN, free_stake=ETH, running=0).take


def test_max_units_above_the_nodes_limit_is_refused() -> None:
    limited = dataclasses.replace(POLICY, max_units=1_000)
    assert decide(limited, make_terms(max_units=1_000), round=Round.MAIN, free_stake=ETH, running=0).take
    decision = decide(limited, make_terms(max_units=1_001), round=Round.MAIN, free_stake=ETH, running=0)
    assert not decision.take
    assert "max units 1001 above this node's limit 1000" in decision.reason


def test_rounds_the_node_does_not_serve_are_skipped() -> None:
    main_only = dataclasses.replace(POLICY, rounds=frozenset({Round.MAIN}))
    assert decide(main_only, make_terms(), round=Round.MAIN, free_stake=ETH, running=0).take
    for round_ in (Round.AUDIT, Round.VERIFY):
        decision = decide(main_only, make_terms(), round=round_, free_stake=ETH, running=0)
        assert not decision.take
        assert f"does not serve {round_.name.lower()} rounds" in decision.reason
    assert decide(POLICY, make_terms(), round=Round.VERIFY, free_stake=ETH, running=0).take


def test_the_first_failing_rule_is_the_reason() -> None:
    terms = make_terms(executor=Executor.DOCKER, max_price=1)
    decision = decide(POLICY, terms, round=Round.MAIN, free_stake=0, running=9)
    assert "executor docker" in decision.reason


def test_price_is_the_policys_either_way() -> None:
    refused = decide(POLICY, make_terms(max_price=1), round=Round.MAIN, free_stake=ETH, running=0)
    assert refused.price == POLICY.price


@pytest.mark.parametrize(
    "kwargs",
    [{"price": -1}, {"price": 1, "capacity": 0}, {"price": 1, "max_units": 0}],
)
def test_impossible_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NodePolicy(**kwargs)


def test_capability_bits_cover_executors_and_extras() -> None:
    both = frozenset({Executor.WASM, Executor.DOCKER})
    policy = NodePolicy(price=1, executors=both, capabilities=int(Capability.GPU))
    assert policy.capability_bits == int(Capability.WASM | Capability.DOCKER | Capability.GPU)


# ------------------------------------------------------------- failure results


def test_a_failing_job_is_taken_only_when_its_floor_pays_for_the_gas() -> None:
    # 200,000 gas at 1 gwei costs 2e14 wei: a floor of minUnits x price must reach it
    junk = make_terms(min_units=0)
    declined = decide_failure(POLICY, junk, price=2, gas_price=10**9)
    assert not declined.take and not declined.retry
    assert declined.reason == (
        "skip: it will end in a failure result paid 0 wei (minUnits 0 x price 2), "
        "below the 200000000000000 wei of gas a slot costs (200,000 gas at 1000000000 wei)"
    )
    paying = make_terms(min_units=10**14)
    assert decide_failure(POLICY, paying, price=2, gas_price=10**9).take
    assert not decide_failure(POLICY, paying, price=1, gas_price=10**9 + 1).take
    # An operator may take every failure result (0), or none that pay less than more gas
    assert decide_failure(dataclasses.replace(POLICY, failure_gas=0), junk, price=2, gas_price=10**9).take
    with pytest.raises(ValueError, match="failure_gas must be >= 0"):
        NodePolicy(price=2, failure_gas=-1)
