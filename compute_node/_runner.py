"""Run one replica of a job end to end: spec, artifact and inputs in, result directory and receipt out.

:meth:`JobRunner.run` is what a provider does between the seed arriving and the
commit: read the job spec by CID and check it against the on-chain terms, fetch
the program (a Wasm module, or a ``docker save`` tarball) and every input into a
private work directory (stored content by CID, a parent job's accepted result
from the chain), run the sandbox the spec names, then store the result directory
and a per-provider receipt in the content store. :meth:`JobRunner.precheck` runs
the same checks before bidding, without running anything.

The result directory is what replicas agree on, so it holds only what every
honest replica produces identically::

    outputs/        what the program wrote to /outputs, plus its stdout and stderr
                    (empty when the job could not run or its outputs were dropped)
    receipt.json    canonical JSON: version, job_id, executor, artifact,
                    artifact_digest, exit_code, reason, error, units, and usage for
                    deterministic (Wasm) jobs only: Docker CPU time differs
                    between replicas, and the contract takes their median

The per-provider receipt (stored separately, its CID in :attr:`RunOutcome.receipt_cid`)
adds what differs between providers: the price, the amount claimed
(``price × units``, units raised to the job's ``min_units``), wall time, peak
memory, bytes in and out.

Failure results (DESIGN.md, rule 2: a job that cannot run is a result, not a
fault). Whatever makes a job unrunnable the same way on every honest replica
ends in a result whose ``receipt.json`` names a :class:`FailureReason` (a stable
code) and a one-line message with nothing machine-specific in it; the replicas
commit and reveal it like any result, agree on it, and are paid for the metered
work (at least the job's ``min_units``). Checks run in one fixed order, so every
replica reports the first problem the same: the spec (``spec_invalid``), the spec
against the terms, limits included (``spec_terms``), the artifact
(``artifact_invalid``), the inputs in spec order (``input_refused``,
``parent_unusable``), then the run. How a run ended decides what the result
keeps and what it bills; a stop that depends on when a clock or a size check
fired keeps neither the outputs nor the exit code and bills a fixed figure::

    how the run ended                       reason             outputs  usage revealed
    the program exited (any exit code)      -                  kept     Wasm: fuel burnt; Docker: CPU ms (median)
    Wasm trap                               trap               kept     fuel burnt
    Wasm fuel limit set by max_units        unit_limit         kept     the fuel limit
    Wasm fuel limit set by timeout_s        time_limit         kept     the fuel limit
    Wasm memory limit                       memory_limit       kept     fuel burnt
    Docker CPU time over max_units          unit_limit         dropped  max_units
    Docker clock at limits.timeout_s        time_limit         dropped  min(max_units, ceil(timeout_s × 1000 × cpus))
    Docker out of memory                    memory_limit       dropped  CPU ms (median)
    Docker container could not start        start_failed       dropped  CPU ms (median)
    over limits.output_mb under /outputs    output_limit       dropped  the unit cap given to the executor
                                                                        (Wasm: the fuel limit; Docker: max_units)
    outputs not storable (a huge directory) output_unstorable  dropped  as the run
    could not run (spec, terms, artifact,   spec_invalid, spec_terms, artifact_invalid,
    inputs, parents)                        input_refused, parent_unusable: no outputs, 0
    Wasm wall clock (the node's safety net) time_limit         dropped  the fuel limit
    past twice its fuel budget's time
    the node's own safety net fired early   no result: a faster replica would have finished
    (a Wasm TIMEOUT before twice the fuel budget's time, or a Docker clock shorter than limits.timeout_s)

The contract bills each paid replica ``price × max(units, min_units)``, capped at
``max_units``; exit codes are kept only with the outputs.

A Wasm job's time limit is a fuel budget (``JobSpec.unit_limit``), so it stops at
the same instruction everywhere; the wall clock given to the Wasm sandbox is only
the node's safety net: the time left before the commit deadline less
``commit_margin`` (:meth:`JobRunner.run`'s ``time_left``).

No result (``result_cid=None``). What this node cannot do but another could is
not a failure result: an executor this node lacks, content its store does not
hold (or holds corrupt), more than its ``max_input_bytes``, a module over its
Wasm executor's size limit, a parent it cannot resolve, the commit deadline
passed or its safety net fired. :meth:`JobRunner.precheck` declines those before
bidding. Exceptions are for the node's own infrastructure, which the daemon
should retry later (the work directory is cleaned in every case):

- :class:`storage.BackendError`: the content store did not answer;
- :class:`compute_node.DockerEngineUnavailableError` (and other
  ``DockerExecutorError``): the Docker engine did not answer or misbehaved;
- :class:`chain_scheduler.errors.ChainUnavailable`: the RPC node did not answer
  while a parent's result was being resolved;
- :class:`OSError`: the node's own disk (work directory full or unwritable);
- :class:`ValueError`: the caller's arguments (seed not 32 bytes, negative price).

Outputs are the job's to write, so they are not trusted: symlinks (which could
point at the provider's own files), sockets, pipes, devices and names that are
not UTF-8 are removed before the directory is stored, and the receipt's
``error`` says so.

Example:
    >>> runner = JobRunner(store=store, executors={"wasm": WasmExecutor()}, work_dir=Path("node/work"),
    ...                    market=market)
    >>> runner.precheck(terms=market.terms_of(7), spec_cid=spec_cid).verdict
    <Verdict.RUN: 'run'>
    >>> outcome = runner.run(job_id=7, terms=market.terms_of(7), spec_cid=spec_cid, seed=seed, price=2,
    ...                      time_left=25.0)
    >>> outcome.result_cid, outcome.usage, outcome.failure, outcome.error
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from chain_scheduler import (
    Executor as ExecutorKind,
)
from chain_scheduler import (
    JobSpec,
    JobTerms,
    Limits,
    Market,
    load_spec,
    paid_units,
    payment,
    resolve_parent_result,
    seal,
)
from chain_scheduler.errors import ChainSchedulerError, ChainUnavailable, ResultUnpublished, SpecError
from compute_node._behaviour import Behaviour
from compute_node.executors import ExecutionRequest, ExecutionResult, Executor, StopReason
from storage import (
    BackendError,
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    CorruptBlock,
    DestinationExists,
    StorageError,
    UnsupportedContent,
)

__all__ = [
    "DEFAULT_COMMIT_MARGIN",
    "DEFAULT_FUEL_RATE",
    "DEFAULT_MAX_INPUT_BYTES",
    "RESULT_VERSION",
    "FailureReason",
    "JobRunner",
    "Precheck",
    "RunOutcome",
    "Verdict",
]

logger = logging.getLogger(__name__)

#: Version of ``receipt.json`` in the result directory and of the per-provider receipt
#: (2: ``reason`` added, failure results).
RESULT_VERSION = 2
#: Default bound on what one job may make the node fetch (artifact plus inputs), in bytes.
DEFAULT_MAX_INPUT_BYTES = 4 << 30
#: Default fuel per second this node's Wasm sandbox is assumed to burn at worst (precheck's
#: worst-case run time). The protocol's reference rate: this 2-core machine runs the slowest
#: example module (wordcount, stdio-bound) at 830 M fuel/s and the compute-bound ones at 2-10 G/s.
DEFAULT_FUEL_RATE = Limits.FUEL_PER_SECOND
#: Default seconds a node keeps for itself in the commit window besides the run: storing the
#: result, recording it, and landing the commit transaction.
DEFAULT_COMMIT_MARGIN = 5.0

_SEED_BYTES = 32
_UNITS = {"wasm": "fuel", "docker": "cpu_ms"}
_LISTED_DROPS = 5
# Engine ids and measured figures in Docker error messages differ between replicas.
_HEX_ID = re.compile(r"[0-9a-f]{12,}")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")  # whole numbers only: "sha256" stays


class FailureReason(enum.StrEnum):
    """Why a job ended in a failure result: the stable code in ``receipt.json``'s ``reason``.

    The same on every honest replica, so the quorum agrees on it (module docstring).
    """

    SPEC_INVALID = "spec_invalid"  # the spec does not parse or validate, or is not a file
    SPEC_TERMS = "spec_terms"  # it does not fit the terms: executor, network, parents, limits vs exec_timeout
    ARTIFACT_INVALID = "artifact_invalid"  # a directory, not Wasm, does not compile/link, no _start, bad tarball
    INPUT_REFUSED = "input_refused"  # an input tree the unpacker refuses (unsafe names, duplicates, escaping links)
    PARENT_UNUSABLE = "parent_unusable"  # a parent's result is unsafe, has no outputs/, or is a failure result
    START_FAILED = "start_failed"  # the container could not start (Docker)
    TRAP = "trap"  # the Wasm program trapped
    UNIT_LIMIT = "unit_limit"  # max_units reached (Wasm fuel, Docker CPU ms)
    TIME_LIMIT = "time_limit"  # limits.timeout_s reached (Wasm: as fuel; Docker: the clock)
    MEMORY_LIMIT = "memory_limit"  # limits.memory_mb reached
    OUTPUT_LIMIT = "output_limit"  # more than limits.output_mb under /outputs
    OUTPUT_UNSTORABLE = "output_unstorable"  # the outputs cannot be stored as a UnixFS tree


class Verdict(enum.StrEnum):
    """What :meth:`JobRunner.precheck` found."""

    RUN = "run"  # this node can run it and commit in time
    FAIL = "fail"  # every replica will end in the same failure result; this node can produce it
    DECLINE = "decline"  # this node cannot (another could): do not bid


@dataclass(frozen=True, slots=True)
class Precheck:
    """The answer of :meth:`JobRunner.precheck`.

    Attributes:
        verdict: RUN, FAIL or DECLINE.
        reason: One line: why this node declines, or the failure result's message.
        failure: The failure result's code (FAIL only).
        run_seconds: This node's worst-case run time (RUN only): Wasm fuel limit ÷ its
            fuel rate, Docker ``limits.timeout_s``.
    """

    verdict: Verdict
    reason: str | None = None
    failure: FailureReason | None = None
    run_seconds: float | None = None

    @property
    def bid(self) -> bool:
        """Whether this node can commit a result in time (RUN, or FAIL: a failure result, paid ``min_units``)."""
        return self.verdict is not Verdict.DECLINE


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What running one replica of a job produced.

    Attributes:
        result_cid: CID of the result directory (``outputs/`` and ``receipt.json``);
            None when this node could not produce a result (another node might).
        usage: Units to reveal on chain (Wasm fuel, Docker CPU ms); 0 when
            ``result_cid`` is None.
        receipt: The full per-provider receipt: executor, artifact CID and digest,
            exit code, reason, fuel, cpu_ms, peak_memory, wall_ms, bytes_in, bytes_out,
            price per unit, the formula ``price × units`` and the amount, error.
            Not part of ``result_cid``.
        receipt_cid: CID of ``receipt`` as stored in the content store; None when
            ``result_cid`` is None (the receipt still says why).
        error: One line: why there is no result, why the job failed, or what was
            removed from its outputs; the node logs it and carries on.
        failure: The failure result's code when ``result_cid`` is a failure result.
    """

    result_cid: str | None
    usage: int
    receipt: dict[str, Any]
    receipt_cid: str | None
    error: str | None
    failure: FailureReason | None = None


class _Declined(Exception):
    """This node cannot produce a result; the message is the one-line reason."""


class _Failed(Exception):
    """The job cannot run, the same way on every replica: a failure result."""

    def __init__(self, reason: FailureReason, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.digest = digest


@runtime_checkable
class _ChecksArtifacts(Protocol):
    """An executor that can tell, before running, why an artifact can never run (WasmExecutor)."""

    def check(self, artifact: Path, artifact_cid: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a run ended, as the result records it: see the module docstring's table."""

    reason: FailureReason | None
    keep_outputs: bool
    usage: int
    message: str | None


class JobRunner:
    """Runs job replicas: fetch, execute, store the result and the receipt.

    ``run`` and ``precheck`` may be called from several threads at once; each run
    has its own work directory, removed when the run ends.

    Example::

        runner = JobRunner(
            store=store,
            executors={"wasm": wasm_executor, "docker": docker_executor},
            work_dir=Path("node/work"),
            market=market,
        )
        check = runner.precheck(terms=terms, spec_cid=spec_cid)
        if check.verdict is Verdict.DECLINE:
            logger.info("job_id=%s declined: %s", 7, check.reason)
        outcome = runner.run(job_id=7, terms=terms, spec_cid=spec_cid, seed=seed, price=2, time_left=28.0)
        if outcome.result_cid is None:
            logger.warning("job_id=%s no result: %s", 7, outcome.error)

    Args:
        store: A connected content store: specs, artifacts and inputs are read from
            it, results and receipts written to it.
        executors: Sandboxes by kind (``"wasm"``, ``"docker"``), as a spec names them.
            Docker executors must be started.
        work_dir: Where per-job directories are made (created on first use). For
            Docker jobs the engine must see it (same host).
        market: The contract binding used to resolve parent jobs' results; without
            one, jobs with parent inputs are declined.
        max_input_bytes: Most a job may make the node fetch (artifact and inputs
            together); larger jobs are declined.
        fuel_rate: Fuel per second this node's Wasm sandbox burns at worst; precheck
            declines a Wasm job whose fuel limit would take longer than the commit
            window allows (default: the protocol's reference rate, see
            ``DEFAULT_FUEL_RATE``). Measure it with ``bench/executors.py``.
        commit_margin: Seconds of the commit window this node keeps for storing the
            result and landing the commit (precheck, and the safety net of ``run``).
    """

    def __init__(
        self,
        *,
        store: ContentStore,
        executors: Mapping[str, Executor],
        work_dir: Path,
        market: Market | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        fuel_rate: int = DEFAULT_FUEL_RATE,
        commit_margin: float = DEFAULT_COMMIT_MARGIN,
    ) -> None:
        if max_input_bytes < 1:
            raise ValueError(f"max_input_bytes must be positive, got {max_input_bytes}")
        if fuel_rate < 1:
            raise ValueError(f"fuel_rate must be positive, got {fuel_rate}")
        if commit_margin < 0:
            raise ValueError(f"commit_margin must not be negative, got {commit_margin}")
        self._store = store
        self._executors = dict(executors)
        self._work_dir = Path(work_dir)
        self._market = market
        self._max_input_bytes = max_input_bytes
        self._fuel_rate = fuel_rate
        self._commit_margin = commit_margin

    # ------------------------------------------------------------------ run

    def run(
        self,
        *,
        job_id: int,
        terms: JobTerms,
        spec_cid: str,
        seed: bytes,
        price: int,
        behaviour: Behaviour = Behaviour.HONEST,
        time_left: float | None = None,
    ) -> RunOutcome:
        """Run one replica of a job and store its result.

        Args:
            job_id: The on-chain job id.
            terms: The job's terms (executor, safety class, max units, parents).
            spec_cid: CID of the job spec (from ``JobPosted``); its digest is in ``terms``.
            seed: The job's 32-byte seed (``BiddingClosed.seed``), shared by all replicas.
            price: This provider's price per unit in wei, for the receipt.
            behaviour: ``LAZY`` makes up a result without running; ``WRONG`` alters
                one output byte after an honest run; every other behaviour runs honestly.
            time_left: Seconds until the commit deadline. The sandbox's wall-clock
                safety net is this less ``commit_margin`` (at least half of it); None
                takes the whole window, ``terms.exec_timeout``. 0 or less: no result.

        Returns:
            The result CID and usage to commit (a failure result has ``failure`` set),
            the receipt, or the reason there is no result (see the module docstring).

        Raises:
            BackendError: The content store did not answer; retry later.
            DockerEngineUnavailableError: The Docker engine did not answer; retry later.
            ChainUnavailable: The RPC node did not answer while resolving a parent.
            OSError: The work directory cannot be written.
            ValueError: ``seed`` is not 32 bytes or ``price`` is negative.
        """
        if len(seed) != _SEED_BYTES:
            raise ValueError(f"seed must be {_SEED_BYTES} bytes (BiddingClosed.seed), got {len(seed)}")
        if price < 0:
            raise ValueError(f"price must not be negative, got {price}")
        behaviour = Behaviour(behaviour)
        kind = _kind(terms)
        receipt = _blank_receipt(job_id=job_id, spec_cid=spec_cid, seed=seed, price=price, executor=kind)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._work_dir))
        result_dir = job_dir / "result"
        # The commit deadline on this machine's clock: fetching the inputs eats into the run's share.
        deadline = time.monotonic() + (float(terms.exec_timeout) if time_left is None else time_left)
        try:
            return self._run(job_id, terms, spec_cid, seed, behaviour, receipt, job_dir, deadline)
        except _Declined as declined:
            reason = str(declined)
            receipt.update(error=reason, usage=0, amount=0, formula=_formula(price, 0, receipt["units"]))
            logger.warning("job_id=%s no result: %s", job_id, reason)
            return RunOutcome(result_cid=None, usage=0, receipt=receipt, receipt_cid=None, error=reason)
        except _Failed as failed:
            _remove_tree(result_dir)
            (result_dir / "outputs").mkdir(parents=True)
            if failed.digest is not None:
                receipt.update(artifact_digest=failed.digest)
            ending = _Ending(reason=failed.reason, keep_outputs=False, usage=0, message=failed.message)
            return self._finish(job_id, terms, behaviour, receipt, result_dir, ending, exit_code=None)
        finally:
            _remove_tree(job_dir)

    def _run(
        self,
        job_id: int,
        terms: JobTerms,
        spec_cid: str,
        seed: bytes,
        behaviour: Behaviour,
        receipt: dict[str, Any],
        job_dir: Path,
        deadline: float,
    ) -> RunOutcome:
        spec = self._load_spec(spec_cid)
        receipt.update(artifact=spec.artifact)
        _check_terms(spec, terms)
        result_dir = job_dir / "result"
        outputs = result_dir / "outputs"
        if behaviour is Behaviour.LAZY:
            return self._made_up(job_id, terms, spec, receipt, result_dir)

        executor = self._executor(spec)
        budget = _Budget(self._max_input_bytes)
        artifact = job_dir / "artifact"
        self._fetch(spec.artifact, artifact, what="the artifact", budget=budget, refused=FailureReason.ARTIFACT_INVALID)
        _check_artifact(executor, artifact, spec.artifact)
        inputs = job_dir / "inputs"
        inputs.mkdir()
        for index, ref in enumerate(spec.inputs):
            target = inputs / ref.path
            if ref.cid is not None:
                self._fetch(
                    ref.cid, target, what=f"input {ref.path!r}", budget=budget, refused=FailureReason.INPUT_REFUSED
                )
            else:
                assert ref.parent is not None  # InputRef holds exactly one of cid and parent
                self._fetch_parent(ref.parent, target, job_dir / "parents" / str(index), budget=budget)

        outputs.mkdir(parents=True)
        safety_net = self._safety_net(deadline)
        # spec.limits.cpus is not passed on: ExecutionRequest has no CPU share yet, so a
        # Docker job gets the executor's own ``cpus`` setting (its time-limit bill uses the spec's).
        request = ExecutionRequest(
            job_id=job_id,
            artifact=artifact,
            artifact_cid=spec.artifact,
            args=tuple(spec.args),
            env=dict(spec.env),
            inputs_dir=inputs,
            outputs_dir=outputs,
            seed=seed,
            max_units=spec.unit_limit(terms),
            memory_limit=spec.limits.memory_mb << 20,
            timeout=safety_net if spec.executor == "wasm" else min(float(spec.limits.timeout_s), safety_net),
            network=spec.network,
            max_output_bytes=spec.limits.output_bytes,
        )
        try:
            result = executor.run(request)
        except ValueError as exc:  # limits from the terms the sandbox cannot take
            raise _Declined(f"the {spec.executor} executor refused the job's limits: {exc}") from None
        _record_execution(receipt, result)
        ending = _ending(spec, terms, request, result, _tree_size(outputs))
        if not ending.keep_outputs:
            _remove_tree(outputs)
            outputs.mkdir()
        return self._finish(
            job_id,
            terms,
            behaviour,
            receipt,
            result_dir,
            ending,
            exit_code=result.exit_code if ending.keep_outputs else None,
            digest=result.artifact_digest or None,
        )

    def _finish(
        self,
        job_id: int,
        terms: JobTerms,
        behaviour: Behaviour,
        receipt: dict[str, Any],
        result_dir: Path,
        ending: _Ending,
        *,
        exit_code: int | None,
        digest: str | None = None,
    ) -> RunOutcome:
        """Clean the outputs, write ``receipt.json`` and store the result (a failure result too)."""
        outputs = result_dir / "outputs"
        dropped = _drop_unstorable(outputs)
        note = _dropped_note(dropped)
        if dropped:
            logger.warning("job_id=%s removed from the outputs: %s", job_id, ", ".join(map(ascii, dropped)))
        if behaviour is Behaviour.WRONG:
            altered = _alter_one_byte(outputs)
            logger.info("job_id=%s behaviour=wrong: altered one byte of %s", job_id, altered)
        receipt.update(artifact_digest=digest or receipt["artifact_digest"])
        try:
            result_cid = self._store_tree(job_id, result_dir, receipt, ending, exit_code=exit_code, note=note)
        except UnsupportedContent as exc:
            # What is left after the drops can still be too wide for a basic UnixFS directory.
            message = f"the outputs cannot be stored: {_one_line(exc).replace(str(result_dir), '')}"
            _remove_tree(outputs)
            outputs.mkdir()
            ending = _Ending(FailureReason.OUTPUT_UNSTORABLE, keep_outputs=False, usage=ending.usage, message=message)
            exit_code, note = None, None
            result_cid = self._store_tree(job_id, result_dir, receipt, ending, exit_code=exit_code, note=note)
        error = _join(ending.message, note)
        units = paid_units([ending.usage], deterministic=True, max_units=terms.max_units, min_units=terms.min_units)
        receipt.update(
            error=error,
            usage=ending.usage,
            amount=payment(receipt["price_per_unit"], units),
            formula=_formula(receipt["price_per_unit"], units, receipt["units"]),
            result=result_cid,
        )
        receipt_cid = str(self._store.put_bytes(_canonical(receipt)))
        logger.info(
            "job_id=%s result %s: usage=%s %s, exit_code=%s, receipt %s%s",
            job_id,
            result_cid,
            ending.usage,
            receipt["units"],
            exit_code,
            receipt_cid,
            f", {ending.reason or 'error'}: {error}" if error else "",
        )
        return RunOutcome(
            result_cid=result_cid,
            usage=ending.usage,
            receipt=receipt,
            receipt_cid=receipt_cid,
            error=error,
            failure=ending.reason,
        )

    def _store_tree(
        self,
        job_id: int,
        result_dir: Path,
        receipt: dict[str, Any],
        ending: _Ending,
        *,
        exit_code: int | None,
        note: str | None,
    ) -> str:
        """Write ``receipt.json`` (what every honest replica reports identically) and store the result."""
        executor = receipt["executor"]
        record: dict[str, Any] = {
            "version": RESULT_VERSION,
            "job_id": job_id,
            "executor": executor,
            "artifact": receipt["artifact"],
            "artifact_digest": receipt["artifact_digest"],
            "exit_code": exit_code,
            "reason": None if ending.reason is None else ending.reason.value,
            "error": _join(ending.message, note),
            "units": _UNITS[executor],
        }
        if executor == "wasm":  # Docker CPU time differs between replicas: the contract takes the median
            record["usage"] = ending.usage
        (result_dir / "receipt.json").write_bytes(_canonical(record))
        receipt.update(exit_code=exit_code, reason=record["reason"])
        return str(self._store.put_directory(result_dir, include_hidden=True))

    def _made_up(
        self, job_id: int, terms: JobTerms, spec: JobSpec, receipt: dict[str, Any], result_dir: Path
    ) -> RunOutcome:
        """LAZY: a plausible-looking result without fetching or running anything."""
        outputs = result_dir / "outputs"
        outputs.mkdir(parents=True)
        (outputs / "stdout").write_text(secrets.token_hex(16) + "\n")
        (outputs / "stderr").write_bytes(b"")
        usage = 1 + secrets.randbelow(1000)
        receipt.update(
            fuel=usage if spec.executor == "wasm" else None,
            cpu_ms=usage if spec.executor == "docker" else None,
            wall_ms=0,
            bytes_in=0,
            bytes_out=_tree_size(outputs),
        )
        logger.info("job_id=%s behaviour=lazy: made up a result without running", job_id)
        ending = _Ending(reason=None, keep_outputs=True, usage=usage, message=None)
        return self._finish(
            job_id, terms, Behaviour.LAZY, receipt, result_dir, ending, exit_code=0,
            digest="sha256:" + secrets.token_hex(32),
        )  # fmt: skip

    def _safety_net(self, deadline: float) -> float:
        """Wall-clock seconds the sandbox may take: what is left before the deadline, less the margin."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Declined("the commit deadline has passed: a result could not be committed any more")
        return max(left - self._commit_margin, left / 2)

    # ------------------------------------------------------------------ before bidding

    def precheck(self, *, terms: JobTerms, spec_cid: str) -> Precheck:
        """What running this job here would come to, checked BEFORE bidding, without running it.

        A provider that bids on a job it cannot run misses the commit and is slashed,
        so everything that could keep this node from committing in time is checked,
        in the order ``run`` uses: the spec and the terms; the executor; the artifact
        and every stored input present in this node's store, within its
        ``max_input_bytes`` and safe to unpack (``ContentStore.inspect``, nothing is
        written); a Wasm module compiled through the executor's cache (so the run
        does not compile it again); parents' results resolved and inspected (with a
        market); and the worst-case run time (Wasm: fuel limit ÷ ``fuel_rate``;
        Docker: ``limits.timeout_s``) plus ``commit_margin`` against the commit window
        (``exec_timeout``). Cheap: it reads the spec, directory nodes and file roots,
        and the Wasm module; it never fetches inputs or loads a Docker image (a
        Docker tarball that does not verify is found by the run, as a failure result).

        Returns:
            ``Verdict.RUN``; ``Verdict.FAIL`` with the failure every replica will
            report (this node can still produce and commit it, and be paid the job's
            ``min_units``); or ``Verdict.DECLINE`` with the reason this node cannot
            (do not bid).

        Raises:
            BackendError: The content store did not answer; decide again later.
            ChainUnavailable: The RPC node did not answer while resolving a parent.
            OSError: The work directory cannot be written.

        Example:
            >>> check = runner.precheck(terms=terms, spec_cid=spec_cid)
            >>> check.verdict, check.failure, check.reason
            (<Verdict.FAIL: 'fail'>, <FailureReason.ARTIFACT_INVALID: 'artifact_invalid'>, 'the artifact is not ...')
        """
        try:
            spec = self._load_spec(spec_cid)
            _check_terms(spec, terms)
            executor = self._executor(spec)
            budget = _Budget(self._max_input_bytes)
            self._inspect(spec.artifact, what="the artifact", budget=budget, refused=FailureReason.ARTIFACT_INVALID)
            if isinstance(executor, _ChecksArtifacts):
                self._work_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(prefix="precheck-", dir=self._work_dir) as scratch:
                    module = Path(scratch) / "artifact"
                    self._fetch(spec.artifact, module, what="the artifact", budget=_Budget(self._max_input_bytes),
                                refused=FailureReason.ARTIFACT_INVALID)  # fmt: skip
                    _check_artifact(executor, module, spec.artifact)
            for ref in spec.inputs:
                if ref.cid is not None:
                    self._inspect(
                        ref.cid, what=f"input {ref.path!r}", budget=budget, refused=FailureReason.INPUT_REFUSED
                    )
                else:
                    assert ref.parent is not None
                    result_cid = self._parent_result(ref.parent)
                    self._inspect(result_cid, what=f"the result of parent job {ref.parent}", budget=budget,
                                  refused=FailureReason.PARENT_UNUSABLE)  # fmt: skip
            seconds = self._worst_case_seconds(spec, terms)
        except _Declined as declined:
            return Precheck(verdict=Verdict.DECLINE, reason=str(declined))
        except _Failed as failed:
            return Precheck(verdict=Verdict.FAIL, reason=failed.message, failure=failed.reason)
        return Precheck(verdict=Verdict.RUN, run_seconds=seconds)

    def _worst_case_seconds(self, spec: JobSpec, terms: JobTerms) -> float:
        if spec.executor == "wasm":
            seconds = spec.unit_limit(terms) / self._fuel_rate
            how = f"{spec.unit_limit(terms):,} fuel at this node's {self._fuel_rate:,} fuel/s"
        else:
            seconds = float(spec.limits.timeout_s)
            how = f"limits.timeout_s={spec.limits.timeout_s}"
        if seconds + self._commit_margin > terms.exec_timeout:
            raise _Declined(
                f"this node is too slow for the commit window: the run may take {seconds:.1f} s ({how}), plus "
                f"{self._commit_margin:g} s to store and commit, and exec_timeout is {terms.exec_timeout} s"
            )
        return seconds

    # ------------------------------------------------------------------ fetching

    def _executor(self, spec: JobSpec) -> Executor:
        executor = self._executors.get(spec.executor)
        if executor is None:
            raise _Declined(
                f"the job needs a {spec.executor} executor and this node has only "
                f"{sorted(self._executors) or 'none'}; do not bid on {spec.executor} jobs"
            )
        return executor

    def envelope(self, *, job_id: int, spec_cid: str, result_cid: str) -> bytes:
        """``result_cid`` encrypted to the delivery key the job's spec names, for a sealed reveal.

        Empty when the spec names no key or cannot be read: the reveal goes ahead without
        one (the client then reads the result once it is published), since a reveal missed
        for want of an envelope would cost the provider its collateral.
        """
        try:
            key = load_spec(self._store, spec_cid).delivery_key
            return seal(result_cid, key, job_id=job_id) if key else b""
        except (SpecError, StorageError, ValueError) as exc:
            logger.warning("job_id=%s no envelope for the client: %s", job_id, _one_line(exc))
            return b""

    def _load_spec(self, spec_cid: str) -> JobSpec:
        try:
            return load_spec(self._store, spec_cid)
        except SpecError as exc:
            # load_spec reports every storage failure as a bad spec; only some are the spec's fault.
            cause = exc.__cause__
            if isinstance(cause, BackendError):
                raise BackendError(f"Reading job spec {spec_cid}: {cause}") from cause
            if isinstance(cause, ContentNotFound | CorruptBlock):
                raise _Declined(
                    f"the job spec {spec_cid} is not in this node's content store (or its copy is corrupt)"
                ) from None
            raise _Failed(FailureReason.SPEC_INVALID, _one_line(exc)) from None

    def _fetch(self, cid: str, dest: Path, *, what: str, budget: _Budget, refused: FailureReason) -> None:
        with self._storage_errors(cid, what=what, budget=budget, refused=refused):
            self._store.fetch(cid, dest, max_size=budget.remaining)
        budget.spend(_tree_size(dest))

    def _inspect(self, cid: str, *, what: str, budget: _Budget, refused: FailureReason) -> None:
        with self._storage_errors(cid, what=what, budget=budget, refused=refused):
            size = self._store.inspect(cid, max_size=budget.remaining)
        budget.spend(size)

    @contextlib.contextmanager
    def _storage_errors(self, cid: str, *, what: str, budget: _Budget, refused: FailureReason) -> Iterator[None]:
        """Sort a fetch's or an inspection's errors: the node's (decline) or the content's (failure result)."""
        try:
            yield
        except (BackendError, DestinationExists):  # the store's outage, or this node's own bug
            raise
        except ContentNotFound:
            raise _Declined(
                f"{what} {cid} is not in the content store; the client must upload it "
                "(or point this node at the store that holds it)"
            ) from None
        except ContentTooLarge:
            raise _Declined(
                f"{what} {cid} takes the job over the {budget.limit}-byte limit this node fetches for one job"
            ) from None
        except CorruptBlock:
            raise _Declined(f"{what} {cid}: this node's copy is corrupt; import it again") from None
        except StorageError as exc:  # UnsafePath, MalformedDag, NotAFile, UnsupportedContent: the content's
            raise _Failed(refused, f"{what} {cid} cannot be unpacked safely: {_one_line(exc)}") from None

    def _parent_result(self, parent: int) -> str:
        if self._market is None:
            raise _Declined(
                f"an input is the result of parent job {parent}, and this node has no market "
                "binding to resolve it; give the JobRunner a market"
            )
        try:
            return resolve_parent_result(self._market, parent)
        except (ChainUnavailable, ResultUnpublished):
            raise
        except ChainSchedulerError as exc:  # not finalized (as this RPC node sees it), unknown, logs pruned
            raise _Declined(_one_line(exc)) from None

    def _fetch_parent(self, parent: int, dest: Path, staging: Path, *, budget: _Budget) -> None:
        result_cid = self._parent_result(parent)
        what = f"the result of parent job {parent}"
        self._fetch(result_cid, staging, what=what, budget=budget, refused=FailureReason.PARENT_UNUSABLE)
        outputs = staging / "outputs"
        if outputs.is_symlink() or not outputs.is_dir():
            raise _Failed(FailureReason.PARENT_UNUSABLE, f"{what} ({result_cid}) has no outputs/ directory")
        failed = _failure_of(staging / "receipt.json")
        if failed is not None:
            raise _Failed(FailureReason.PARENT_UNUSABLE, f"{what} ({result_cid}) is a failure result ({failed})")
        outputs.rename(dest)


@dataclass(slots=True)
class _Budget:
    """Bytes a job may still fetch."""

    limit: int
    spent: int = 0

    @property
    def remaining(self) -> int:
        return max(self.limit - self.spent, 0)

    def spend(self, size: int) -> None:
        self.spent += size


# ---------------------------------------------------------------------- checks


def _kind(terms: JobTerms) -> str:
    return "wasm" if terms.executor == ExecutorKind.WASM else "docker"


def _check_terms(spec: JobSpec, terms: JobTerms) -> None:
    try:
        spec.check_terms(terms)
    except SpecError as exc:
        raise _Failed(FailureReason.SPEC_TERMS, _one_line(exc)) from None


def _check_artifact(executor: Executor, artifact: Path, artifact_cid: str) -> None:
    """Refuse an artifact that can never run (a directory; for a checking executor, what it refuses)."""
    if artifact.is_symlink() or not artifact.is_file():
        raise _Failed(
            FailureReason.ARTIFACT_INVALID,
            f"the artifact {artifact_cid} is a directory; it must be a file (a Wasm module or a docker save tarball)",
        )
    if not isinstance(executor, _ChecksArtifacts):
        return  # the sandbox reports a bad artifact from run(): see _ending
    try:
        problem = executor.check(artifact, artifact_cid)
    except ValueError as exc:  # over this node's own limits
        raise _Declined(str(exc)) from None
    if problem is not None:
        raise _Failed(FailureReason.ARTIFACT_INVALID, problem, digest=_sha256(artifact))


def _ending(
    spec: JobSpec, terms: JobTerms, request: ExecutionRequest, result: ExecutionResult, output_bytes: int
) -> _Ending:
    """How a run ended and what its result keeps and bills (the module docstring's table).

    Raises:
        _Declined: the node's own safety net stopped the run (no result).
    """
    wasm = spec.executor == "wasm"
    limits = spec.limits
    stop = result.stopped_by
    if stop is None and request.max_output_bytes is not None and output_bytes > request.max_output_bytes:
        stop = StopReason.OUTPUT  # written after the sandbox stopped watching (e.g. Docker logs)
    if stop is StopReason.TIMEOUT:
        if wasm and request.timeout >= 2 * request.max_units / Limits.FUEL_PER_SECOND:
            # Fuel counts instructions, not host calls: a program that loops on WASI calls can run
            # far longer than its fuel budget says. Every replica that started in time gives it at
            # least twice that budget's time, then bills the budget: a job built to outlast the
            # commit window fails the same way everywhere instead of getting honest nodes slashed.
            return _Ending(
                FailureReason.TIME_LIMIT,
                False,
                request.max_units,
                f"time limit: the program ran more than twice as long as its fuel budget of "
                f"{request.max_units} allows ({Limits.FUEL_PER_SECOND} fuel/s); host calls are not counted in fuel",
            )
        if wasm or request.timeout < limits.timeout_s:
            raise _Declined(
                f"this node's safety net stopped the run after {request.timeout:.1f} s to keep the commit "
                "deadline; a faster node would have finished"
            )
        billed = min(terms.max_units, math.ceil(limits.timeout_s * 1000 * limits.cpus))
        return _Ending(
            FailureReason.TIME_LIMIT, False, billed, f"time limit: the container ran longer than {limits.timeout_s} s"
        )
    if stop is StopReason.OUTPUT:
        return _Ending(
            FailureReason.OUTPUT_LIMIT,
            False,
            request.max_units,
            f"output limit: the program wrote more than {limits.output_mb} MiB under /outputs",
        )
    if stop is StopReason.FUEL:
        if not wasm:
            return _Ending(
                FailureReason.UNIT_LIMIT,
                False,
                request.max_units,
                f"unit limit: the container used more than max_units={terms.max_units} CPU ms",
            )
        if request.max_units < terms.max_units:
            return _Ending(
                FailureReason.TIME_LIMIT,
                True,
                request.max_units,
                f"time limit: the program burnt its fuel budget of {request.max_units} "
                f"({limits.timeout_s} s × {Limits.FUEL_PER_SECOND} fuel/s)",
            )
        return _Ending(
            FailureReason.UNIT_LIMIT,
            True,
            request.max_units,
            f"unit limit: the program needs more than max_units={terms.max_units} fuel",
        )
    if stop is StopReason.MEMORY:
        if wasm:
            return _Ending(FailureReason.MEMORY_LIMIT, True, result.usage, result.error)
        return _Ending(
            FailureReason.MEMORY_LIMIT,
            False,
            result.usage,
            f"memory limit: the container needed more than {limits.memory_mb} MiB",
        )
    if result.error is None:
        return _Ending(None, True, result.usage, None)
    error = _replica_independent(spec.executor, result.error)
    if result.usage == 0:  # the sandbox refused the program before it ran
        return _Ending(FailureReason.ARTIFACT_INVALID, False, 0, error)
    if wasm:
        return _Ending(FailureReason.TRAP, True, result.usage, error)
    return _Ending(FailureReason.START_FAILED, False, result.usage, error)


def _failure_of(receipt_file: Path) -> str | None:
    """The reason code in a result's ``receipt.json``, if it records a failure."""
    try:
        record = json.loads(receipt_file.read_bytes())
    except (OSError, ValueError):
        return None
    reason = record.get("reason") if isinstance(record, dict) else None
    return str(reason) if reason else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------- receipts


def _blank_receipt(*, job_id: int, spec_cid: str, seed: bytes, price: int, executor: str) -> dict[str, Any]:
    """The per-provider receipt before anything is known: every key present, in reading order."""
    return {
        "version": RESULT_VERSION,
        "job_id": job_id,
        "spec": spec_cid,
        "seed": seed.hex(),
        "executor": executor,
        "artifact": None,
        "artifact_digest": None,
        "exit_code": None,
        "reason": None,
        "error": None,
        "units": _UNITS[executor],
        "usage": 0,
        "fuel": None,
        "cpu_ms": None,
        "peak_memory": None,
        "wall_ms": None,
        "bytes_in": None,
        "bytes_out": None,
        "price_per_unit": price,
        "formula": _formula(price, 0, _UNITS[executor]),
        "amount": 0,
        "result": None,
    }


def _record_execution(receipt: dict[str, Any], result: ExecutionResult) -> None:
    receipt.update(
        artifact_digest=result.artifact_digest or None,
        exit_code=result.exit_code,
        error=result.error,
        fuel=result.fuel,
        cpu_ms=result.cpu_ms,
        peak_memory=result.peak_memory,
        wall_ms=result.wall_ms,
        bytes_in=result.bytes_in,
        bytes_out=result.bytes_out,
    )


def _formula(price: int, units: int, unit_name: str | None) -> str:
    return f"{price} wei × {units} {unit_name or 'units'} = {payment(price, units)} wei"


def _replica_independent(executor: str, error: str | None) -> str | None:
    """An executor's error as every replica reports it.

    Wasm messages are functions of the module, inputs and limits. Docker ones can
    carry measured figures (CPU ms) and engine ids, which differ between replicas.
    """
    if error is None or executor == "wasm":
        return error
    return _NUMBER.sub("N", _HEX_ID.sub("ID", error))


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _join(*parts: str | None) -> str | None:
    present = [p for p in parts if p]
    return "; ".join(present) if present else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------- outputs


def _drop_unstorable(outputs: Path) -> list[str]:
    """Remove what must not be stored from a job's outputs; return the removed paths, sorted.

    Symlinks go (a job could point one at the provider's files, and a reader
    following it would leak them), as do sockets, pipes, devices and names that
    are not UTF-8 (the store refuses them). Entries the node cannot read are
    made readable by their owner.
    """
    dropped: list[str] = []
    euid = os.geteuid()
    _readable(str(outputs), os.lstat(outputs), euid, stat.S_IRWXU)
    stack = [str(outputs)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            listed = list(entries)
        for entry in listed:
            rel = os.path.relpath(entry.path, outputs)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode) or not _is_utf8(entry.name):
                _remove_entry(entry.path, info)
                dropped.append(rel)
            elif stat.S_ISDIR(info.st_mode):
                _readable(entry.path, info, euid, stat.S_IRWXU)
                stack.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                _readable(entry.path, info, euid, stat.S_IRUSR)
            else:
                os.unlink(entry.path)
                dropped.append(rel)
    return sorted(dropped)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _readable(path: str, info: os.stat_result, euid: int, bits: int) -> None:
    if euid != 0 and info.st_uid == euid and info.st_mode & bits != bits:
        os.chmod(path, stat.S_IMODE(info.st_mode) | bits)


def _remove_entry(path: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        _remove_tree(Path(path))
    else:
        os.unlink(path)


def _dropped_note(dropped: list[str]) -> str | None:
    if not dropped:
        return None
    shown = ", ".join(ascii(name) for name in dropped[:_LISTED_DROPS])
    more = f" and {len(dropped) - _LISTED_DROPS} more" if len(dropped) > _LISTED_DROPS else ""
    return (
        f"outputs: removed {len(dropped)} entries that are not stored "
        f"(symlinks, special files, names that are not UTF-8): {shown}{more}"
    )


def _alter_one_byte(outputs: Path) -> str:
    """WRONG: flip the lowest bit of the first byte of the first non-empty output file (by path)."""
    files = sorted(p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        if path.stat().st_size == 0:
            continue
        with path.open("r+b") as stream:
            first = stream.read(1)[0]
            stream.seek(0)
            stream.write(bytes([first ^ 0x01]))
        return str(path.relative_to(outputs))
    # Every output is empty: the one-byte difference is a byte where there was none.
    (outputs / "stdout").write_bytes(b"\x01")
    return "stdout"


def _tree_size(root: Path) -> int:
    if root.is_symlink():
        return 0
    if root.is_file():
        return root.stat().st_size
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _remove_tree(path: Path) -> None:
    """Remove a work tree, including directories a job left without write permission."""
    try:
        if os.geteuid() != 0:  # root may delete anything; others first reopen what the job closed
            _open_up(str(path))
            for directory, dirs, _files in os.walk(path):
                for name in dirs:  # before os.walk tries to list them
                    _open_up(os.path.join(directory, name))
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove the work directory %s: %s; remove it by hand", path, exc)


def _open_up(directory: str) -> None:
    info = os.lstat(directory)
    if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IRWXU)
