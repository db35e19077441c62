"""chain-scheduler: a verifiable compute market on an Ethereum ledger.

The contract binding (:class:`Market`), the job model, pricing, and the errors
every revert decodes into. See README.md for a walkthrough.
"""

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

__all__ = [
    "DEFAULT_GAS",
    "Capability",
    "Executor",
    "FailReason",
    "Job",
    "JobId",
    "JobStatus",
    "JobTerms",
    "Market",
    "MarketEvent",
    "Provider",
    "Round",
    "SafetyClass",
    "Slot",
    "SlotState",
    "TxResult",
    "Units",
    "Wei",
    "commitment",
    "decode_revert",
    "escrow_for",
    "lower_median",
    "paid_units",
    "payment",
    "pool_shares",
    "result_key",
    "spec_digest",
]
