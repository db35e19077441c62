"""The public names of each package, pinned: changing the surface is a decision, not an accident."""

from __future__ import annotations

import importlib

import pytest

CHAIN_SCHEDULER = {
    "DEFAULT_GAS", "Capability", "CursorStore", "EventBatch", "EventWatcher", "Executor", "FailReason",
    "FileCursor", "InputRef", "Job", "JobId", "JobSpec", "JobStatus", "JobTerms", "Limits", "Market",
    "MarketEvent", "MemoryCursor", "PendingTx", "Provider", "Round", "SafetyClass", "SeenKeys", "SlashRecord", "Slot",
    "SlotState", "TxJournal", "TxResult", "TxSender", "Units", "Wei", "commitment", "decode_revert",
    "escrow_for", "load_spec", "lower_median", "paid_units", "payment", "pool_shares", "resolve_parent_result",
    "result_key", "spec_digest", "Client", "JobHandle", "JobReceipt", "ProviderReceipt",
    "FromStage", "JobOptions", "Repeat", "Stage", "StageJob", "StageRun", "Until", "Workflow", "WorkflowEvent",
    "WorkflowRun", "delivery_key", "hash_commitment", "open_envelope", "public_key_hex", "result_hash", "seal",
}  # fmt: skip
COMPUTE_NODE = {
    "Behaviour", "DockerEngineUnavailableError", "DockerExecutor", "ExecutionRequest", "ExecutionResult",
    "Executor", "JobPhase", "JobRecord", "JobRunner", "JournalEntry", "NodeState", "RunOutcome", "StateError",
    "WasmExecutor", "ProviderNode", "NodePolicy", "Decision", "decide", "decide_failure",
}  # fmt: skip
STORAGE = {
    "BackendError", "CHUNK_SIZE", "CID", "ContentNotFound", "ContentStore", "ContentTooLarge", "CorruptBlock",
    "DEFAULT_IPFS_API", "DEFAULT_MAX_SIZE", "DEFAULT_STORE_URL", "DestinationExists", "FetchError",
    "IntegrityError", "InvalidCid", "InvalidStoreUrl", "IpfsStore", "LocalStore", "MAX_LINKS", "MalformedCar",
    "MalformedDag", "NotAFile", "STORE_URL_ENV", "StorageError", "UnsafePath", "UnsupportedContent",
    "open_store", "parse_cid", "transfer",
}  # fmt: skip
SURFACE = {"chain_scheduler": CHAIN_SCHEDULER, "compute_node": COMPUTE_NODE, "storage": STORAGE}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_public_surface_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} needs a module docstring"
    assert len(module.__all__) == len(set(module.__all__)), f"{package}.__all__ has duplicates"
    assert set(module.__all__) == SURFACE[package]
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ lists {name}, which it does not define"
