"""Bidding in both modes: window 0 (first k win) and window > 0 (k cheapest kept)."""

from __future__ import annotations

from chain_harness import (
    COLLATERAL,
    MAX_PRICE,
    STAKE,
    Harness,
    docker_terms,
    events,
    names,
    reverts,
)
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from chain_scheduler import Capability, Executor, JobStatus, Round, SlotState, errors


def expected_seed(h: Harness, job_id: int, digest: bytes) -> bytes:
    return keccak(
        encode(["uint256", "address", "uint256", "bytes20"], [h.w3.eth.chain_id, h.market.address, job_id, digest])
    )


# ------------------------------------------------------------------ window 0


def test_first_k_bids_win_at_once(h: Harness) -> None:
    run = h.post(k=3, m=2)
    a, b, c = h.providers[:3]

    txs = [run.bid(a, 9), run.bid(b, 10), run.bid(c, 4)]

    assigned = events(txs, "SlotAssigned")
    assert assigned == [
        {"jobId": run.job_id, "round": Round.MAIN, "slot": 0, "provider": a, "price": 9},
        {"jobId": run.job_id, "round": Round.MAIN, "slot": 1, "provider": b, "price": 10},
        {"jobId": run.job_id, "round": Round.MAIN, "slot": 2, "provider": c, "price": 4},
    ]
    assert names(txs[0]) == ["SlotAssigned"] and names(txs[1]) == ["SlotAssigned"]
    assert names(txs[2]) == ["SlotAssigned", "BiddingClosed"]
    closed_at = h.w3.eth.get_block(txs[2].block_number)["timestamp"]
    (closed,) = events(txs[2], "BiddingClosed")
    assert closed == {
        "jobId": run.job_id,
        "round": Round.MAIN,
        "seed": expected_seed(h, run.job_id, run.terms.digest),
        "commitDeadline": closed_at + run.terms.exec_timeout,
    }
    job = run.job
    assert (job.status, job.filled, job.deadline) == (JobStatus.RUNNING, 3, closed_at + run.terms.exec_timeout)
    for i, (p, price) in enumerate([(a, 9), (b, 10), (c, 4)]):
        slot = run.slot(i)
        assert (slot.provider, slot.price, slot.state) == (p, price, SlotState.ASSIGNED)
        assert (h.provider(p).free, h.provider(p).locked) == (STAKE - COLLATERAL, COLLATERAL)


def test_bid_after_the_slots_are_taken(h: Harness) -> None:
    run = h.drive("running")
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.RUNNING):
        h.as_(h.providers[5]).bid(run.job_id, 1, run.terms)


def test_seeds_differ_between_jobs(h: Harness) -> None:
    seeds = []
    for _ in range(2):
        run = h.post()
        seeds.append(events(run.bid(h.providers[0]), "BiddingClosed")[0]["seed"])
    assert seeds[0] != seeds[1]


def test_price_too_high(h: Harness) -> None:
    run = h.post()
    with reverts(errors.PriceTooHigh, price=MAX_PRICE + 1, maxPrice=MAX_PRICE):
        h.as_(h.providers[0]).bid(run.job_id, MAX_PRICE + 1, run.terms)


def test_docker_job_refuses_a_wasm_only_provider(h: Harness) -> None:
    run = h.post(**docker_terms())
    with reverts(errors.MissingCapabilities, provider=h.chain.wasm_only, required=2, have=1):
        h.as_(h.chain.wasm_only).bid(run.job_id, 5, run.terms)
    assert run.bid(h.chain.docker_only, 5)  # Docker capability is enough


def test_gpu_job_needs_the_gpu_bit(h: Harness) -> None:
    run = h.post(executor=Executor.DOCKER, capabilities=int(Capability.GPU))
    with reverts(errors.MissingCapabilities, provider=h.chain.docker_only, required=6, have=2):
        h.as_(h.chain.docker_only).bid(run.job_id, 5, run.terms)
    wasm_gpu = h.post(capabilities=int(Capability.GPU))
    with reverts(errors.MissingCapabilities, provider=h.chain.wasm_only, required=5, have=1):
        h.as_(h.chain.wasm_only).bid(wasm_gpu.job_id, 5, wasm_gpu.terms)
    # A provider that gains the bit may bid.
    h.as_(h.chain.docker_only).set_capabilities(Capability.DOCKER | Capability.GPU)
    assert run.bid(h.chain.docker_only, 5)


def test_insufficient_stake(h: Harness) -> None:
    run = h.post(collateral=STAKE + 1)
    provider = h.providers[0]
    with reverts(errors.InsufficientStake, provider=provider, required=STAKE + 1, free=STAKE):
        h.as_(provider).bid(run.job_id, 5, run.terms)


def test_locked_collateral_is_not_free_for_another_job(h: Harness) -> None:
    provider = h.providers[0]
    first = h.post(collateral=STAKE - 10)
    first.bid(provider)
    second = h.post()
    with reverts(errors.InsufficientStake, provider=provider, required=COLLATERAL, free=10):
        h.as_(provider).bid(second.job_id, 5, second.terms)


def test_already_in_job(h: Harness) -> None:
    run = h.post(k=3, m=2)
    provider = h.providers[0]
    run.bid(provider)
    with reverts(errors.AlreadyInJob, jobId=run.job_id, provider=provider):
        h.as_(provider).bid(run.job_id, 5, run.terms)


def test_unregistered_bidder(h: Harness) -> None:
    run = h.post()
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).bid(run.job_id, 5, run.terms)


def test_bid_after_the_fill_deadline(h: Harness) -> None:
    run = h.post(k=3, m=2)
    deadline = run.past_deadline()
    with reverts(errors.DeadlinePassed, jobId=run.job_id, deadline=deadline, now_=lambda t: t >= deadline):
        h.as_(h.providers[0]).bid(run.job_id, 5, run.terms)


# ------------------------------------------------------------------ window > 0


def test_window_keeps_the_k_cheapest(h: Harness) -> None:
    run = h.post(k=2, m=2, bid_window=100)
    a, b, c, d = h.providers[:4]
    txs = [run.bid(a, 9), run.bid(b, 8)]
    assert all("BiddingClosed" not in names(t) for t in txs)
    assert run.status == JobStatus.OPEN

    # Given both slots held, a cheaper bid displaces the dearest (a at 9, slot 0).
    tx = run.bid(c, 7)

    assert names(tx) == ["BidDisplaced", "SlotAssigned"]
    assert events(tx, "BidDisplaced") == [{"jobId": run.job_id, "slot": 0, "provider": a}]
    assert events(tx, "SlotAssigned") == [
        {"jobId": run.job_id, "round": Round.MAIN, "slot": 0, "provider": c, "price": 7}
    ]
    assert (h.provider(a).free, h.provider(a).locked) == (STAKE, 0)
    assert (h.provider(c).free, h.provider(c).locked) == (STAKE - COLLATERAL, COLLATERAL)

    # A bid no cheaper than the dearest kept (b at 8) is refused.
    with reverts(errors.BidNotCompetitive, price=8, dearest=8):
        h.as_(d).bid(run.job_id, 8, run.terms)
    # The displaced provider may come back cheaper: it displaces b now.
    tx = run.bid(a, 6)
    assert events(tx, "BidDisplaced") == [{"jobId": run.job_id, "slot": 1, "provider": b}]
    assert [(run.slot(i).provider, run.slot(i).price) for i in range(2)] == [(c, 7), (a, 6)]
    assert run.job.filled == 2


def test_displacement_takes_the_first_of_equal_dearest(h: Harness) -> None:
    run = h.post(k=3, m=2, bid_window=100)
    a, b, c, d = h.providers[:4]
    run.bid(a, 5)
    run.bid(b, 9)
    run.bid(c, 9)
    tx = run.bid(d, 8)
    assert events(tx, "BidDisplaced") == [{"jobId": run.job_id, "slot": 1, "provider": b}]


def test_close_bidding_inside_the_window(h: Harness) -> None:
    run = h.post(k=1, bid_window=100)
    run.bid(h.providers[0])
    window_end = run.job.deadline - run.terms.fill_timeout + 100
    with reverts(errors.BidWindowOpen, jobId=run.job_id, windowEnd=window_end):
        h.as_(h.deployer).close_bidding(run.job_id, run.terms)


def test_close_bidding_with_empty_slots(h: Harness) -> None:
    run = h.post(k=3, m=2, bid_window=100)
    run.bid(h.providers[0])
    h.travel_to(run.job.deadline - run.terms.fill_timeout + 100)
    with reverts(errors.SlotsNotFilled, jobId=run.job_id, filled=1, needed=3):
        h.as_(h.deployer).close_bidding(run.job_id, run.terms)


def test_close_bidding_after_the_window(h: Harness) -> None:
    run = h.post(k=2, m=2, bid_window=100)
    run.fill(prices=[4, 3])
    tx = run.close_after_window()
    (closed,) = events(tx, "BiddingClosed")
    at = h.w3.eth.get_block(tx.block_number)["timestamp"]
    assert closed == {
        "jobId": run.job_id,
        "round": Round.MAIN,
        "seed": expected_seed(h, run.job_id, run.terms.digest),
        "commitDeadline": at + run.terms.exec_timeout,
    }
    assert run.status == JobStatus.RUNNING
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.RUNNING):
        h.as_(h.deployer).close_bidding(run.job_id, run.terms)


def test_after_the_window_no_more_displacement(h: Harness) -> None:
    run = h.post(k=1, bid_window=100)
    run.bid(h.providers[0], 9)
    h.travel_to(run.job.deadline - run.terms.fill_timeout + 100)
    with reverts(errors.BidNotCompetitive, price=1, dearest=9):
        h.as_(h.providers[1]).bid(run.job_id, 1, run.terms)


def test_after_the_window_the_last_free_slot_closes_bidding(h: Harness) -> None:
    run = h.post(k=2, m=2, bid_window=100)
    run.bid(h.providers[0], 9)
    h.travel_to(run.job.deadline - run.terms.fill_timeout + 100)
    tx = run.bid(h.providers[1], 10)
    assert names(tx) == ["SlotAssigned", "BiddingClosed"]
    assert run.status == JobStatus.RUNNING


def test_a_full_window_nobody_closes_is_closed_by_timeout(h: Harness) -> None:
    run = h.post(k=1, bid_window=100)
    run.bid(h.providers[0])
    tx = run.timeout_now()
    assert names(tx) == ["BiddingClosed"]
    assert run.status == JobStatus.RUNNING


def test_withdraw_bid_from_a_round_that_has_not_filled_frees_the_collateral(h: Harness) -> None:
    # Given a k=3 job with two of three slots held
    run = h.post(k=3, m=2)
    a, b = run.fresh(2)
    run.bid(a)
    run.bid(b)

    # When the first provider leaves
    tx = h.as_(a).withdraw_bid(run.job_id, 0, run.terms)

    # Then its slot is empty, its collateral free, and a fresh bid can take the slot
    assert events(tx, "BidWithdrawn") == [{"jobId": run.job_id, "slot": 0, "provider": a}]
    assert (h.provider(a).free, h.provider(a).locked) == (STAKE, 0)
    assert (run.job.filled, run.slot(0).state, run.slot(0).provider) == (1, SlotState.EMPTY, "0x" + "00" * 20)
    run.fill()
    assert run.status == JobStatus.RUNNING


def test_withdraw_bid_refused_once_the_round_is_full_or_for_another_slot(h: Harness) -> None:
    run = h.post(k=2, m=2)
    a, b = run.fresh(2)
    run.bid(a)
    with reverts(errors.NotSlotHolder, jobId=run.job_id, slot=1, caller=a):
        h.as_(a).withdraw_bid(run.job_id, 1, run.terms)
    with reverts(errors.BidFinal, jobId=run.job_id, slot=2):
        h.as_(a).withdraw_bid(run.job_id, 2, run.terms)
    run.bid(b)  # full: bidding closed
    with reverts(errors.WrongStatus, jobId=run.job_id, expected=JobStatus.OPEN, actual=JobStatus.RUNNING):
        h.as_(a).withdraw_bid(run.job_id, 0, run.terms)


def test_withdraw_bid_refused_in_a_full_bid_window(h: Harness) -> None:
    # A full window decides by price: leaving would let a bidder undo a displacement.
    run = h.post(k=1, bid_window=60, fill_timeout=300)
    (a,) = run.fresh(1)
    run.bid(a)
    with reverts(errors.BidFinal, jobId=run.job_id, slot=0):
        h.as_(a).withdraw_bid(run.job_id, 0, run.terms)


def test_withdraw_bid_refused_after_a_reopening(h: Harness) -> None:
    # The Slashed record of a reopened slot keeps the provider that missed its commit out;
    # withdrawing would erase it.
    run = h.drive("running", k=3, m=2)
    run.commit(0)
    run.timeout_now()  # slots 1 and 2 reopened
    (fresh,) = run.fresh(1)
    run.bid(fresh)
    slot = next(i for i, p in run.holders.items() if p == fresh)
    with reverts(errors.BidFinal, jobId=run.job_id, slot=slot):
        h.as_(fresh).withdraw_bid(run.job_id, slot, run.terms)
