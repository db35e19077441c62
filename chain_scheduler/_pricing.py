"""Pricing, in integers, mirroring the contract exactly.

A winning provider is paid ``price × units`` per vote (a verifier drawn for several
seats of its round holds a vote per seat) where ``units`` is the agreed usage
for deterministic jobs and the lower median of the winners' usages otherwise (one per vote),
raised to the job's ``min_units`` (the floor that pays a replica's fixed costs, so a
failure result of no work is still paid) and capped by its ``max_units``. A property test proves this agrees with the
contract for random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from chain_scheduler._model import Wei


def lower_median(values: Sequence[int]) -> int:
    """The lower median: element ``(n - 1) // 2`` of the sorted values."""
    if not values:
        raise ValueError("median of no values")
    return sorted(values)[(len(values) - 1) // 2]


def paid_units(usages: Sequence[int], *, deterministic: bool, max_units: int, min_units: int = 0) -> int:
    """Units each winner is paid for, given the winners' revealed usages (one per vote)."""
    units = usages[0] if deterministic else lower_median(usages)
    return min(max(units, min_units), max_units)


def payment(price: int, units: int, votes: int = 1) -> Wei:
    """Pay for one winner: price per unit (wei) times units, per vote it holds."""
    return Wei(price * units * votes)


def pool_shares(pool: int, winners: int) -> tuple[Wei, Wei]:
    """Split slashed collateral among the client and the ``winners`` winning votes:
    (each vote's share, the client's share incl. dust)."""
    share = pool // (winners + 1)
    return Wei(share), Wei(pool - share * winners)
