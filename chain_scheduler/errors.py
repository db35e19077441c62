"""Exceptions of the chain_scheduler package.

Every contract revert is decoded (in :mod:`chain_scheduler._revert`) into one of
the classes below, carrying the custom error's fields as attributes. Messages say
what to do next.

    ChainSchedulerError
    ├── SpecError                    a job spec that does not validate
    ├── ParentNotReady               a parent job's result is not accepted (yet, or ever)
    │   └── ResultUnpublished        accepted, but sealed and not published yet
    ├── SealError                    a sealed result's envelope does not open
    ├── ChainUnavailable             the RPC node cannot be reached
    ├── OutOfFunds                   the sending account cannot pay for gas and value
    ├── TransactionFailed            reverted with no decodable reason, or never mined
    ├── JobFailed                    a job the client waits on ended Failed or Cancelled
    ├── ResultNotReady               a job has no accepted result yet (Client / JobHandle)
    ├── WaitTimeout                  JobHandle.wait gave up before the job got there
    ├── KeyConfigError               no signing key, several, or one that does not load
    ├── DevnetError                  a devnet process did not start, answer or stop; no devnet
    └── ContractError                a decoded custom error from the contract
        ├── TermsError               postJob refused the terms
        │     BadReplication, ClassMismatch, DestructiveReplicated, BadAudit, BadTerm,
        │     SpecMismatch, WrongEscrow, UnknownParent
        ├── JobStateError            the job is not where the call needs it
        │     UnknownJob, TermsMismatch, WrongStatus, DeadlinePassed, DeadlineNotReached,
        │     BidWindowOpen, SlotsNotFilled, NotCancellable, NotChallengeable,
        │     ParentNotFinalized, ParentNotFailed, DrawnRound, NoDraw, DrawTooEarly
        ├── ProviderError            the provider cannot do this
        │     NotRegistered, AlreadyRegistered, MissingCapabilities, InsufficientStake,
        │     Unbonding, StakeLocked, AlreadyInJob, PriceTooHigh, BidNotCompetitive, BidFinal,
        │     EntriesClosed, LotteryFull,
        │     NotSlotHolder, WrongSlotState, CommitmentMismatch, RevealKind, ResultMismatch
        ├── AccessError              only the client may do this: NotClient; NotDelegated
        └── PaymentError             WrongBond, NothingToWithdraw, TransferFailed,
                                     ReentrantCall, ZeroAmount, AmountTooLarge
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChainSchedulerError(Exception):
    """Root of every error this package raises."""


class SpecError(ChainSchedulerError):
    """A job spec that does not parse or validate."""


class ParentNotReady(ChainSchedulerError):
    """A parent job has no accepted result to use as an input.

    Attributes:
        job_id: The parent job.
        status: Its status (a ``JobStatus``).
        final: True when it never will have one (Failed or Cancelled).
    """

    def __init__(self, *, job_id: int, status: int) -> None:
        from chain_scheduler._model import JobStatus

        self.job_id = job_id
        self.status = JobStatus(status)
        self.final = self.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        name = self.status.name.title()
        if self.final:
            message = (
                f"Parent job {job_id} is {name}: it has no result and never will. "
                "Anyone may cancel its children for a refund (cancelOrphan)."
            )
        else:
            message = (
                f"Parent job {job_id} is {name}, not Finalized: its result is not accepted yet. "
                f"Wait for it. See: chainsched job status {job_id}"
            )
        super().__init__(message)


class ChainUnavailable(ChainSchedulerError):
    """The Ethereum RPC node did not answer."""


class OutOfFunds(ChainSchedulerError):
    """The sending account cannot pay a transaction's gas and value.

    Attributes:
        account: The account's address.
        needed: Wei the transaction may cost (gas × fee per gas + value).
        balance: The account's balance in wei (None when it could not be read).
    """

    def __init__(
        self,
        *,
        account: str,
        needed: int,
        balance: int | None,
        gas: int = 0,
        fee_per_gas: int = 0,
        value: int = 0,
        label: str = "",
    ) -> None:
        self.account = account
        self.needed = needed
        self.balance = balance
        holds = "an unknown balance" if balance is None else f"{balance:,} wei"
        short = "" if balance is None else f"at least {max(needed - balance, 0):,} wei more "
        super().__init__(
            f"Account {account} cannot pay for {label or 'the transaction'}: it needs {needed:,} wei "
            f"(gas {gas:,} × {fee_per_gas:,} wei + value {value:,}) and holds {holds}. "
            f"Send it {short}and retry."
        )


class TransactionFailed(ChainSchedulerError):
    """A transaction reverted without a reason we could decode, or was never mined."""

    def __init__(self, message: str, *, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class JobFailed(ChainSchedulerError):
    """A job ended Failed or Cancelled: it has no result and never will.

    Attributes:
        job_id: The job.
        status: ``JobStatus.FAILED`` or ``JobStatus.CANCELLED``.
        reason: Why it failed (a ``FailReason``), None when cancelled or unknown.
        refund: Wei returned to the client's credit (None when unknown).
    """

    def __init__(self, *, job_id: int, status: int, reason: int | None = None, refund: int | None = None) -> None:
        from chain_scheduler._model import FailReason, JobStatus

        self.job_id = job_id
        self.status = JobStatus(status)
        self.reason = FailReason(reason) if reason is not None else None
        self.refund = refund
        why = {
            None: "",
            FailReason.NOT_FILLED: ": not enough providers bid before the fill timeout (raise max_price, "
            "lower k, or check that registered providers have the capabilities the job needs)",
            FailReason.NO_QUORUM: ": fewer than m replicas agreed on a result (is the job deterministic?)",
            FailReason.NO_COMMITS: ": no provider committed a result before the execution deadline "
            "(raise exec_timeout or the executor limits)",
            FailReason.UNPUBLISHED: ": its result was revealed sealed and nobody published the CID within a "
            "reveal window of the challenge window's end; the sealed providers were slashed",
        }[self.reason]
        refunded = ""
        if refund is not None:
            refunded = f" {refund:,} wei were refunded to your credit (chainsched account withdraw)."
        super().__init__(
            f"Job {job_id} is {self.status.name.title()}{why}.{refunded} See: chainsched job status {job_id}"
        )


class ResultUnpublished(ParentNotReady):
    """A finalized job's result was revealed sealed and no publication of its CID was found.

    A sealed result settles by its publication (``Market.publish``), so a finalized job
    has one: it is older than the events that were read.
    """

    def __init__(self, *, job_id: int) -> None:
        from chain_scheduler._model import JobStatus

        self.job_id = job_id
        self.status = JobStatus.FINALIZED
        self.final = False
        ChainSchedulerError.__init__(
            self,
            f"Job {job_id} is Finalized and its result was revealed sealed, but its publication "
            f"(ResultPublished) is not among the events read: read from an earlier block, or "
            f"publish the CID again if you hold it (chainsched job publish {job_id})",
        )


class SealError(ChainSchedulerError):
    """A sealed result's envelope is missing, malformed, or not for this key and job."""


class ResultNotReady(ChainSchedulerError):
    """A job has no accepted result yet (it is still open, running or revealing).

    Attributes:
        job_id: The job.
        status: Its status (a ``JobStatus``).
    """

    def __init__(self, *, job_id: int, status: int) -> None:
        from chain_scheduler._model import JobStatus

        self.job_id = job_id
        self.status = JobStatus(status)
        super().__init__(
            f"Job {job_id} is {self.status.name.title()}: it has no accepted result yet. "
            f"Wait for it (JobHandle.wait). See: chainsched job status {job_id}"
        )


class WaitTimeout(ChainSchedulerError, TimeoutError):
    """Waiting for a job gave up before the job reached the wanted status.

    Attributes:
        job_id: The job.
        status: Its status when the wait gave up (a ``JobStatus``).
        timeout: Seconds waited.
    """

    def __init__(self, *, job_id: int, status: int, until: str, timeout: float) -> None:
        from chain_scheduler._model import JobStatus

        self.job_id = job_id
        self.status = JobStatus(status)
        self.timeout = timeout
        super().__init__(
            f"Job {job_id} is still {self.status.name.title()} after {timeout:g}s, not {until}. "
            f"Wait longer, or see: chainsched job status {job_id}"
        )


class KeyConfigError(ChainSchedulerError):
    """No key, more than one, or one that does not load. The message never holds key material."""


class DevnetError(ChainSchedulerError):
    """A devnet process did not start, answer or stop; or there is no devnet where one was expected."""


class ContractError(ChainSchedulerError):
    """A custom error raised by the ChainScheduler contract.

    Attributes:
        error_name: The Solidity error name without the ``ChainScheduler`` prefix.
        fields: The error's arguments by name (also set as attributes).
    """

    error_name: ClassVar[str] = ""
    template: ClassVar[str] = "{error_name}{fields}"

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)
        try:
            message = self.template.format(error_name=self.error_name, fields=fields, **fields)
        except (KeyError, IndexError, ValueError):
            message = f"{self.error_name}{fields}"
        super().__init__(message)


class TermsError(ContractError):
    """postJob refused the job's terms."""


class JobStateError(ContractError):
    """The job is not in the state the call needs."""


class ProviderError(ContractError):
    """The provider cannot take this action."""


class AccessError(ContractError):
    """Only another party may take this action."""


class PaymentError(ContractError):
    """Money could not move as asked."""


# ------------------------------------------------------------------ terms


class BadReplication(TermsError):
    error_name = "BadReplication"
    template = "k={k} m={m} is impossible: use 1 <= k <= 16 and k/2 < m <= k."


class ClassMismatch(TermsError):
    error_name = "ClassMismatch"
    template = (
        "Executor {executor} cannot run safety class {safety}: Wasm jobs are deterministic, "
        "Docker jobs nondestructive or destructive."
    )


class DestructiveReplicated(TermsError):
    error_name = "DestructiveReplicated"
    template = (
        "A destructive job runs exactly once: use k=1, m=1, no verifiers, no audit "
        "(got k={k}, verifiers={verifiers}, audit_bps={auditBps})."
    )


class BadAudit(TermsError):
    error_name = "BadAudit"
    template = "Audit probability {auditBps} bps needs <= 10000 bps and verifiers > 0 (got {verifiers})."


class BadTerm(TermsError):
    error_name = "BadTerm"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "max_price must be > 0",
        "max_units must be > 0",
        "fill_timeout must be > 0",
        "exec_timeout must be > 0",
        "reveal_window must be > 0",
        "bid_window must be shorter than fill_timeout",
        "verifiers must be at most 15",
        "terms.client must be the sender",
        "a job may name at most 8 parents",
        "min_units must be at most max_units",
        "collateral must be positive when k > 1 or the job has audits or verifiers",
    )

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        index = int(fields.get("field", -1))
        if 0 <= index < len(self.FIELDS):
            self.args = (f"Invalid job terms: {self.FIELDS[index]}.",)


class SpecMismatch(TermsError):
    error_name = "SpecMismatch"
    template = "terms.spec_digest does not hash the spec CID sent; build terms with JobTerms.create."


class WrongEscrow(TermsError):
    error_name = "WrongEscrow"
    template = "The job needs an escrow of {expected} wei, {sent} was sent (see escrowFor)."


class UnknownParent(TermsError):
    error_name = "UnknownParent"
    template = "Parent job {parent} does not exist. See: chainsched job list"


# -------------------------------------------------------------- job state


class UnknownJob(JobStateError):
    error_name = "UnknownJob"
    template = "Job {jobId} does not exist. See: chainsched job list"


class TermsMismatch(JobStateError):
    error_name = "TermsMismatch"
    template = (
        "The terms sent are not job {jobId}'s (a reorg, or the wrong job): re-read them from "
        "its JobPosted event. See: chainsched job status {jobId}"
    )


class WrongStatus(JobStateError):
    error_name = "WrongStatus"

    def __init__(self, **fields: Any) -> None:
        from chain_scheduler._model import JobStatus

        for key in ("expected", "actual"):
            if key in fields:
                fields[key] = JobStatus(fields[key])
        super().__init__(**fields)
        self.args = (
            f"Job {fields.get('jobId')} is {fields['actual'].name.title()}, expected "
            f"{fields['expected'].name.title()}. See: chainsched job status {fields.get('jobId')}",
        )


class DeadlinePassed(JobStateError):
    error_name = "DeadlinePassed"
    template = (
        "Job {jobId}'s phase deadline ({deadline}) has passed (now {now_}); anyone may call "
        "timeout. See: chainsched job status {jobId}"
    )


class DeadlineNotReached(JobStateError):
    error_name = "DeadlineNotReached"
    template = "Job {jobId}'s phase deadline ({deadline}) is not reached yet (now {now_}); wait."


class BidWindowOpen(JobStateError):
    error_name = "BidWindowOpen"
    template = "Job {jobId}'s bid window is open until {windowEnd}; close bidding after it."


class SlotsNotFilled(JobStateError):
    error_name = "SlotsNotFilled"
    template = "Job {jobId} has {filled} of {needed} slots filled; wait for more bids or the fill timeout."


class NotCancellable(JobStateError):
    error_name = "NotCancellable"
    template = "Job {jobId} can no longer be cancelled: providers hold its slots. See: chainsched job status {jobId}"


class NotChallengeable(JobStateError):
    error_name = "NotChallengeable"
    template = "Job {jobId} cannot be challenged: it has no verifier budget left (or no verifiers)."


class ParentNotFinalized(JobStateError):
    error_name = "ParentNotFinalized"

    def __init__(self, **fields: Any) -> None:
        from chain_scheduler._model import JobStatus

        fields["status"] = JobStatus(fields["status"])
        super().__init__(**fields)
        self.args = (
            f"Job {fields['jobId']} waits for parent {fields['parent']}, which is "
            f"{fields['status'].name.title()}, not Finalized.",
        )


class ParentNotFailed(JobStateError):
    error_name = "ParentNotFailed"

    def __init__(self, **fields: Any) -> None:
        from chain_scheduler._model import JobStatus

        fields["status"] = JobStatus(fields["status"])
        super().__init__(**fields)
        self.args = (
            f"Parent {fields['parent']} of job {fields['jobId']} is {fields['status'].name.title()}, "
            "not Failed or Cancelled; the child cannot be cancelled for it.",
        )


class DrawnRound(JobStateError):
    error_name = "DrawnRound"
    template = (
        "Job {jobId}'s audit and verification seats are drawn from the verifier pool, not bid for. "
        "Opt in with the verifier capability to be drawn."
    )


class NoDraw(JobStateError):
    error_name = "NoDraw"
    template = "Job {jobId} has no draw waiting. See: chainsched job status {jobId}"


class DrawTooEarly(JobStateError):
    error_name = "DrawTooEarly"
    template = "Job {jobId}'s draw uses the hash of block {afterBlock}: send it in a later block."


# --------------------------------------------------------------- provider


class NotRegistered(ProviderError):
    error_name = "NotRegistered"
    template = "{provider} is not a registered provider. See: chainsched provider register"


class AlreadyRegistered(ProviderError):
    error_name = "AlreadyRegistered"
    template = "{provider} is already registered; add stake with: chainsched provider stake"


class MissingCapabilities(ProviderError):
    error_name = "MissingCapabilities"
    template = "{provider} has capabilities {have:#b}, the job needs {required:#b}."


class InsufficientStake(ProviderError):
    error_name = "InsufficientStake"
    template = "{provider} has {free} wei free stake, {required} is needed; add stake first."


class Unbonding(ProviderError):
    error_name = "Unbonding"
    template = "{provider} is unbonding and takes no new work; add stake to resume."


class StakeLocked(ProviderError):
    error_name = "StakeLocked"
    template = (
        "{provider}'s stake cannot be withdrawn yet (unbonding until {unlockAt}, {locked} wei "
        "locked in jobs); begin unbonding and wait for its jobs to settle."
    )


class AlreadyInJob(ProviderError):
    error_name = "AlreadyInJob"
    template = "{provider} already holds a slot in job {jobId}; verifiers must be fresh providers."


class PriceTooHigh(ProviderError):
    error_name = "PriceTooHigh"
    template = "Bid {price} wei/unit is above the job's max price {maxPrice}."


class BidNotCompetitive(ProviderError):
    error_name = "BidNotCompetitive"
    template = "Bid {price} wei/unit does not beat the dearest kept bid ({dearest}), or bidding is over."


class EntriesClosed(ProviderError):
    error_name = "EntriesClosed"
    template = (
        "Job {jobId} takes no entries: it is not a lottery job, its bid window is over with k entrants, "
        "or its replicas are drawn. See: chainsched job status {jobId}"
    )


class LotteryFull(ProviderError):
    error_name = "LotteryFull"
    template = (
        "Job {jobId}'s lottery is full, and its lightest entrant weighs {lightest} wei of stake: "
        "only a heavier provider can take its place."
    )


class BidFinal(ProviderError):
    error_name = "BidFinal"
    template = (
        "The bid on slot {slot} of job {jobId} cannot be withdrawn: the round is full or over, "
        "or a slot of the job was reopened. See: chainsched job status {jobId}"
    )


class NotSlotHolder(ProviderError):
    error_name = "NotSlotHolder"
    template = "{caller} does not hold slot {slot} of job {jobId}."


class WrongSlotState(ProviderError):
    error_name = "WrongSlotState"

    def __init__(self, **fields: Any) -> None:
        from chain_scheduler._model import SlotState

        for key in ("expected", "actual"):
            fields[key] = SlotState(fields[key])
        super().__init__(**fields)
        self.args = (
            f"Slot {fields['slot']} of job {fields['jobId']} is {fields['actual'].name.title()}, "
            f"expected {fields['expected'].name.title()}.",
        )


class CommitmentMismatch(ProviderError):
    error_name = "CommitmentMismatch"
    template = (
        "The reveal does not open slot {slot}'s commitment in job {jobId}: the result, usage "
        "or salt differ from what was committed."
    )


class RevealKind(ProviderError):
    error_name = "RevealKind"
    template = (
        "Slot {slot} of job {jobId} reveals the other way (sealed expected: {sealedExpected}): main and "
        "audit slots of a job with verifiers reveal the CID's hash, every other slot the CID."
    )


class ResultMismatch(ProviderError):
    error_name = "ResultMismatch"
    template = "The CID published does not hash to job {jobId}'s accepted result."


# ----------------------------------------------------------------- access


class NotClient(AccessError):
    error_name = "NotClient"
    template = "Only job {jobId}'s client may do this ({caller} is not)."


class NotDelegated(AccessError):
    error_name = "NotDelegated"
    template = "That address is the market's extension code, not a market: send the call to the market's address."


# ---------------------------------------------------------------- payment


class WrongBond(PaymentError):
    error_name = "WrongBond"
    template = "A challenge needs a bond of {expected} wei (the slot collateral); {sent} was sent."


class NothingToWithdraw(PaymentError):
    error_name = "NothingToWithdraw"
    template = "{account} has no credit to withdraw."


class TransferFailed(PaymentError):
    error_name = "TransferFailed"
    template = (
        "Sending {amount} wei to {account} failed; its credit is kept. Withdraw from an account that accepts ether."
    )


class ReentrantCall(PaymentError):
    error_name = "ReentrantCall"
    template = "withdraw was re-entered; refused."


class ZeroAmount(PaymentError):
    error_name = "ZeroAmount"
    template = "The amount must be positive."


class AmountTooLarge(PaymentError):
    error_name = "AmountTooLarge"
    template = "{amount} wei does not fit a stake (2**96 - 1 at most)."


#: Every contract error class by Solidity name (without the ``ChainScheduler`` prefix).
CONTRACT_ERRORS: dict[str, type[ContractError]] = {
    cls.error_name: cls
    for cls in (
        BadReplication,
        ClassMismatch,
        DestructiveReplicated,
        BadAudit,
        BadTerm,
        SpecMismatch,
        WrongEscrow,
        UnknownParent,
        UnknownJob,
        TermsMismatch,
        WrongStatus,
        DeadlinePassed,
        DeadlineNotReached,
        BidWindowOpen,
        SlotsNotFilled,
        NotCancellable,
        NotChallengeable,
        ParentNotFinalized,
        ParentNotFailed,
        DrawnRound,
        NoDraw,
        DrawTooEarly,
        NotRegistered,
        AlreadyRegistered,
        MissingCapabilities,
        InsufficientStake,
        Unbonding,
        StakeLocked,
        AlreadyInJob,
        PriceTooHigh,
        BidNotCompetitive,
        BidFinal,
        EntriesClosed,
        LotteryFull,
        NotSlotHolder,
        WrongSlotState,
        CommitmentMismatch,
        RevealKind,
        ResultMismatch,
        NotClient,
        NotDelegated,
        WrongBond,
        NothingToWithdraw,
        TransferFailed,
        ReentrantCall,
        ZeroAmount,
        AmountTooLarge,
    )
}
