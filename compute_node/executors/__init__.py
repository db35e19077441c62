"""Sandboxes that run one job replica and meter it: Wasm (wasmtime) and Docker."""

from compute_node.executors._base import ExecutionRequest, ExecutionResult, Executor, StopReason
from compute_node.executors._docker import DockerEngineUnavailableError, DockerExecutor
from compute_node.executors._wasm import WasmExecutor

__all__ = [
    "DockerExecutor",
    "DockerEngineUnavailableError",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "StopReason",
    "WasmExecutor",
]
