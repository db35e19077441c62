"""Which jobs a provider node takes: a pure function of its policy, the job's terms and its load.

:func:`decide` does no I/O and keeps no state, so every rule is unit-tested
without a chain. The node gathers the inputs (the terms from ``JobPosted``, its
free stake from the contract, the jobs it is running) and asks before each bid.
The contract checks the same things again (capabilities, stake, price); the
policy only saves the node a transaction that would revert, and adds the rules
the contract cannot know (capacity, the safety classes and job sizes the
operator accepts).

Example:
    >>> policy = NodePolicy(price=2, capacity=2)
    >>> decide(policy, terms, round=Round.MAIN, free_stake=10**18, running=0, pending=0)
    Decision(take=True, reason='take: price 2 <= max 5, 0/2 running, 0/4 unfilled bids', price=2, retry=False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chain_scheduler import Executor, JobTerms, Round, SafetyClass

__all__ = ["Decision", "NodePolicy", "decide", "decide_failure"]

#: Gas a provider spends on one job's slot: bid, commit and reveal (about 90k + 50k + 65k on
#: anvil, bench/gas.py), the withdraw left out since one withdraw collects many jobs' pay.
SLOT_GAS = 200_000


@dataclass(frozen=True, slots=True)
class NodePolicy:
    """What a provider node offers and accepts.

    Attributes:
        price: Wei per metered unit the node bids (Wasm fuel, Docker cpu-ms).
        capacity: Jobs the node executes at once (bidding closed, result not yet
            recorded), at most. A bid on a job whose round has not filled does not
            count: an unfillable job must not block other work.
        pending_bids: Bids on rounds that have not filled yet, at most (they lock
            collateral, and may all fill at once; the node then queues the runs).
        executors: Executors the node can run.
        capabilities: Extra capability bits the node has (``Capability.GPU`` ...),
            beyond the executor bits.
        safety_classes: Safety classes the node accepts.
        rounds: Rounds the node bids in: the main replicas, audits, verifications.
        max_units: Largest ``maxUnits`` the node accepts (None: any).
        max_collateral: Most collateral (wei) the node risks on one slot (None: no cap
            but the share below).
        max_stake_share_bps: Most of its whole stake (free plus locked, in basis points)
            the node risks on one slot: a job built to capture its verifiers must not
            take a provider's whole stake with it (default 25%).
        failure_gas: Gas the node spends on a slot (:data:`SLOT_GAS` by default). A job
            its precheck says will end in a failure result is paid ``minUnits × price``
            only; the node bids on it only when that covers this gas at the chain's gas
            price (:func:`decide_failure`), so junk jobs cannot drain its gas. 0 takes them all.
    """

    price: int
    capacity: int = 1
    pending_bids: int = 4
    executors: frozenset[Executor] = field(default_factory=lambda: frozenset({Executor.WASM}))
    capabilities: int = 0
    safety_classes: frozenset[SafetyClass] = field(
        default_factory=lambda: frozenset({SafetyClass.DETERMINISTIC, SafetyClass.NONDESTRUCTIVE})
    )
    rounds: frozenset[Round] = field(default_factory=lambda: frozenset(Round))
    max_units: int | None = None
    max_collateral: int | None = None
    max_stake_share_bps: int = 2_500
    failure_gas: int = SLOT_GAS

    def __post_init__(self) -> None:
        if self.price < 0:
            raise ValueError(f"price must be >= 0 wei per unit, got {self.price}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1 job, got {self.capacity}")
        if self.pending_bids < 1:
            raise ValueError(f"pending_bids must be at least 1, got {self.pending_bids}")
        if self.max_collateral is not None and self.max_collateral < 0:
            raise ValueError(f"max_collateral must be >= 0 wei or None, got {self.max_collateral}")
        if not 0 < self.max_stake_share_bps <= 10_000:
            raise ValueError(f"max_stake_share_bps must be in 1..10000, got {self.max_stake_share_bps}")
        if self.failure_gas < 0:
            raise ValueError(f"failure_gas must be >= 0, got {self.failure_gas}")
        if self.max_units is not None and self.max_units < 1:
            raise ValueError(f"max_units must be positive or None, got {self.max_units}")

    @property
    def capability_bits(self) -> int:
        """Every capability bit the node holds: its executors' bits plus the extras."""
        bits = self.capabilities
        for executor in self.executors:
            bits |= 1 << int(executor)
        return bits


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to bid for a job, why, and at what price.

    Attributes:
        take: True to bid.
        reason: One line for the log, saying which rule decided.
        price: The price per unit to bid (the policy's price).
        retry: Not now, but ask again when the node's load drops (it was busy).
    """

    take: bool
    reason: str
    price: int
    retry: bool = False


def decide(
    policy: NodePolicy,
    terms: JobTerms,
    *,
    round: Round,
    free_stake: int,
    running: int,
    pending: int = 0,
    locked_stake: int = 0,
) -> Decision:
    """Decide whether the node bids for a slot of ``round`` in a job with these terms.

    The rules, in order (the first that fails decides): the round is one the node
    serves; the executor is supported; every required capability is held; the
    job's max price is at least the node's price; an execution slot is free and
    the node holds fewer than ``pending_bids`` unfilled bids; the free stake
    covers the collateral, which is within ``max_collateral`` and
    ``max_stake_share_bps`` of the whole stake; the safety class is accepted; ``maxUnits`` is within
    the node's limit.

    Args:
        policy: The node's policy.
        terms: The job's terms.
        round: The round whose slot would be taken.
        free_stake: The node's free (unlocked) stake in wei, from the contract.
        running: Jobs the node is executing or about to (bidding closed, no result yet).
        pending: The node's bids on rounds that have not filled.
        locked_stake: The node's locked stake in wei (with ``free_stake``: its whole stake).

    Returns:
        The decision; ``price`` is the policy's price either way.
    """
    price = policy.price

    def no(reason: str) -> Decision:
        return Decision(take=False, reason=reason, price=price)

    if round not in policy.rounds:
        return no(f"skip: this node does not serve {Round(round).name.lower()} rounds")
    if terms.executor not in policy.executors:
        return no(f"skip: executor {Executor(terms.executor).name.lower()} not supported here")
    missing = terms.required_capabilities & ~policy.capability_bits
    if missing:
        return no(f"skip: missing capability bits {missing:#x} (job needs {terms.required_capabilities:#x})")
    if terms.max_price < price:
        return no(f"skip: max price {terms.max_price} is below this node's price {price}")
    if running >= policy.capacity:
        return Decision(False, f"later: at capacity ({running}/{policy.capacity} running)", price, retry=True)
    if pending >= policy.pending_bids:
        return Decision(
            False, f"later: {pending}/{policy.pending_bids} bids wait for their rounds to fill", price, retry=True
        )
    if free_stake < terms.collateral:
        return no(f"skip: free stake {free_stake} wei cannot cover the collateral {terms.collateral} wei")
    if policy.max_collateral is not None and terms.collateral > policy.max_collateral:
        return no(f"skip: collateral {terms.collateral} wei is above this node's cap of {policy.max_collateral} wei")
    stake = free_stake + locked_stake
    if terms.collateral * 10_000 > stake * policy.max_stake_share_bps:
        return no(
            f"skip: collateral {terms.collateral} wei is more than {policy.max_stake_share_bps / 100:g}% "
            f"of this node's stake ({stake} wei)"
        )
    if terms.safety not in policy.safety_classes:
        return no(f"skip: safety class {SafetyClass(terms.safety).name.lower()} not accepted")
    if policy.max_units is not None and terms.max_units > policy.max_units:
        return no(f"skip: max units {terms.max_units} above this node's limit {policy.max_units}")
    return Decision(
        take=True,
        reason=(
            f"take: price {price} <= max {terms.max_price}, {running}/{policy.capacity} running, "
            f"{pending}/{policy.pending_bids} unfilled bids"
        ),
        price=price,
    )


def decide_failure(policy: NodePolicy, terms: JobTerms, *, price: int, gas_price: int) -> Decision:
    """Whether to bid on a job the precheck says will end in a failure result.

    Every replica reveals the same failure result and is paid ``price × minUnits``
    (its usage is 0). A client could post such jobs with ``minUnits`` 0 by the
    thousand and have honest nodes pay the gas of bidding, committing and revealing
    each; the node takes one only when the pay covers ``policy.failure_gas`` at
    ``gas_price`` (wei per gas, from the chain).

    Example:
        >>> decide_failure(NodePolicy(price=2), terms, price=2, gas_price=10**9).take
        False
    """
    pay = terms.min_units * price
    cost = policy.failure_gas * gas_price
    if pay < cost:
        return Decision(
            take=False,
            reason=(
                f"skip: it will end in a failure result paid {pay} wei (minUnits {terms.min_units} x price "
                f"{price}), below the {cost} wei of gas a slot costs ({policy.failure_gas:,} gas at {gas_price} wei)"
            ),
            price=price,
        )
    return Decision(take=True, reason=f"take: the failure result's pay {pay} wei covers {cost} wei of gas", price=price)
