"""Run one replica of a job end to end: spec, artifact and inputs in, result directory and receipt out.

:meth:`JobRunner.run` is what a provider does between the seed arriving and the
commit: read the job spec by CID and check it against the on-chain terms, fetch
the program (a Wasm module, or a ``docker save`` tarball) and every input into a
private work directory (stored content by CID, a parent job's accepted result
from the chain), run the sandbox the spec names, then store the result directory
and a per-provider receipt in the content store.

The result directory is what replicas agree on, so it holds only what every
honest replica produces identically::

    outputs/        what the program wrote to /outputs, plus its stdout and stderr
    receipt.json    canonical JSON: version, job_id, executor, artifact,
                    artifact_digest, exit_code, error, units, and usage for
                    deterministic (Wasm) jobs only: Docker CPU time differs
                    between replicas, and the contract takes their median

The per-provider receipt (stored separately, its CID in :attr:`RunOutcome.receipt_cid`)
adds what differs between providers: the price, the amount claimed
(``price × usage``), wall time, peak memory, bytes in and out.

Outputs are the job's to write, so they are not trusted: symlinks (which could
point at the provider's own files), sockets, pipes, devices and names that are
not UTF-8 are removed before the directory is stored, and the receipt's
``error`` says so.

Errors. Bad input never raises: a spec that does not parse or does not fit the
terms, an artifact or input the store does not hold, a module that is not Wasm,
an image whose digest does not match, a parent job with no accepted result, an
executor this node lacks. Those come back as a :class:`RunOutcome` with
``error`` set and ``result_cid=None``. A program that ran and failed (non-zero
exit, trap, out of fuel, timeout) still has a result: every honest replica
reports the same failure, and its receipt carries the exit code and the error.
Exceptions are for the node's own infrastructure, which the daemon should retry
later (the work directory is cleaned in every case):

- :class:`storage.BackendError`: the content store did not answer;
- :class:`compute_node.DockerEngineUnavailableError` (and other
  ``DockerExecutorError``): the Docker engine did not answer or misbehaved;
- :class:`chain_scheduler.errors.ChainUnavailable`: the RPC node did not answer
  while a parent's result was being resolved;
- :class:`OSError`: the node's own disk (work directory full or unwritable);
- :class:`ValueError`: the caller's arguments (seed not 32 bytes, negative price).

Example:
    >>> runner = JobRunner(store=store, executors={"wasm": WasmExecutor()}, work_dir=Path("node/work"),
    ...                    market=market)
    >>> outcome = runner.run(job_id=7, terms=market.terms_of(7), spec_cid=spec_cid, seed=seed, price=2)
    >>> outcome.result_cid, outcome.usage, outcome.error
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain_scheduler import JobSpec, JobTerms, Market, load_spec, payment, resolve_parent_result
from chain_scheduler.errors import ChainSchedulerError, ChainUnavailable, SpecError
from compute_node._behaviour import Behaviour
from compute_node.executors import ExecutionRequest, ExecutionResult, Executor
from storage import BackendError, ContentNotFound, ContentStore, ContentTooLarge, StorageError, UnsupportedContent

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "RESULT_VERSION", "JobRunner", "RunOutcome"]

logger = logging.getLogger(__name__)

#: Version of ``receipt.json`` in the result directory and of the per-provider receipt.
RESULT_VERSION = 1
#: Default bound on what one job may make the node fetch (artifact plus inputs), in bytes.
DEFAULT_MAX_INPUT_BYTES = 4 << 30

_MIB = 1 << 20
_SEED_BYTES = 32
_UNITS = {"wasm": "fuel", "docker": "cpu_ms"}
_LISTED_DROPS = 5
# Engine ids and measured figures in Docker error messages differ between replicas.
_HEX_ID = re.compile(r"[0-9a-f]{12,}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What running one replica of a job produced.

    Attributes:
        result_cid: CID of the result directory (``outputs/`` and ``receipt.json``);
            None when the job could not run at all.
        usage: Units to reveal on chain (Wasm fuel, Docker CPU ms); 0 when
            ``result_cid`` is None.
        receipt: The full per-provider receipt: executor, artifact CID and digest,
            exit code, fuel, cpu_ms, peak_memory, wall_ms, bytes_in, bytes_out,
            price per unit, the formula ``price × usage`` and the amount, error.
            Not part of ``result_cid``.
        receipt_cid: CID of ``receipt`` as stored in the content store; None when
            ``result_cid`` is None (the receipt still says why).
        error: One-line reason when the job was declined or its program failed;
            the node logs it and carries on.
    """

    result_cid: str | None
    usage: int
    receipt: dict[str, Any]
    receipt_cid: str | None
    error: str | None


class _Declined(Exception):
    """The job cannot run; the message is the one-line reason."""


class JobRunner:
    """Runs job replicas: fetch, execute, store the result and the receipt.

    ``run`` may be called from several threads at once; each run has its own
    work directory, removed when the run ends.

    Example::

        runner = JobRunner(
            store=store,
            executors={"wasm": wasm_executor, "docker": docker_executor},
            work_dir=Path("node/work"),
            market=market,
        )
        outcome = runner.run(job_id=7, terms=terms, spec_cid=spec_cid, seed=seed, price=2)
        if outcome.result_cid is None:
            logger.warning("job_id=%s declined: %s", 7, outcome.error)

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
    """

    def __init__(
        self,
        *,
        store: ContentStore,
        executors: Mapping[str, Executor],
        work_dir: Path,
        market: Market | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    ) -> None:
        if max_input_bytes < 1:
            raise ValueError(f"max_input_bytes must be positive, got {max_input_bytes}")
        self._store = store
        self._executors = dict(executors)
        self._work_dir = Path(work_dir)
        self._market = market
        self._max_input_bytes = max_input_bytes

    def run(
        self,
        *,
        job_id: int,
        terms: JobTerms,
        spec_cid: str,
        seed: bytes,
        price: int,
        behaviour: Behaviour = Behaviour.HONEST,
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

        Returns:
            The result CID and usage to commit, the receipt, or the reason there is
            no result (see the module docstring: bad input never raises).

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
        receipt = _blank_receipt(job_id=job_id, spec_cid=spec_cid, seed=seed, price=price)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._work_dir))
        try:
            return self._run(job_id, terms, spec_cid, seed, behaviour, receipt, job_dir)
        except _Declined as declined:
            reason = str(declined)
            receipt.update(error=reason, usage=0, amount=0, formula=_formula(price, 0, receipt["units"]))
            logger.warning("job_id=%s declined: %s", job_id, reason)
            return RunOutcome(result_cid=None, usage=0, receipt=receipt, receipt_cid=None, error=reason)
        finally:
            _remove_tree(job_dir)

    # ------------------------------------------------------------------ steps

    def _run(
        self,
        job_id: int,
        terms: JobTerms,
        spec_cid: str,
        seed: bytes,
        behaviour: Behaviour,
        receipt: dict[str, Any],
        job_dir: Path,
    ) -> RunOutcome:
        spec = self._load_spec(spec_cid)
        try:
            spec.check_terms(terms)
        except SpecError as exc:
            raise _Declined(str(exc)) from None
        receipt.update(executor=spec.executor, artifact=spec.artifact, units=_UNITS[spec.executor])
        result_dir = job_dir / "result"
        outputs = result_dir / "outputs"
        if behaviour is Behaviour.LAZY:
            return self._made_up(job_id, spec, receipt, result_dir)

        executor = self._executors.get(spec.executor)
        if executor is None:
            raise _Declined(
                f"the job needs a {spec.executor} executor and this node has only "
                f"{sorted(self._executors) or 'none'}; do not bid on {spec.executor} jobs"
            )
        budget = _Budget(self._max_input_bytes)
        artifact = job_dir / "artifact"
        self._fetch(spec.artifact, artifact, what="the artifact", budget=budget)
        if not artifact.is_file() or artifact.is_symlink():
            raise _Declined(
                f"the artifact {spec.artifact} is a directory; it must be a file "
                "(a Wasm module or a docker save tarball)"
            )
        inputs = job_dir / "inputs"
        inputs.mkdir()
        for index, ref in enumerate(spec.inputs):
            target = inputs / ref.path
            if ref.cid is not None:
                self._fetch(ref.cid, target, what=f"input {ref.path!r}", budget=budget)
            else:
                assert ref.parent is not None  # InputRef holds exactly one of cid and parent
                self._fetch_parent(ref.parent, target, job_dir / "parents" / str(index), budget=budget)

        outputs.mkdir(parents=True)
        # spec.limits.cpus is not passed on: ExecutionRequest has no CPU share yet, so a
        # Docker job gets the executor's own ``cpus`` setting.
        request = ExecutionRequest(
            job_id=job_id,
            artifact=artifact,
            artifact_cid=spec.artifact,
            args=tuple(spec.args),
            env=dict(spec.env),
            inputs_dir=inputs,
            outputs_dir=outputs,
            seed=seed,
            max_units=terms.max_units,
            memory_limit=spec.limits.memory_mb * _MIB,
            timeout=float(spec.limits.timeout_s),
            network=spec.network,
        )
        try:
            result = executor.run(request)
        except ValueError as exc:  # limits from the terms the sandbox cannot take (e.g. max_units 0)
            raise _Declined(f"the {spec.executor} executor refused the job's limits: {exc}") from None
        _record_execution(receipt, result)
        if result.error is not None and result.usage == 0:
            raise _Declined(f"did not run: {result.error}")

        dropped = _drop_unstorable(outputs)
        note = _dropped_note(dropped)
        error = _join(result.error, note)
        if dropped:
            logger.warning("job_id=%s removed from the outputs: %s", job_id, ", ".join(map(ascii, dropped)))
        if behaviour is Behaviour.WRONG:
            altered = _alter_one_byte(outputs)
            logger.info("job_id=%s behaviour=wrong: altered one byte of %s", job_id, altered)
        _write_consensus_receipt(
            result_dir,
            job_id=job_id,
            executor=spec.executor,
            artifact=spec.artifact,
            digest=result.artifact_digest,
            exit_code=result.exit_code,
            error=_join(_replica_independent(spec.executor, result.error), note),
            usage=result.usage,
        )
        return self._store_result(job_id, result_dir, receipt, usage=result.usage, error=error)

    def _made_up(self, job_id: int, spec: JobSpec, receipt: dict[str, Any], result_dir: Path) -> RunOutcome:
        """LAZY: a plausible-looking result without fetching or running anything."""
        outputs = result_dir / "outputs"
        outputs.mkdir(parents=True)
        (outputs / "stdout").write_text(secrets.token_hex(16) + "\n")
        (outputs / "stderr").write_bytes(b"")
        usage = 1 + secrets.randbelow(1000)
        digest = "sha256:" + secrets.token_hex(32)
        receipt.update(
            artifact_digest=digest,
            exit_code=0,
            fuel=usage if spec.executor == "wasm" else None,
            cpu_ms=usage if spec.executor == "docker" else None,
            wall_ms=0,
            bytes_in=0,
            bytes_out=_tree_size(outputs),
        )
        _write_consensus_receipt(
            result_dir,
            job_id=job_id,
            executor=spec.executor,
            artifact=spec.artifact,
            digest=digest,
            exit_code=0,
            error=None,
            usage=usage,
        )
        logger.info("job_id=%s behaviour=lazy: made up a result without running", job_id)
        return self._store_result(job_id, result_dir, receipt, usage=usage, error=None)

    def _store_result(
        self, job_id: int, result_dir: Path, receipt: dict[str, Any], *, usage: int, error: str | None
    ) -> RunOutcome:
        try:
            result_cid = str(self._store.put_directory(result_dir, include_hidden=True))
        except BackendError:
            raise
        except UnsupportedContent as exc:
            raise _Declined(f"the outputs cannot be stored: {_one_line(exc)}") from None
        amount = payment(receipt["price_per_unit"], usage)
        receipt.update(
            error=error,
            usage=usage,
            amount=amount,
            formula=_formula(receipt["price_per_unit"], usage, receipt["units"]),
            result=result_cid,
        )
        receipt_cid = str(self._store.put_bytes(_canonical(receipt)))
        logger.info(
            "job_id=%s result %s: usage=%s %s, exit_code=%s, receipt %s%s",
            job_id,
            result_cid,
            usage,
            receipt["units"],
            receipt["exit_code"],
            receipt_cid,
            f", error: {error}" if error else "",
        )
        return RunOutcome(result_cid=result_cid, usage=usage, receipt=receipt, receipt_cid=receipt_cid, error=error)

    def precheck(self, *, terms: JobTerms, spec_cid: str) -> str | None:
        """Why this node could not run the job, or None: checked BEFORE bidding.

        A provider that bids on a job it cannot run misses the commit and is slashed, so
        the spec is loaded and checked against the terms, the executor it names must be
        configured here, and the artifact and every stored input must be in the store.
        Parent inputs are resolved at run time (bids wait until parents are final).

        Raises:
            BackendError: The content store did not answer; decide again later.
        """
        try:
            spec = self._load_spec(spec_cid)
            spec.check_terms(terms)
        except (_Declined, SpecError) as exc:
            return str(exc)
        if spec.executor not in self._executors:
            return f"this node runs no {spec.executor} jobs"
        for cid, what in [(spec.artifact, "artifact"), *((i.cid, f"input {i.path}") for i in spec.inputs if i.cid)]:
            if not self._store.has(str(cid)):
                return f"{what} {cid} is not in the content store"
        return None

    # ------------------------------------------------------------------ fetching

    def _load_spec(self, spec_cid: str) -> JobSpec:
        try:
            return load_spec(self._store, spec_cid)
        except SpecError as exc:
            # load_spec reports every storage failure as a bad spec; an unreachable store is not one.
            if isinstance(exc.__cause__, BackendError):
                raise BackendError(f"Reading job spec {spec_cid}: {exc.__cause__}") from exc.__cause__
            raise _Declined(str(exc)) from None

    def _fetch(self, cid: str, dest: Path, *, what: str, budget: _Budget) -> None:
        try:
            self._store.fetch(cid, dest, max_size=budget.remaining)
        except BackendError:
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
        except StorageError as exc:
            raise _Declined(f"{what} {cid} cannot be fetched: {_one_line(exc)}") from None
        budget.spend(_tree_size(dest))

    def _fetch_parent(self, parent: int, dest: Path, staging: Path, *, budget: _Budget) -> None:
        if self._market is None:
            raise _Declined(
                f"an input is the result of parent job {parent}, and this node has no market "
                "binding to resolve it; give the JobRunner a market"
            )
        try:
            result_cid = resolve_parent_result(self._market, parent)
        except ChainUnavailable:
            raise
        except ChainSchedulerError as exc:  # not finalized, unknown, or no matching reveal
            raise _Declined(_one_line(exc)) from None
        self._fetch(result_cid, staging, what=f"the result of parent job {parent}", budget=budget)
        outputs = staging / "outputs"
        if outputs.is_symlink() or not outputs.is_dir():
            raise _Declined(f"the result {result_cid} of parent job {parent} has no outputs/ directory")
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


# ---------------------------------------------------------------------- receipts


def _blank_receipt(*, job_id: int, spec_cid: str, seed: bytes, price: int) -> dict[str, Any]:
    """The per-provider receipt before anything is known: every key present, in reading order."""
    return {
        "version": RESULT_VERSION,
        "job_id": job_id,
        "spec": spec_cid,
        "seed": seed.hex(),
        "executor": None,
        "artifact": None,
        "artifact_digest": None,
        "exit_code": None,
        "error": None,
        "units": None,
        "usage": 0,
        "fuel": None,
        "cpu_ms": None,
        "peak_memory": None,
        "wall_ms": None,
        "bytes_in": None,
        "bytes_out": None,
        "price_per_unit": price,
        "formula": _formula(price, 0, None),
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


def _formula(price: int, usage: int, units: str | None) -> str:
    return f"{price} wei × {usage} {units or 'units'} = {payment(price, usage)} wei"


def _write_consensus_receipt(
    result_dir: Path,
    *,
    job_id: int,
    executor: str,
    artifact: str,
    digest: str,
    exit_code: int,
    error: str | None,
    usage: int,
) -> None:
    """``receipt.json``: only what every honest replica reports identically."""
    deterministic = executor == "wasm"
    record: dict[str, Any] = {
        "version": RESULT_VERSION,
        "job_id": job_id,
        "executor": executor,
        "artifact": artifact,
        "artifact_digest": digest,
        "exit_code": exit_code,
        "error": error,
        "units": _UNITS[executor],
    }
    if deterministic:
        record["usage"] = usage
    (result_dir / "receipt.json").write_bytes(_canonical(record))


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
