"""The revert decoder: eth-tester failures and a real node's custom-error data give the same exception.

A real node (anvil here) answers a reverted call with the custom error's selector
and ABI-encoded arguments as a hex string (web3 raises ``ContractCustomError`` with
it in ``.data``); eth-tester raises its own ``TransactionFailed`` carrying the raw
bytes. Both must decode into the same class with the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chain_harness import ETHER, SPEC_CID, Harness, check_error
from eth_abi.abi import encode
from eth_tester.exceptions import TransactionFailed as EthTesterFailed
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError

from chain_scheduler import Capability, JobStatus, JobTerms, Market, decode_revert, errors
from chain_scheduler._abi import abi
from chain_scheduler._anvil import Anvil
from chain_scheduler._revert import decode_error_data, revert_data

ADDRESS = "0x" + "ab" * 20


def _abi_errors() -> list[dict[str, Any]]:
    return [item for item in abi() if item.get("type") == "error"]


def _sample(abi_type: str, i: int) -> Any:
    if abi_type == "address":
        return ADDRESS
    if abi_type.startswith("bytes"):
        return keccak(bytes([i]))[: int(abi_type[5:])]
    if abi_type == "bool":
        return i % 2 == 0
    return 2 + i % 3  # uint8 2..4 is a valid JobStatus and SlotState


def _raw(item: dict[str, Any], values: list[Any]) -> bytes:
    types = [i["type"] for i in item["inputs"]]
    selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
    return selector + encode(types, values)


def _carriers(data: bytes) -> list[BaseException]:
    """The same revert as the various clients raise it."""
    hexdata = "0x" + data.hex()
    nested = RuntimeError("execution reverted")
    nested.data = {"code": 3, "message": "execution reverted", "data": hexdata}  # type: ignore[attr-defined]
    cause = EthTesterFailed(data)
    tester = EthTesterFailed(f"execution reverted: {data!r}")
    tester.__cause__ = cause
    return [
        ContractCustomError(hexdata, data=hexdata),  # web3 on a real node
        nested,  # an RPC error object with the data nested
        RuntimeError(f"execution reverted: {hexdata}"),  # only the message
        tester,  # eth-tester
        EthTesterFailed(f"execution reverted: {data!r}"),  # eth-tester, message only
    ]


def test_every_abi_error_has_a_class() -> None:
    in_abi = {item["name"].removeprefix("ChainScheduler") for item in _abi_errors()}
    assert in_abi == set(errors.CONTRACT_ERRORS)
    for cls in errors.CONTRACT_ERRORS.values():
        assert issubclass(cls, errors.ContractError)


@pytest.mark.parametrize("item", _abi_errors(), ids=lambda item: item["name"])
def test_raw_error_data_decodes_the_same_from_every_carrier(item: dict[str, Any]) -> None:
    values = [_sample(i["type"], n) for n, i in enumerate(item["inputs"])]
    data = _raw(item, values)
    cls = errors.CONTRACT_ERRORS[item["name"].removeprefix("ChainScheduler")]
    expected = {i["name"]: v for i, v in zip(item["inputs"], values, strict=True)}

    decoded = [decode_revert(exc) for exc in _carriers(data)]

    for exc in decoded:
        assert exc is not None
        check_error(exc, cls, **expected)
        assert str(exc)  # a message renders
    assert len({(type(e).__name__, tuple(sorted(e.fields.items()))) for e in decoded}) == 1  # type: ignore[union-attr]
    assert all(revert_data(c) == data for c in _carriers(data))


def test_unknown_and_panic_data_are_transaction_failures() -> None:
    panic = bytes.fromhex("4e487b71") + encode(["uint256"], [0x32])
    for data in (panic, b"\xde\xad\xbe\xef", b""):
        for carrier in _carriers(data)[:2]:
            exc = decode_revert(carrier)
            assert type(exc) is errors.TransactionFailed
    assert decode_error_data(panic) is None


def test_non_reverts_are_not_decoded() -> None:
    assert decode_revert(ConnectionError("refused")) is None
    assert decode_revert(ValueError("nonce too low")) is None


# ------------------------------------------------------- real failures, both chains

Case = Callable[[Market, list[str]], None]


def _already_registered(m: Market, accounts: list[str]) -> None:
    m.with_account(accounts[1]).register(Capability.WASM, ETHER)
    m.with_account(accounts[1]).register(Capability.WASM, ETHER)


def _wrong_escrow(m: Market, accounts: list[str]) -> None:
    terms = JobTerms.create(client=accounts[2], spec_cid=SPEC_CID, max_price=10, max_units=1000, collateral=1)
    m.with_account(accounts[2]).post_job(SPEC_CID, terms, value=terms.escrow - 1)


def _spec_mismatch(m: Market, accounts: list[str]) -> None:
    terms = JobTerms.create(client=accounts[2], spec_cid="other", max_price=10, max_units=1000, collateral=1)
    m.with_account(accounts[2]).post_job(SPEC_CID, terms)


def _terms_mismatch_then_wrong_status(m: Market, accounts: list[str]) -> None:
    terms = JobTerms.create(client=accounts[2], spec_cid=SPEC_CID, max_price=10, max_units=1000, collateral=1)
    job_id = m.with_account(accounts[2]).post_job(SPEC_CID, terms)
    m.with_account(accounts[2]).cancel(job_id, terms)
    m.with_account(accounts[2]).cancel(job_id, terms)


def _zero_amount(m: Market, accounts: list[str]) -> None:
    m.with_account(accounts[3]).register(Capability.WASM, 0)


CASES: list[tuple[str, Case, type[errors.ContractError], Callable[[list[str]], dict[str, Any]]]] = [
    ("AlreadyRegistered", _already_registered, errors.AlreadyRegistered, lambda a: {"provider": a[1]}),
    ("WrongEscrow", _wrong_escrow, errors.WrongEscrow, lambda a: {"expected": 10_000, "sent": 9_999}),
    (
        "SpecMismatch",
        _spec_mismatch,
        errors.SpecMismatch,
        lambda a: {"expected": keccak(SPEC_CID.encode()), "actual": keccak(b"other")},
    ),
    (
        "WrongStatus",
        _terms_mismatch_then_wrong_status,
        errors.WrongStatus,
        lambda a: {"jobId": lambda v: v >= 1, "expected": JobStatus.OPEN, "actual": JobStatus.CANCELLED},
    ),
    ("ZeroAmount", _zero_amount, errors.ZeroAmount, lambda a: {}),
]


@pytest.fixture(scope="module")
def anvil_market() -> Iterator[tuple[Market, list[str]]]:
    """The contract on a real anvil node (the node signs for its funded accounts)."""
    node = Anvil(accounts=5)
    node.start()
    try:
        w3: Web3 = node.web3()
        accounts = [str(to_checksum_address(a)) for a in w3.eth.accounts]
        yield Market.deploy(w3=w3, account=accounts[0]), accounts
    finally:
        node.stop()


@pytest.mark.parametrize(("name", "case", "cls", "fields"), CASES, ids=[c[0] for c in CASES])
def test_eth_tester_and_a_real_node_raise_the_same_error(
    h: Harness,
    anvil_market: tuple[Market, list[str]],
    name: str,
    case: Case,
    cls: type[errors.ContractError],
    fields: Callable[[list[str]], dict[str, Any]],
) -> None:
    got = {}
    for chain, (market, accounts) in {
        "eth-tester": (h.market, h.chain.accounts),
        "anvil": anvil_market,
    }.items():
        with pytest.raises(errors.ContractError) as info:
            case(market, accounts)
        check_error(info.value, cls, **fields(accounts))
        got[chain] = info.value
    if name != "AlreadyRegistered":  # the only case naming a chain-specific account
        assert got["eth-tester"].fields == got["anvil"].fields


def test_a_real_node_reverts_during_gas_estimation_decode_too(anvil_market: tuple[Market, list[str]]) -> None:
    market, accounts = anvil_market
    estimating = Market(w3=market.w3, address=market.address, account=accounts[4], gas=None)
    with pytest.raises(errors.NotRegistered) as info:
        estimating.add_stake(1)
    check_error(info.value, errors.NotRegistered, provider=accounts[4])


def test_eth_tester_reverts_during_gas_estimation_decode_too(h: Harness) -> None:
    estimating = Market(w3=h.w3, address=h.market.address, account=h.outsiders[0], gas=None)
    with pytest.raises(errors.NotRegistered) as info:
        estimating.add_stake(1)
    check_error(info.value, errors.NotRegistered, provider=h.outsiders[0])


def test_a_failed_view_call_decodes(h: Harness) -> None:
    terms = h.terms()
    with pytest.raises(errors.UnknownJob) as info:
        h.market._call(h.market.contract.functions.bid(7, terms.as_abi(), 1))
    check_error(info.value, errors.UnknownJob, jobId=7)
