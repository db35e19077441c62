"""chain-scheduler: a verifiable compute market on an Ethereum ledger.

The contract binding (:class:`Market`), the job model, pricing, and the errors
every revert decodes into. See README.md for a walkthrough.
"""

from chain_scheduler._client import Client, JobHandle, JobReceipt, ProviderReceipt, SlashRecord
from chain_scheduler._market import DEFAULT_GAS, Market, MarketEvent, TxResult
from chain_scheduler._model import (
    Capability,
    Executor,
    FailReason,
    Job,
    JobId,
    JobStatus,
    JobTerms,
    Provider,
    Round,
    SafetyClass,
    Slot,
    SlotState,
    Units,
    Wei,
    commitment,
    escrow_for,
    result_key,
    spec_digest,
)
from chain_scheduler._pricing import lower_median, paid_units, payment, pool_shares
from chain_scheduler._revert import decode_revert
from chain_scheduler._sender import PendingTx, TxJournal, TxSender
from chain_scheduler._spec import InputRef, JobSpec, Limits, load_spec, resolve_parent_result
from chain_scheduler._watcher import CursorStore, EventBatch, EventWatcher, FileCursor, MemoryCursor, SeenKeys
from chain_scheduler._workflow import (
    FromStage,
    JobOptions,
    Repeat,
    Stage,
    StageJob,
    StageRun,
    Until,
    Workflow,
    WorkflowEvent,
    WorkflowRun,
)

__all__ = [
    "DEFAULT_GAS",
    "Capability",
    "Client",
    "CursorStore",
    "EventBatch",
    "EventWatcher",
    "Executor",
    "FailReason",
    "FileCursor",
    "FromStage",
    "InputRef",
    "Job",
    "JobHandle",
    "JobId",
    "JobOptions",
    "JobReceipt",
    "JobSpec",
    "JobStatus",
    "JobTerms",
    "Limits",
    "Market",
    "MarketEvent",
    "MemoryCursor",
    "PendingTx",
    "Provider",
    "ProviderReceipt",
    "Repeat",
    "Round",
    "SafetyClass",
    "SeenKeys",
    "SlashRecord",
    "Slot",
    "SlotState",
    "Stage",
    "StageJob",
    "StageRun",
    "TxJournal",
    "TxResult",
    "TxSender",
    "Units",
    "Until",
    "Wei",
    "Workflow",
    "WorkflowEvent",
    "WorkflowRun",
    "commitment",
    "decode_revert",
    "escrow_for",
    "load_spec",
    "lower_median",
    "paid_units",
    "payment",
    "pool_shares",
    "resolve_parent_result",
    "result_key",
    "spec_digest",
]
