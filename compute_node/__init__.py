"""The provider side of chain-scheduler: sandboxes that run and meter jobs, and the
node's durable state. The daemon that ties them to the chain builds on these.

Example:
    >>> from compute_node import WasmExecutor, ExecutionRequest
    >>> with WasmExecutor() as wasm:
    ...     result = wasm.run(request)
"""

from compute_node._state import JobPhase, JobRecord, JournalEntry, NodeState, StateError
from compute_node.executors import (
    DockerEngineUnavailableError,
    DockerExecutor,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    WasmExecutor,
)

__all__ = [
    "DockerEngineUnavailableError",
    "DockerExecutor",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "JobPhase",
    "JobRecord",
    "JournalEntry",
    "NodeState",
    "StateError",
    "WasmExecutor",
]
