"""Typed values of the market: ids, amounts, enums and the contract's records.

These mirror the Solidity types in ``contracts/IChainScheduler.sol`` one to one;
the field order of :class:`JobTerms` is the ABI order and must not change
without the contract changing with it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NewType

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

JobId = NewType("JobId", int)
Wei = NewType("Wei", int)
Units = NewType("Units", int)

#: ABI type of the JobTerms tuple, in field order.
TERMS_ABI = (
    "(address,bytes32,uint8,uint8,uint8,uint8,uint8,uint16,uint32,uint64,uint64,uint64,uint96,"
    "uint32,uint32,uint32,uint32,uint32,bool,uint64[])"
)


class Executor(enum.IntEnum):
    """How a job runs; the value is also the provider capability bit index."""

    WASM = 0
    DOCKER = 1


class Capability(enum.IntFlag):
    """Provider capability bits (``register(capabilities)``)."""

    WASM = 1 << 0
    DOCKER = 1 << 1
    GPU = 1 << 2
    #: Opted in to be drawn as an auditor or verifier (the contract's ``VERIFIER``).
    VERIFIER = 1 << 31


def capability_names(bits: int) -> tuple[str, ...]:
    """The names of the capability bits set in ``bits``: 3 -> ``("wasm", "docker")``."""
    return tuple(str(c.name).lower() for c in Capability if bits & c)


def capability_bits(names: Iterable[str]) -> int:
    """The bits of capability names, repeated or comma-separated: ``["wasm", "docker,gpu"]`` -> 7.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    bits = 0
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                bits |= int(Capability[part.upper()])
            except KeyError:
                choices = ", ".join(str(c.name).lower() for c in Capability)
                raise ValueError(f"unknown capability {part!r}: use {choices}") from None
    return bits


class SafetyClass(enum.IntEnum):
    """What the scheduler may do with a job (see DESIGN.md, "Safety classes")."""

    DETERMINISTIC = 0
    NONDESTRUCTIVE = 1
    DESTRUCTIVE = 2


class JobStatus(enum.IntEnum):
    """Lifecycle of a job; FINALIZED, FAILED and CANCELLED are terminal."""

    NONE = 0
    OPEN = 1
    RUNNING = 2
    REVEALING = 3
    SUCCEEDED = 4
    FINALIZED = 5
    FAILED = 6
    CANCELLED = 7

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.FINALIZED, JobStatus.FAILED, JobStatus.CANCELLED)


class Round(enum.IntEnum):
    """Which set of slots a job is filling: the k replicas, an audit, or verifiers."""

    MAIN = 0
    AUDIT = 1
    VERIFY = 2


class SlotState(enum.IntEnum):
    """State of one replica slot."""

    EMPTY = 0
    ASSIGNED = 1
    COMMITTED = 2
    REVEALED = 3
    SLASHED = 4
    SETTLED = 5


class FailReason(enum.IntEnum):
    """Why a job ended FAILED."""

    NOT_FILLED = 0
    NO_QUORUM = 1
    NO_COMMITS = 2
    UNPUBLISHED = 3


@dataclass(frozen=True, slots=True)
class JobTerms:
    """The immutable terms of a job, passed back to every job function.

    Example:
        >>> terms = JobTerms.create(client="0x" + "11" * 20, spec_cid="bafy...", k=3, m=2,
        ...                         max_price=10, max_units=1_000_000, collateral=10**16)
    """

    client: str
    spec_digest: bytes
    executor: Executor
    safety: SafetyClass
    k: int
    m: int
    verifiers: int
    audit_bps: int
    capabilities: int
    max_price: int
    max_units: int
    min_units: int
    collateral: int
    bid_window: int
    fill_timeout: int
    exec_timeout: int
    reveal_window: int
    challenge_window: int
    lottery: bool = False
    parents: tuple[int, ...] = field(default=())

    @classmethod
    def create(
        cls,
        *,
        client: str,
        spec_cid: str,
        executor: Executor = Executor.WASM,
        safety: SafetyClass | None = None,
        k: int = 1,
        m: int = 1,
        verifiers: int = 0,
        audit_bps: int = 0,
        capabilities: int = 0,
        max_price: int,
        max_units: int,
        collateral: int,
        min_units: int = 0,
        bid_window: int = 0,
        fill_timeout: int = 300,
        exec_timeout: int = 300,
        reveal_window: int = 120,
        challenge_window: int = 60,
        lottery: bool = False,
        parents: tuple[int, ...] = (),
    ) -> JobTerms:
        """Terms with defaults a local market can use; the spec CID is digested here."""
        if safety is None:
            safety = SafetyClass.DETERMINISTIC if executor == Executor.WASM else SafetyClass.NONDESTRUCTIVE
        return cls(
            client=to_checksum_address(client),
            spec_digest=spec_digest(spec_cid),
            executor=Executor(executor),
            safety=SafetyClass(safety),
            k=k,
            m=m,
            verifiers=verifiers,
            audit_bps=audit_bps,
            capabilities=int(capabilities),  # an IntFlag is iterable: web3 would encode it as a list
            max_price=max_price,
            max_units=max_units,
            min_units=min_units,
            collateral=collateral,
            bid_window=bid_window,
            fill_timeout=fill_timeout,
            exec_timeout=exec_timeout,
            reveal_window=reveal_window,
            challenge_window=challenge_window,
            lottery=bool(lottery),
            parents=tuple(parents),
        )

    def as_abi(self) -> tuple[Any, ...]:
        """The terms as the ABI tuple the contract takes."""
        return (
            to_checksum_address(self.client),
            self.spec_digest,
            int(self.executor),
            int(self.safety),
            self.k,
            self.m,
            self.verifiers,
            self.audit_bps,
            int(self.capabilities),
            self.max_price,
            self.max_units,
            self.min_units,
            self.collateral,
            self.bid_window,
            self.fill_timeout,
            self.exec_timeout,
            self.reveal_window,
            self.challenge_window,
            self.lottery,
            list(self.parents),
        )

    @classmethod
    def from_abi(cls, value: Any) -> JobTerms:
        """Terms from a decoded ABI tuple (or a web3 AttributeDict with named fields)."""
        if isinstance(value, dict) or hasattr(value, "keys"):
            value = tuple(value.values())
        v = tuple(value)
        return cls(
            client=to_checksum_address(v[0]),
            spec_digest=bytes(v[1]),
            executor=Executor(v[2]),
            safety=SafetyClass(v[3]),
            k=v[4],
            m=v[5],
            verifiers=v[6],
            audit_bps=v[7],
            capabilities=v[8],
            max_price=v[9],
            max_units=v[10],
            min_units=v[11],
            collateral=v[12],
            bid_window=v[13],
            fill_timeout=v[14],
            exec_timeout=v[15],
            reveal_window=v[16],
            challenge_window=v[17],
            lottery=bool(v[18]),
            parents=tuple(v[19]),
        )

    @property
    def digest(self) -> bytes:
        """The 20-byte digest the contract stores for these terms."""
        return keccak(encode([TERMS_ABI], [self.as_abi()]))[:20]

    @property
    def escrow(self) -> Wei:
        """The escrow ``postJob`` requires: every slot the job may ever pay, at most."""
        return escrow_for(self)

    @property
    def slot_count(self) -> int:
        """Slots any round of the job may open: k, the audit slot, the verifiers."""
        return self.k + (1 if self.audit_bps else 0) + self.verifiers

    @property
    def sealed(self) -> bool:
        """Whether the job's main and audit results are revealed sealed (it has verifiers)."""
        return self.verifiers > 0

    def reveals_sealed(self, slot: int) -> bool:
        """Whether ``slot`` reveals only its CID's hash: main and audit slots of a sealed job.

        Verifier seats reveal the CID itself, which a verifier that did not run the job
        cannot produce from the hash (docs/security.md, "Sealed results").
        """
        return self.sealed and slot <= self.k

    @property
    def required_capabilities(self) -> int:
        return (1 << int(self.executor)) | self.capabilities


@dataclass(frozen=True, slots=True)
class Job:
    """The mutable on-chain state of a job (one storage slot)."""

    job_id: JobId
    terms_digest: bytes
    status: JobStatus
    round: Round
    filled: int
    committed: int
    revealed: int
    winner: int
    flags: int
    deadline: int


@dataclass(frozen=True, slots=True)
class Slot:
    """One replica slot and its sealed value (commitment, then result key)."""

    job_id: JobId
    index: int
    provider: str
    price: int
    state: SlotState
    sealed: bytes
    #: Seats of its round the slot holds: a verifier drawn for several seats of one round
    #: holds one slot with a vote per seat (collateral, pay and slashing count per vote).
    votes: int = 1

    @property
    def result_digest(self) -> bytes:
        """First 24 bytes of keccak256(result CID), once revealed."""
        return self.sealed[:24]

    @property
    def usage(self) -> int:
        """Revealed usage (units), once revealed."""
        return int.from_bytes(self.sealed[24:], "big")


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider's stake, capabilities and reputation."""

    address: str
    free: Wei
    locked: Wei
    succeeded: int
    slashed: int
    capabilities: int
    unbonding_at: int
    audited: int
    registered: bool
    #: Leaf in the contract's verifier pool (0: never joined).
    pool_index: int = 0
    #: Weight the pool holds for the provider: its whole stake while opted in, else 0.
    pool_weight: Wei = Wei(0)

    @property
    def verifier(self) -> bool:
        """Whether the provider is in the verifier pool (can be drawn)."""
        return self.pool_weight > 0


def spec_digest(spec_cid: str) -> bytes:
    """keccak256 of the spec CID string, as the terms carry it."""
    return keccak(spec_cid.encode())


def escrow_for(terms: JobTerms) -> Wei:
    """Mirror of the contract's ``escrowFor``."""
    return Wei(terms.slot_count * terms.max_units * terms.max_price)


def commitment(job_id: int, provider: str, result_cid: str, usage: int, salt: bytes) -> bytes:
    """The commitment a provider sends:
    ``keccak256(abi.encode(jobId, provider, keccak256(cid), usage, salt))``.

    It is over the CID's hash, so a sealed reveal (the hash alone) opens it too.
    """
    return hash_commitment(job_id, provider, result_hash(result_cid), usage, salt)


def hash_commitment(job_id: int, provider: str, cid_hash: bytes, usage: int, salt: bytes) -> bytes:
    """:func:`commitment` from the CID's hash rather than the CID."""
    return keccak(
        encode(
            ["uint256", "address", "bytes32", "uint64", "bytes32"],
            [job_id, to_checksum_address(provider), cid_hash, usage, salt],
        )
    )


def result_hash(result_cid: str) -> bytes:
    """keccak256 of a result CID: what a sealed reveal puts on chain instead of the CID."""
    return keccak(result_cid.encode())


def result_key(result_cid: str, usage: int) -> bytes:
    """What the contract stores for a reveal: bytes24 keccak(cid) | uint64 usage."""
    return keccak(result_cid.encode())[:24] + usage.to_bytes(8, "big")
