"""The provider side of chain-scheduler: sandboxes that run and meter jobs, the job
runner that feeds them from the content store and stores their results, and the
node's durable state; and the provider daemon that ties them to the chain
(:class:`ProviderNode`) with its bidding policy (:func:`decide`).

Example:
    >>> from compute_node import JobRunner, WasmExecutor
    >>> with WasmExecutor() as wasm:
    ...     runner = JobRunner(store=store, executors={"wasm": wasm}, work_dir=Path("work"))
    ...     outcome = runner.run(job_id=7, terms=terms, spec_cid=spec_cid, seed=seed, price=2)
    >>> node = ProviderNode(market=market, sender=sender, state=NodeState(path), runner=runner,
    ...                     policy=NodePolicy(price=2, capacity=2))
    >>> node.start()
"""

from compute_node._behaviour import Behaviour
from compute_node._node import ProviderNode
from compute_node._policy import Decision, NodePolicy, decide, decide_failure
from compute_node._runner import JobRunner, RunOutcome
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
    "Behaviour",
    "Decision",
    "DockerEngineUnavailableError",
    "DockerExecutor",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "JobPhase",
    "JobRecord",
    "JobRunner",
    "JournalEntry",
    "NodePolicy",
    "NodeState",
    "ProviderNode",
    "RunOutcome",
    "StateError",
    "WasmExecutor",
    "decide",
    "decide_failure",
]
