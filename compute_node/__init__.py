"""The provider side of chain-scheduler: executors now, the node daemon next.

Example:
    >>> from compute_node import WasmExecutor, ExecutionRequest
    >>> with WasmExecutor() as wasm:
    ...     result = wasm.run(request)
"""

from compute_node.executors import (
    DockerEngineUnavailableError,
    DockerExecutor,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    WasmExecutor,
)

__all__ = [
    "DockerExecutor",
    "DockerEngineUnavailableError",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "WasmExecutor",
]
