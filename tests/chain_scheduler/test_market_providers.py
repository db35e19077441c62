"""Provider registry: register, stake, capabilities, unbonding, unstake."""

from __future__ import annotations

from chain_harness import (
    ALL_CAPS,
    COLLATERAL,
    ETHER,
    STAKE,
    UNBONDING_DELAY,
    Harness,
    events,
    reverts,
)

from chain_scheduler import Capability, Market, errors


def test_register_records_stake_and_capabilities(h: Harness) -> None:
    newcomer = h.outsiders[0]
    before = h.contract_balance()

    tx = h.as_(newcomer).register(Capability.WASM | Capability.GPU, 2 * ETHER)

    assert events(tx, "ProviderRegistered") == [
        {"provider": newcomer, "capabilities": int(Capability.WASM | Capability.GPU), "stake": 2 * ETHER}
    ]
    p = h.provider(newcomer)
    assert (p.registered, p.free, p.locked, p.capabilities) == (True, 2 * ETHER, 0, 5)
    assert (p.succeeded, p.slashed, p.audited, p.unbonding_at) == (0, 0, 0, 0)
    assert h.contract_balance() == before + 2 * ETHER


def test_register_twice_is_refused(h: Harness) -> None:
    provider = h.providers[0]
    with reverts(errors.AlreadyRegistered, provider=provider):
        h.as_(provider).register(Capability.WASM, ETHER)


def test_register_without_stake_is_refused(h: Harness) -> None:
    with reverts(errors.ZeroAmount):
        h.as_(h.outsiders[0]).register(Capability.WASM, 0)
    assert not h.provider(h.outsiders[0]).registered


def test_add_stake_adds_and_ends_unbonding(h: Harness) -> None:
    provider = h.providers[0]
    h.as_(provider).begin_unbonding()
    assert h.provider(provider).unbonding_at != 0

    tx = h.as_(provider).add_stake(ETHER)

    assert events(tx, "StakeAdded") == [{"provider": provider, "amount": ETHER, "free": STAKE + ETHER}]
    p = h.provider(provider)
    assert (p.free, p.unbonding_at) == (STAKE + ETHER, 0)


def test_add_stake_needs_registration_and_value(h: Harness) -> None:
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).add_stake(ETHER)
    with reverts(errors.ZeroAmount):
        h.as_(h.providers[0]).add_stake(0)


def test_set_capabilities(h: Harness) -> None:
    provider = h.providers[0]
    tx = h.as_(provider).set_capabilities(Capability.DOCKER)
    assert events(tx, "CapabilitiesChanged") == [{"provider": provider, "capabilities": int(Capability.DOCKER)}]
    assert h.provider(provider).capabilities == Capability.DOCKER
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).set_capabilities(ALL_CAPS)


def test_begin_unbonding_stops_new_work(h: Harness) -> None:
    provider = h.providers[0]
    tx = h.as_(provider).begin_unbonding()

    unlock_at = h.w3.eth.get_block(tx.block_number)["timestamp"] + UNBONDING_DELAY
    assert events(tx, "UnbondingStarted") == [{"provider": provider, "unlockAt": unlock_at}]
    assert h.provider(provider).unbonding_at == unlock_at
    run = h.post()
    with reverts(errors.Unbonding, provider=provider):
        h.as_(provider).bid(run.job_id, 5, run.terms)
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).begin_unbonding()


def test_unstake_before_unbonding_is_locked(h: Harness) -> None:
    provider = h.providers[0]
    with reverts(errors.StakeLocked, provider=provider, unlockAt=0, locked=0):
        h.as_(provider).unstake(ETHER)


def test_unstake_before_the_delay_is_locked(h: Harness) -> None:
    provider = h.providers[0]
    h.as_(provider).begin_unbonding()
    unlock_at = h.provider(provider).unbonding_at
    with reverts(errors.StakeLocked, provider=provider, unlockAt=unlock_at, locked=0):
        h.as_(provider).unstake(ETHER)


def test_unstake_with_collateral_in_a_job_is_locked(h: Harness) -> None:
    run = h.drive("running")
    provider = run.holders[0]
    h.as_(provider).begin_unbonding()
    unlock_at = h.provider(provider).unbonding_at
    h.travel_to(unlock_at)
    with reverts(errors.StakeLocked, provider=provider, unlockAt=unlock_at, locked=COLLATERAL):
        h.as_(provider).unstake(ETHER)


def test_unstake_zero_and_too_much_are_refused(h: Harness) -> None:
    provider = h.providers[0]
    with reverts(errors.ZeroAmount):
        h.as_(provider).unstake(0)
    h.as_(provider).begin_unbonding()
    h.travel_to(h.provider(provider).unbonding_at)
    with reverts(errors.InsufficientStake, provider=provider, required=STAKE + 1, free=STAKE):
        h.as_(provider).unstake(STAKE + 1)
    with reverts(errors.NotRegistered, provider=h.outsiders[0]):
        h.as_(h.outsiders[0]).unstake(1)


def test_unstake_moves_free_stake_to_credit_then_withdraw_pays_it(h: Harness) -> None:
    provider = h.providers[0]
    h.as_(provider).begin_unbonding()
    h.travel_to(h.provider(provider).unbonding_at)
    contract_before = h.contract_balance()

    tx = h.as_(provider).unstake(3 * ETHER)

    assert events(tx, "Unstaked") == [{"provider": provider, "amount": 3 * ETHER}]
    assert h.provider(provider).free == STAKE - 3 * ETHER
    assert h.credit(provider) == 3 * ETHER
    assert h.contract_balance() == contract_before  # only credited so far
    wallet = h.balance(provider)
    w = h.as_(provider).withdraw()
    assert h.balance(provider) == wallet + 3 * ETHER - h.gas_cost(w)
    assert h.contract_balance() == contract_before - 3 * ETHER
    assert h.credit(provider) == 0


def test_unbonded_provider_rejoins_by_adding_stake(h: Harness) -> None:
    provider = h.providers[0]
    h.as_(provider).begin_unbonding()
    h.as_(provider).add_stake(1)
    run = h.post()
    tx = run.bid(provider, 7)
    assert events(tx, "SlotAssigned")[0]["provider"] == provider


def test_stake_beyond_96_bits_is_refused(h: Harness) -> None:
    too_much = 2**96
    with reverts(errors.AmountTooLarge, amount=too_much):
        h.as_(h.outsiders[0]).register(Capability.WASM, too_much)
    provider = h.providers[0]
    # Free plus locked plus the deposit must fit too (an unlock must never overflow).
    with reverts(errors.AmountTooLarge, amount=STAKE + 2**96 - 1):
        h.as_(provider).add_stake(2**96 - 1)
    assert h.provider(provider).free == STAKE


def test_the_extension_refuses_direct_calls(h: Harness) -> None:
    # Its own storage is not a market: stake sent to it directly would be lost.
    extension = h.market.contract.functions.extension().call()
    direct = Market(w3=h.w3, address=extension, account=h.outsiders[0])
    with reverts(errors.NotDelegated):
        direct.register(1, 10**18)
    assert h.w3.eth.get_balance(extension) == 0


def test_plain_ether_sent_to_the_market_is_refused(h: Harness) -> None:
    # The market's receive() runs in the extension, which has none: the transfer reverts, so
    # ether can only enter as stake, escrow or a bond, all accounted for.
    before = h.contract_balance()
    try:
        tx = h.w3.eth.send_transaction({"from": h.outsiders[0], "to": h.market.address, "value": 1, "gas": 100_000})
        status = h.w3.eth.get_transaction_receipt(tx)["status"]
    except Exception:  # noqa: BLE001 - eth-tester may raise on the revert instead of mining it
        status = 0
    assert status == 0
    assert h.contract_balance() == before
