"""The executor interface shared by the Wasm and Docker sandboxes.

An executor runs one job replica: it reads the job's inputs from a directory
(mounted read-only in the sandbox), lets the program write into an outputs
directory, and reports what the run cost. It never talks to the chain or the
content store; the node does that around it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


class StopReason(enum.StrEnum):
    """Which limit stopped a run before the program ended by itself.

    FUEL and MEMORY stop a Wasm run at the same point on every machine. TIMEOUT
    and OUTPUT depend on the machine's speed (when the clock or the size check
    fired), so what the run produced before the stop must not reach the result.
    """

    FUEL = "fuel"  # Wasm: max_units of fuel burnt
    MEMORY = "memory"  # the memory limit was reached
    TIMEOUT = "timeout"  # the wall-clock limit fired
    OUTPUT = "output"  # more than max_output_bytes written under /outputs


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """Everything an executor needs to run one replica of a job.

    Attributes:
        job_id: The on-chain job id (for logs only).
        artifact: Local path to the program: a Wasm module file, or a
            ``docker save`` tarball.
        artifact_cid: The content id the program was fetched by; the cache key.
        args: Program arguments (argv[1:]).
        env: Extra environment variables.
        inputs_dir: Directory holding the job's inputs; the sandbox sees it
            read-only at ``/inputs``.
        outputs_dir: Empty directory the sandbox sees writable at ``/outputs``;
            stdout and stderr are written there as ``stdout`` and ``stderr``.
        seed: 32 bytes from the chain, shared by all replicas; drives the
            sandbox's clock and randomness where the executor controls them.
        max_units: Upper bound on metered units (Wasm: fuel; Docker: CPU ms).
        memory_limit: Bytes of memory the program may use.
        timeout: Wall-clock seconds before the run is killed. For Wasm this is
            only the node's safety net (the job's time limit is a fuel budget,
            folded into ``max_units`` by the runner); for Docker it is the job's
            time limit.
        network: Whether the program may use the network (Docker, destructive
            jobs only).
        max_output_bytes: Most the program may write under ``/outputs``
            (stdout and stderr included); the run is stopped once it is
            exceeded. None: no limit.
    """

    job_id: int
    artifact: Path
    artifact_cid: str
    args: tuple[str, ...]
    inputs_dir: Path
    outputs_dir: Path
    seed: bytes
    max_units: int
    memory_limit: int
    timeout: float
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    max_output_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a run produced and cost.

    ``usage`` is the figure revealed on chain and multiplied by the price:
    fuel for Wasm, CPU milliseconds for Docker. ``error`` is a one-line reason
    when the sandbox failed the run (trap, out of fuel, timeout, bad artifact);
    a program that merely exits non-zero has ``error=None`` and its exit code.
    ``stopped_by`` says which limit ended the run, if one did.
    """

    executor: str
    artifact_digest: str
    exit_code: int
    usage: int
    fuel: int | None
    cpu_ms: int | None
    peak_memory: int | None
    wall_ms: int
    bytes_in: int
    bytes_out: int
    error: str | None = None
    stopped_by: StopReason | None = None


@runtime_checkable
class Executor(Protocol):
    """A sandbox that runs one job replica. Implementations: Wasm, Docker."""

    kind: str

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run the program to completion (or limit) and report its usage."""
        ...
