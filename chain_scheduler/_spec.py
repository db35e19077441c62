"""The job spec: what a job runs, stored as JSON in the content store.

The spec is a trust boundary: a provider reads it by CID from storage, written by
a client it does not know. Everything is validated strictly (unknown fields are
refused, CIDs are parsed, input names cannot escape ``/inputs``) and every
problem is reported as one :class:`~chain_scheduler.errors.SpecError` line that
names the field.

A spec looks like::

    {
      "version": 1,
      "executor": "wasm",
      "artifact": "bafk...",                        # the Wasm module, or a `docker save` tarball
      "inputs": [
        {"cid": "bafy...", "path": "corpus"},      # content from the store, at /inputs/corpus
        {"parent": 7, "path": "counts"}            # the accepted result of job 7, from the chain
      ],
      "args": ["--top", "10"],
      "env": {"LANG": "C"},
      "limits": {"memory_mb": 256, "timeout_s": 30, "cpus": 1.0, "output_mb": 256},
      "network": false,
      "description": "word count"
    }

Limits against the terms. ``limits.timeout_s`` means the same thing on every
machine. For a Docker job it is the container's wall-clock limit. For a Wasm job
it is a fuel budget: the run may burn ``timeout_s × WASM_FUEL_PER_SECOND`` fuel,
and no more than the job's ``max_units`` (:meth:`JobSpec.unit_limit`), so a
time-limited run stops at the same instruction, with the same outputs, on every
replica. Either way the run gets at most half of the commit window
(``exec_timeout``): :meth:`JobSpec.check_terms` refuses a spec whose run may take
longer, because the other half is what a provider needs to fetch the inputs,
store the result and land its commit, and what lets a node up to twice slower
than the reference still commit in time.

``WASM_FUEL_PER_SECOND`` (500 M fuel per second, also ``Limits.FUEL_PER_SECOND``)
is the protocol's reference machine. Measured with wasmtime 50 on the 2-core
development machine with the example modules (``examples/wasm``): the compute-bound ones
burn 3.4-10.5 G fuel/s (ga, sha256sum, pi, miner), wordfreq 2.1 G/s, and the
slowest, wordcount (stdio-bound over 3.3 MB of text), 0.83 G/s. The reference
sits below all of them, so a job that fits its budget on the reference fits it
here. Programs that spend their time in host calls (a loop of ``clock_time_get``
or one-line ``fd_write`` calls) burn only 0.3-4 M fuel/s: fuel does not bound
their wall time until the executor charges fuel for host calls.

Example:
    >>> spec = JobSpec(version=1, executor="wasm", artifact=module_cid,
    ...                inputs=[InputRef(cid=text_cid, path="text.txt")])
    >>> spec_cid = store.put_bytes(spec.to_bytes())
    >>> load_spec(store, spec_cid) == spec
    True
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Final, Literal

from eth_utils.crypto import keccak
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError, from_json

from chain_scheduler import errors
from chain_scheduler._market import Market, MarketEvent
from chain_scheduler._model import Executor, JobId, JobStatus, JobTerms, SafetyClass
from storage import (
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    InvalidCid,
    NotAFile,
    StorageError,
    parse_cid,
)

logger = logging.getLogger(__name__)

#: Largest spec :func:`load_spec` reads unless told otherwise (bytes).
MAX_SPEC_SIZE = 1_000_000
MAX_INPUTS = 64
MAX_ARGS = 256
MAX_ENV = 128
#: Longest single argument or environment value (characters).
MAX_VALUE_LENGTH = 4096
#: Bound on all arguments plus all environment entries together (characters).
MAX_ARGV_ENV_TOTAL = 128 * 1024
MAX_DESCRIPTION = 1000
MAX_NAME_LENGTH = 255
MAX_MEMORY_MB = 65536
MAX_TIMEOUT_S = 86_400
MAX_CPUS = 256.0
#: Largest output a spec may allow (MiB): what a provider stores and a child job may have to fetch.
MAX_OUTPUT_MB = 4096
#: Fuel a Wasm job may burn per second of ``limits.timeout_s``: the protocol's reference machine
#: (see the module docstring for how it was measured).
WASM_FUEL_PER_SECOND: Final = 500_000_000
#: A run may take at most 1/COMMIT_WINDOW_SHARE of the commit window (``exec_timeout``).
COMMIT_WINDOW_SHARE: Final = 2

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(kind: str, detail: str) -> PydanticCustomError:
    """A validation error whose message is ``detail`` verbatim (user text may hold braces)."""
    return PydanticCustomError(kind, "{detail}", {"detail": detail})


def _check_cid(value: str) -> str:
    try:
        return parse_cid(value)
    except InvalidCid as exc:
        raise _invalid("cid", f"{value[:80]!r} is not a CID ({exc.reason})") from None


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise _invalid("nul", "must not contain a NUL character")
    return value


def _check_name(value: str) -> str:
    _check_text(value)
    if not value:
        raise _invalid("input_path", "must be a file name, not empty")
    if "/" in value or "\\" in value:
        raise _invalid("input_path", f"{value[:80]!r} must be a single name under /inputs, without '/' or '\\'")
    if value.startswith("."):
        raise _invalid("input_path", f"{value[:80]!r} must not start with '.'")
    if _CONTROL.search(value):
        raise _invalid("input_path", f"{value[:80]!r} must not contain control characters")
    if len(value.encode()) > MAX_NAME_LENGTH:
        raise _invalid("input_path", f"must be at most {MAX_NAME_LENGTH} bytes long")
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        raise _invalid("env_name", f"{value[:80]!r} is not a variable name: use [A-Za-z_][A-Za-z0-9_]*")
    return value


#: A CID string, validated and normalised to lower-case base32 CIDv1.
CID = Annotated[str, AfterValidator(_check_cid)]
#: The name an input gets under ``/inputs``: one path component, not hidden.
InputName = Annotated[str, AfterValidator(_check_name)]
_Text = Annotated[str, Field(max_length=MAX_VALUE_LENGTH), AfterValidator(_check_text)]
_EnvName = Annotated[str, AfterValidator(_check_env_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class InputRef(_Strict):
    """One input of a job, placed at ``/inputs/<path>``: stored content or a parent's result.

    Exactly one of ``cid`` and ``parent`` is set.

    Attributes:
        cid: Content (a file or a directory tree) in the store.
        parent: A parent job whose accepted result is the content (see
            :func:`resolve_parent_result`); it must be among the job's terms' parents.
        path: The name under ``/inputs``.
    """

    cid: CID | None = None
    parent: Annotated[int, Field(ge=1)] | None = None
    path: InputName

    @model_validator(mode="after")
    def _one_source(self) -> InputRef:
        if (self.cid is None) == (self.parent is None):
            raise _invalid("input_source", "needs exactly one of 'cid' (stored content) or 'parent' (a job id)")
        return self


class Limits(_Strict):
    """What the executor allows a job.

    Attributes:
        memory_mb: Memory limit in MiB (Wasm linear memory, or the container's limit).
        timeout_s: Time limit in seconds. Docker: the container's wall-clock limit.
            Wasm: a fuel budget of ``timeout_s × FUEL_PER_SECOND`` (see
            :meth:`JobSpec.unit_limit`), the same on every machine. Must fit in half
            the job's commit window (:meth:`JobSpec.check_terms`). Default 30, which
            fits a 60 s window.
        cpus: CPU share for Docker jobs (ignored by Wasm, which is single-threaded).
            A Docker job stopped at its time limit is billed ``timeout_s × 1000 × cpus``
            CPU ms (at most ``max_units``).
        output_mb: Most the program may write under ``/outputs``, stdout and stderr
            included, in MiB (default 256, at most 4096). A run that writes more ends in
            a failure result without its outputs.
    """

    #: Fuel per second of ``timeout_s`` for Wasm jobs (``WASM_FUEL_PER_SECOND``).
    FUEL_PER_SECOND: ClassVar[int] = WASM_FUEL_PER_SECOND

    memory_mb: Annotated[int, Field(ge=1, le=MAX_MEMORY_MB)] = 256
    timeout_s: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)] = 30
    cpus: Annotated[float, Field(gt=0, le=MAX_CPUS)] = 1.0
    output_mb: Annotated[int, Field(ge=1, le=MAX_OUTPUT_MB)] = 256

    @property
    def output_bytes(self) -> int:
        """``output_mb`` in bytes."""
        return self.output_mb << 20


class JobSpec(_Strict):
    """A job spec (version 1), as stored in the content store and named by the job's terms.

    Attributes:
        version: Spec format version; always 1.
        executor: ``"wasm"`` (a WASI command module) or ``"docker"`` (an image tarball).
        artifact: CID of the Wasm module, or of the ``docker save`` tarball.
        inputs: What appears under ``/inputs``, each under a distinct name.
        args: Command-line arguments (after the program name).
        env: Environment variables.
        limits: Memory, time and CPU limits.
        network: Whether the container may use the network; only a Docker job can ask,
            and only a destructive job gets it (see :meth:`check_terms`).
        description: Free text for people.
        delivery_key: The client's X25519 delivery key (64 hex digits). Providers of a job
            with verifiers reveal only the hash of their result on chain and send the CID
            encrypted to this key (:mod:`chain_scheduler._sealing`). Without one, the client
            learns the CID only when it is published after the job is final.
    """

    version: Literal[1]
    executor: Literal["wasm", "docker"]
    artifact: CID
    inputs: Annotated[list[InputRef], Field(max_length=MAX_INPUTS)] = []
    args: Annotated[list[_Text], Field(max_length=MAX_ARGS)] = []
    env: Annotated[dict[_EnvName, _Text], Field(max_length=MAX_ENV)] = {}
    limits: Limits = Limits()
    network: bool = False
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_check_text)] = ""
    delivery_key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @field_validator("inputs")
    @classmethod
    def _unique_paths(cls, inputs: list[InputRef]) -> list[InputRef]:
        seen: set[str] = set()
        for ref in inputs:
            if ref.path in seen:
                raise _invalid("duplicate_path", f"two inputs are named {ref.path!r}; each needs its own name")
            seen.add(ref.path)
        return inputs

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        # Errors raised here have no field location of their own: the messages name the fields.
        total = sum(len(a) for a in self.args) + sum(len(k) + len(v) for k, v in self.env.items())
        if total > MAX_ARGV_ENV_TOTAL:
            raise _invalid("too_long", f"args and env add up to {total} characters, over {MAX_ARGV_ENV_TOTAL}")
        if self.network and self.executor != "docker":
            raise _invalid("network", "network: only a docker job may ask for network access")
        return self

    # ------------------------------------------------------------- bytes

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, defaults written out, UTF-8).

        The same spec always gives the same bytes, hence the same CID.
        """
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "Job spec") -> JobSpec:
        """Parse and validate spec bytes.

        Args:
            data: The JSON document.
            source: How messages name the spec (e.g. ``"Job spec bafk..."``).

        Raises:
            SpecError: not UTF-8, not JSON, not an object, or invalid; the message
                names each offending field.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.SpecError(f"{source} is not JSON: not UTF-8 text (byte {exc.start}).") from exc
        try:
            # pydantic-core's parser first: strict JSON (no NaN, no lone surrogates) with a
            # nesting limit. Python's json module recurses on the C stack, and web3's
            # dependencies raise the recursion limit to 100000, so a deeply nested
            # document would crash the process instead of raising.
            from_json(data, allow_inf_nan=False)
            raw = json.loads(text, object_pairs_hook=_no_duplicates)
        except ValueError as exc:
            raise errors.SpecError(f"{source} is not JSON: {exc}.") from exc
        if not isinstance(raw, dict):
            raise errors.SpecError(f"{source} must be a JSON object, got {_json_kind(raw)}.")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise errors.SpecError(f"{source} is invalid: {describe_errors(exc)}") from exc

    # ----------------------------------------------------------- checks

    @property
    def parents(self) -> tuple[JobId, ...]:
        """Parent jobs whose results this spec uses, in input order."""
        return tuple(JobId(ref.parent) for ref in self.inputs if ref.parent is not None)

    def unit_limit(self, terms: JobTerms) -> int:
        """The most units a replica of this job may use: the cap its executor is given.

        Wasm: the fuel limit, ``min(terms.max_units, limits.timeout_s × WASM_FUEL_PER_SECOND)``;
        a run that reaches it is stopped at the same instruction on every machine.
        Docker: ``terms.max_units`` CPU ms (its time limit is the wall clock).

        Example:
            >>> JobSpec(version=1, executor="wasm", artifact=cid, limits=Limits(timeout_s=2)).unit_limit(terms)
            1000000000
        """
        if self.executor == "wasm":
            return min(terms.max_units, self.limits.timeout_s * WASM_FUEL_PER_SECOND)
        return terms.max_units

    def check_terms(self, terms: JobTerms) -> None:
        """Check that the spec fits the on-chain terms of the job that names it.

        Raises:
            SpecError: the executor differs, network is asked for by a job that is
                not destructive, an input names a parent the terms do not list, or the
                run may take more than half the commit window (``exec_timeout``).
        """
        self._check_fit(terms)
        self._check_window(terms)

    def _check_fit(self, terms: JobTerms) -> None:
        executor = Executor.WASM if self.executor == "wasm" else Executor.DOCKER
        if executor != terms.executor:
            raise errors.SpecError(
                f"Job spec executor is {self.executor!r} but the job's terms say {terms.executor.name.lower()!r}."
            )
        if self.network and terms.safety != SafetyClass.DESTRUCTIVE:
            raise errors.SpecError(
                f"Job spec asks for network access but the job is {terms.safety.name.lower()}; "
                "only destructive jobs may use the network."
            )
        unknown = [p for p in self.parents if p not in terms.parents]
        if unknown:
            raise errors.SpecError(
                f"Job spec inputs name parent job(s) {unknown} that the job's terms do not list "
                f"(parents {list(terms.parents)})."
            )

    def _check_window(self, terms: JobTerms) -> None:
        # Integer arithmetic: the answer must not depend on float rounding anywhere.
        window = terms.exec_timeout
        if self.executor == "wasm":
            fuel = self.unit_limit(terms)
            if COMMIT_WINDOW_SHARE * fuel <= window * WASM_FUEL_PER_SECOND:
                return
            fits = window * WASM_FUEL_PER_SECOND // COMMIT_WINDOW_SHARE
            needed = -(-COMMIT_WINDOW_SHARE * fuel // WASM_FUEL_PER_SECOND)
            raise errors.SpecError(
                f"Job spec limits do not fit the job's commit window: a wasm run may burn {fuel:,} fuel (the "
                f"smaller of max_units and limits.timeout_s × {WASM_FUEL_PER_SECOND:,} fuel/s), more than "
                f"half of exec_timeout={window} s on the reference machine. Lower limits.timeout_s or max_units "
                f"to {fits:,} fuel at most, or raise exec_timeout to {needed}."
            )
        timeout = self.limits.timeout_s
        if COMMIT_WINDOW_SHARE * timeout <= window:
            return
        raise errors.SpecError(
            f"Job spec limits do not fit the job's commit window: limits.timeout_s={timeout} s may take at most "
            f"half of exec_timeout={window} s. Lower limits.timeout_s to {window // COMMIT_WINDOW_SHARE} "
            f"or raise exec_timeout to {COMMIT_WINDOW_SHARE * timeout}."
        )


def describe_errors(exc: ValidationError, *, limit: int = 5) -> str:
    """A pydantic validation error as one line: ``field.path: problem; ...``."""
    parts = []
    items = exc.errors(include_url=False)
    for item in items[:limit]:
        loc = ".".join(str(p) for p in item["loc"])
        kind = item["type"]
        if kind == "missing":
            msg = "is required"
        elif kind == "extra_forbidden":
            msg = "is not a field of a version 1 spec"
        else:
            msg = item["msg"]
            msg = msg[:1].lower() + msg[1:]
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(items) - limit
    text = "; ".join(parts)
    if more > 0:
        text += f" (and {more} more)"
    return text + "."


def load_spec(store: ContentStore, cid: str, *, max_size: int = MAX_SPEC_SIZE) -> JobSpec:
    """Read a job spec from the content store and validate it.

    Args:
        store: A connected content store.
        cid: The spec's CID (as the job's ``JobPosted`` event carries it).
        max_size: Largest spec accepted, in bytes; larger ones are refused before
            they are read.

    Raises:
        SpecError: the CID is malformed, the store does not hold it, it is too big
            or a directory, it cannot be read, or it is not a valid spec. The
            message is one line saying what is wrong and where.
    """
    source = f"Job spec {cid}"
    try:
        data = store.get_bytes(cid, max_size=max_size)
    except InvalidCid as exc:
        raise errors.SpecError(f"Job spec CID {cid!r} is not a CID: {exc.reason}.") from exc
    except ContentNotFound as exc:
        raise errors.SpecError(
            f"{source} is not in the content store; upload it, or point at the store that holds it."
        ) from exc
    except ContentTooLarge as exc:
        raise errors.SpecError(
            f"{source} is {exc.size} bytes, over the {exc.limit}-byte limit for a spec; "
            "put large data in inputs, not in the spec."
        ) from exc
    except NotAFile as exc:
        raise errors.SpecError(f"{source} is a {exc.kind}, not a JSON file.") from exc
    except StorageError as exc:
        raise errors.SpecError(f"{source} could not be read: {exc}") from exc
    spec = JobSpec.from_bytes(data, source=source)
    logger.debug("loaded spec %s (%s, %d inputs)", cid, spec.executor, len(spec.inputs))
    return spec


def resolve_parent_result(market: Market, parent_job_id: int, *, from_block: int = 0) -> str:
    """The accepted result CID of a finalized parent job, checked against the chain.

    The contract stores only a digest of each revealed result; the CID itself is
    in the winning slot's ``ResultRevealed`` event or, for a result revealed sealed
    (a main or audit slot of a job with verifiers), in a ``ResultPublished`` event.
    The CID returned is the one whose ``keccak256`` prefix equals the digest sealed in
    the winner's slot, so a wrong or forged event cannot substitute another result.

    Args:
        market: A :class:`~chain_scheduler.Market` binding.
        parent_job_id: The parent job.
        from_block: First block to search for the reveal (the parent's posting block
            or earlier); narrow it on nodes that limit ``eth_getLogs`` ranges.

    Raises:
        UnknownJob: no such job.
        ParentNotReady: the job is not Finalized (still running, or failed/cancelled).
        ResultUnpublished: it is, but its result is sealed and not published yet.
        ChainSchedulerError: no reveal event matches the sealed digest (the wrong
            contract, or logs pruned by the node).
        ChainUnavailable: the node cannot be reached.
    """
    job = market.job(parent_job_id)
    if job.status == JobStatus.NONE:
        raise errors.UnknownJob(jobId=parent_job_id)
    if job.status != JobStatus.FINALIZED:
        raise errors.ParentNotReady(job_id=parent_job_id, status=job.status)
    digest = market.slot(parent_job_id, job.winner).result_digest
    events = market.events(from_block=from_block, names=("ResultRevealed", "ResultPublished"), job_id=parent_job_id)
    cid = open_result_cid(events, job.winner, digest)
    if cid is not None:
        return cid
    if market.terms_of(parent_job_id).reveals_sealed(job.winner):
        raise errors.ResultUnpublished(job_id=parent_job_id)
    raise errors.ChainSchedulerError(
        f"Job {parent_job_id} is Finalized with slot {job.winner} winning, but no ResultRevealed event "
        f"from block {from_block} on matches its sealed digest {digest.hex()}. Is this the right contract, "
        "and does the node keep old logs?"
    )


def open_result_cid(events: Sequence[MarketEvent], winner: int, digest: bytes) -> str | None:
    """The accepted result's CID where it is public: the winning slot's ``ResultRevealed`` or a
    ``ResultPublished``, whichever hashes to ``digest`` (other events are skipped). A reopened
    slot can be revealed more than once over a job's life: the latest match wins."""
    for event in reversed(events):
        if event.name not in ("ResultRevealed", "ResultPublished"):
            continue
        if event.name == "ResultRevealed" and int(event.args["slot"]) != winner:
            continue
        cid = str(event.args["resultCid"])
        if keccak(cid.encode())[:24] == digest:
            return cid
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
