"""Workflows: stages of jobs whose inputs are earlier jobs' results, from YAML or Python.

A workflow is a list of stages. A stage runs one Wasm module (or Docker image)
as one job, or as one job per item of its ``foreach`` (fan-out). An input of a
stage may name another stage: that stage's jobs become the job's parents on
chain (the contract holds the job until they are Finalized) and their accepted
results are mounted under ``/inputs`` (fan-in). A stage with ``repeat`` is
posted again and again, each iteration taking the previous one's results,
until a value in its outputs passes a threshold or ``max`` iterations ran.

The file format (paths are relative to the YAML file)::

    name: wordcount-mapreduce
    defaults: {k: 3, m: 2, max_price: 5, max_units: 200000000, collateral: 0.01ether,
               challenge_window: 0}
    stages:
      - name: map
        module: ../wasm/build/wordfreq.wasm      # or image: app.tar (a `docker save` tarball)
        foreach: ../mapreduce/corpus/part-*.txt  # one job per match, sorted ({count: N}, or a list)
        inputs: {text: "{item}"}                 # a path; {item} {index} {iteration} are replaced
      - name: reduce
        module: ../wasm/build/merge.wasm
        args: ["10"]
        inputs: {maps: {stage: map}}             # every map job: /inputs/maps-0, /inputs/maps-1, ...

    # an iterative stage: each iteration reads the previous one's results
      - name: evolve
        module: ga.wasm
        foreach: {count: 3}
        inputs: {prev: {stage: self}}            # nothing in the first iteration
        repeat: {max: 6, until: {file: best.json, key: abs_fx, below: 1.0e-9}}

Input names: ``{stage: X}`` gives one input per job of ``X``, named
``NAME-0``, ``NAME-1``, ... when ``X`` has a ``foreach``, else ``NAME``;
``{stage: X, index: 2}`` or ``{stage: X, index: "{index}"}`` picks one job.
Each mounted result is the job's ``outputs/`` directory. ``after: [X]`` makes
``X``'s jobs parents without mounting anything. Job options (``k``, ``m``,
``max_price``, ``max_units``, ``collateral``, windows, ``limits``, ...) are
taken from ``defaults`` unless the stage sets them.

Scheduling: one thread posts and polls. Every stage whose dependencies are
ready is posted at once, so independent stages run in parallel. A dependency is
ready as soon as its jobs are posted: the contract holds the child until its
parents finalize, and the providers bid for it then (with ``eager=False`` the
client posts a stage only once the jobs it reads are Finalized). A stage that reads a
``repeat`` stage waits until that stage has stopped (its last iteration is what
it reads). The client times out its own jobs that nobody took by their fill
deadline, so they fail with a refund instead of waiting forever.
:meth:`Workflow.run` returns when every job is Finalized, with each job's
result CID and payment.

Errors (all from :mod:`chain_scheduler.errors`)::

    SpecError        the workflow does not validate (the message names the stage and field)
    JobFailed        a job of the workflow ended Failed or Cancelled
    TermsError, OutOfFunds, ...  posting a job was refused (as Client.submit raises them)
    ChainSchedulerError  a ``repeat.until`` file is missing or not a number in a job's outputs
    WaitTimeout      the run's timeout passed (the jobs posted go on; the others above
                     cancel the run's jobs still Open, for a refund)

Example:
    >>> wf = Workflow.load(Path("examples/workflows/mapreduce.yaml")).override(k=1, m=1)
    >>> with Client.from_devnet() as client:
    ...     run = wf.run(client, out=Path("out"), timeout=300)
    >>> (run.out / "reduce" / "outputs" / "top.txt").read_text()
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from chain_scheduler import errors
from chain_scheduler._client import Client, JobHandle, JobReceipt
from chain_scheduler._keys import parse_wei
from chain_scheduler._model import JobId, JobStatus, SafetyClass, Wei
from chain_scheduler._spec import MAX_INPUTS, JobSpec, Limits, _check_name, describe_errors

logger = logging.getLogger(__name__)

#: What ``{stage: ...}`` says to mean the previous iteration of the stage itself.
SELF = "self"
#: Most iterations a ``repeat`` may ask for.
MAX_ITERATIONS = 1000

_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_PLACEHOLDERS = ("item", "index", "iteration")
# Any valid CID: stands in for the artifact when a stage's spec is checked before upload.
_PROBE_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a stage's jobs are posted: the ``Client.submit`` options, None meaning "inherit".

    A workflow's ``defaults`` and each stage's ``options`` are both JobOptions; the
    stage's set fields win. ``max_price``, ``max_units`` and ``collateral`` must be
    set by one of them.

    Example:
        >>> JobOptions(k=3, m=2, max_price=5, max_units=10**8, collateral=10**16, challenge_window=0)
    """

    k: int | None = None
    m: int | None = None
    max_price: int | None = None
    max_units: int | None = None
    min_units: int | None = None
    collateral: int | None = None
    verifiers: int | None = None
    audit_bps: int | None = None
    challenge_window: int | None = None
    fill_timeout: int | None = None
    exec_timeout: int | None = None
    reveal_window: int | None = None
    bid_window: int | None = None
    lottery: bool | None = None
    safety: SafetyClass | None = None
    limits: Limits | None = None
    network: bool | None = None

    def merged(self, over: JobOptions) -> JobOptions:
        """These options with every field ``over`` sets replaced."""
        changes = {f.name: getattr(over, f.name) for f in dataclasses.fields(over) if getattr(over, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def submit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for :meth:`Client.submit` (unset fields left to its defaults)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class FromStage:
    """An input that is the accepted result of another stage's jobs.

    Attributes:
        stage: The stage's name, or ``"self"`` for the previous iteration of a
            ``repeat`` stage (absent in its first iteration).
        index: None: every job of the stage (inputs ``NAME-0``, ``NAME-1``, ... for a
            ``foreach`` stage); an int: that job; ``"{index}"``: the job with this
            job's own index (pairs two fan-outs of the same width).
    """

    stage: str
    index: int | Literal["{index}"] | None = None


@dataclass(frozen=True, slots=True)
class Until:
    """When a ``repeat`` stage stops: a number in a JSON file of its jobs' outputs passes a bound.

    The iteration's value is the best over its jobs (the lowest with ``below``, the
    highest with ``above``); the stage stops once that value is ``< below`` (or ``> above``).

    Attributes:
        file: A JSON file in each job's outputs, e.g. ``best.json``.
        key: The number in it; dots go into nested objects (``stats.error``).
        below, above: The bound; exactly one is set.
    """

    file: str
    key: str
    below: float | None = None
    above: float | None = None

    def value(self, values: Sequence[float]) -> float:
        """The iteration's value: the best of its jobs' values."""
        return min(values) if self.below is not None else max(values)

    def met(self, value: float) -> bool:
        """Whether ``value`` passes the bound."""
        if self.below is not None:
            return value < self.below
        assert self.above is not None
        return value > self.above

    def describe(self) -> str:
        return f"{self.key} < {self.below:g}" if self.below is not None else f"{self.key} > {self.above:g}"


#: A Python stop condition: called with the ``outputs`` directories of an iteration's jobs.
UntilFn: TypeAlias = Callable[[Sequence[Path]], bool]


@dataclass(frozen=True, slots=True)
class Repeat:
    """Post a stage again, each iteration reading the previous one (``FromStage("self")``).

    Attributes:
        max: Most iterations (at least 1).
        until: Stop early when this holds for an iteration's results: an :class:`Until`,
            or a function given the iteration's jobs' ``outputs`` directories. None:
            always ``max`` iterations.
    """

    max: int
    until: Until | UntilFn | None = None


#: What a stage input may be: a path (a str may hold placeholders), or another stage's jobs.
StageInput: TypeAlias = "Path | str | FromStage | Stage"


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a workflow: a program run as one job, or one job per ``foreach`` item.

    Args:
        name: Unique in the workflow: letters, digits, ``_ . -``.
        module: A WASI module (Wasm job); exactly one of ``module`` and ``image``.
        image: A ``docker save`` tarball (Docker job).
        inputs: Name under ``/inputs`` to a path (relative to the workflow's base; a str
            may use ``{item}``, ``{index}``, ``{iteration}``), a :class:`FromStage`, or a
            :class:`Stage` (short for ``FromStage(stage.name)``).
        args: Command-line arguments (placeholders allowed).
        env: Environment variables (placeholders allowed in values).
        foreach: One job per item: strings (paths or plain values, as ``{item}``), or an
            int N for items ``"0"`` .. ``"N-1"``. None: a single job.
        after: Stages whose jobs must be Finalized first, without using their results.
        repeat: Iterate the stage (see :class:`Repeat`).
        options: Job options over the workflow's defaults.
        description: The jobs' description (placeholders allowed); by default
            ``WORKFLOW/STAGE[index]#iteration``.

    Example:
        >>> split = Stage(name="map", module=Path("wordfreq.wasm"),
        ...               foreach=sorted(Path("corpus").glob("*.txt")), inputs={"text": "{item}"})
        >>> merge = Stage(name="reduce", module=Path("merge.wasm"), args=("10",), inputs={"maps": split})
    """

    name: str
    module: Path | None = None
    image: Path | None = None
    inputs: Mapping[str, StageInput] = field(default_factory=dict)
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    foreach: Sequence[str | Path] | int | None = None
    after: Sequence[str] = ()
    repeat: Repeat | None = None
    options: JobOptions = JobOptions()
    description: str = ""

    @property
    def items(self) -> tuple[str, ...] | None:
        """The ``foreach`` items as strings (None: not a fan-out stage)."""
        if self.foreach is None:
            return None
        if isinstance(self.foreach, int):
            return tuple(str(i) for i in range(self.foreach))
        return tuple(str(item) for item in self.foreach)

    @property
    def width(self) -> int:
        """Jobs per iteration."""
        items = self.items
        return 1 if items is None else len(items)

    def sources(self) -> dict[str, Path | str | FromStage]:
        """The inputs, with a :class:`Stage` given as an input turned into its :class:`FromStage`."""
        return {name: FromStage(src.name) if isinstance(src, Stage) else src for name, src in self.inputs.items()}

    def depends_on(self) -> list[str]:
        """Other stages this one reads or waits for, in order, without repeats."""
        names = [s.stage for s in self.sources().values() if isinstance(s, FromStage) and s.stage != SELF]
        return list(dict.fromkeys([*names, *self.after]))


@dataclass(frozen=True, slots=True)
class Workflow:
    """Stages of jobs, checked as a whole when built (no I/O: see :meth:`check_files`).

    Args:
        name: The workflow's name (in job descriptions and the output directory).
        stages: In an order where every stage comes after those it names.
        defaults: Job options every stage inherits.
        base: Directory relative paths are resolved against (the YAML file's directory).
        source: How messages name the workflow (its file); defaults to the name.

    Raises:
        SpecError: a problem with the stages; the message names the stage and field.

    Example:
        >>> wf = Workflow(name="wc", stages=[split, merge],
        ...               defaults=JobOptions(max_price=5, max_units=10**8, collateral=10**16))
        >>> run = wf.run(client, out=Path("out"), timeout=300)
    """

    name: str
    stages: Sequence[Stage]
    defaults: JobOptions = JobOptions()
    base: Path = Path(".")
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _check_workflow(self)

    # --------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path) -> Workflow:
        """Read and check a workflow YAML file; relative paths in it are relative to it.

        Raises:
            SpecError: unreadable, not YAML, or invalid (one line naming stage and field),
                or a module, image, input or ``foreach`` pattern that matches no file.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.SpecError(f"{path}: cannot be read: {exc}") from exc
        try:
            data = yaml.load(text, Loader=_Loader)  # a SafeLoader refusing duplicate keys
        except yaml.YAMLError as exc:
            raise errors.SpecError(f"{path}: {_yaml_problem(exc)}") from exc
        return cls.from_dict(data, base=path.parent, source=str(path), default_name=path.stem)

    @classmethod
    def from_dict(
        cls, data: Any, *, base: Path = Path("."), source: str = "", default_name: str = "workflow"
    ) -> Workflow:
        """A workflow from parsed YAML/JSON data (``name``, ``defaults``, ``stages``).

        Globs are expanded (to absolute paths, sorted) and files checked here, against ``base``.

        Raises:
            SpecError: see :meth:`load`.
        """
        where = source or "Workflow"
        base = Path(base).resolve()
        if not isinstance(data, dict):
            raise errors.SpecError(f"{where}: must be a mapping with 'stages' (and 'name', 'defaults').")
        try:
            top = _TopModel.model_validate(data)
        except ValidationError as exc:
            raise errors.SpecError(f"{where}: {_describe(exc)}") from exc
        name = top.name or default_name
        where = source or f"Workflow {name!r}"
        try:
            defaults = _options(_OptionsModel.model_validate(top.defaults or {}))
        except ValidationError as exc:
            raise errors.SpecError(f"{where}: defaults: {_describe(exc)}") from exc
        stages = [_parse_stage(raw, number, base, where) for number, raw in enumerate(top.stages, 1)]
        workflow = cls(name=name, stages=stages, defaults=defaults, base=base, source=source)
        workflow.check_files()
        return workflow

    def check_files(self) -> None:
        """Check that every module, image and input path exists (placeholders resolved).

        Raises:
            SpecError: naming the stage, the field and the missing path.
        """
        for stage in self.stages:
            program = stage.module if stage.module is not None else stage.image
            assert program is not None
            kind = "module" if stage.module is not None else "image"
            resolved = self.resolve(program)
            if not resolved.is_file():
                hint = " (build the examples: python scripts/build_examples.py)" if resolved.suffix == ".wasm" else ""
                raise self._error(stage, kind, f"{resolved} is not a file{hint}")
            for index, item in enumerate(stage.items or (None,)):
                for name, src in stage.sources().items():
                    if isinstance(src, FromStage):
                        continue
                    path = self._input_path(src, item, index, 0)
                    if not path.exists():
                        raise self._error(stage, f"inputs.{name}", f"{path} does not exist")

    def override(self, **options: Any) -> Workflow:
        """The same workflow with job options forced on every stage (e.g. ``k=1, m=1`` to try it).

        Values are validated like the YAML ``defaults`` (amounts may be strings: ``"0.01ether"``).

        Raises:
            SpecError: an unknown option or a bad value.
        """
        try:
            forced = _options(_OptionsModel.model_validate(options))
        except ValidationError as exc:
            raise errors.SpecError(f"{self._where()}: override: {_describe(exc)}") from exc
        stages = [dataclasses.replace(s, options=s.options.merged(forced)) for s in self.stages]
        return dataclasses.replace(self, stages=stages, defaults=self.defaults.merged(forced))

    # ------------------------------------------------------------------ reading

    def stage(self, name: str) -> Stage:
        """The stage called ``name``.

        Raises:
            KeyError: no such stage.
        """
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"workflow {self.name!r} has no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def options(self, stage: Stage) -> JobOptions:
        """The job options a stage's jobs are posted with (defaults, then the stage's own)."""
        return self.defaults.merged(stage.options)

    def leaves(self) -> list[Stage]:
        """Stages no other stage reads or waits for: the workflow's results."""
        used = {name for s in self.stages for name in s.depends_on()}
        return [s for s in self.stages if s.name not in used]

    def run(
        self,
        client: Client,
        *,
        out: Path | None = None,
        timeout: float = 600.0,
        poll: float = 0.5,
        eager: bool = True,
        on_event: Callable[[WorkflowEvent], None] | None = None,
    ) -> WorkflowRun:
        """Post the workflow's jobs on a connected client and follow them until all are Finalized.

        Args:
            client: A connected :class:`Client` (it pays every job's escrow).
            out: Where the results of the leaf stages are written (``out/STAGE/`` for a
                single-job stage, ``out/STAGE/INDEX/`` for a fan-out), with
                ``out/workflow.json`` (the run as JSON); None fetches nothing. It must
                not exist or be empty.
            timeout: Seconds for the whole run.
            poll: Seconds between two reads of the jobs' states.
            eager: Post a stage as soon as the stages it reads are posted, and a repeat
                stage's next iteration as soon as the last one Succeeded: the contract
                holds each child until its parents are Finalized, and providers bid for
                it then. Its ``fill_timeout`` must cover the parents' run, since it
                counts from posting. False: a stage is posted once the jobs it names
                are Finalized.
            on_event: Called with each :class:`WorkflowEvent` (posted, status changes,
                iterations, fetched results), e.g. to print progress.

        Returns:
            The run: each stage's jobs, results, payments.

        Raises:
            SpecError: a file is missing, or ``out`` is not empty.
            JobFailed: a job ended Failed or Cancelled.
            TermsError, OutOfFunds, ...: what :meth:`Client.submit` raises, when posting a job.
            ChainSchedulerError: a ``repeat.until`` file cannot be read from a job's outputs.
            WaitTimeout: ``timeout`` passed (the jobs posted go on on chain).

            On the errors above but the last, the run's jobs still Open are cancelled for a refund.
        """
        self.check_files()
        if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise errors.SpecError(f"{out} exists and is not an empty directory: choose another output directory.")
        return _Runner(self, client, out=out, timeout=timeout, poll=poll, eager=eager, on_event=on_event).run()

    # --------------------------------------------------------------- helpers

    def _where(self) -> str:
        return self.source or f"Workflow {self.name!r}"

    def _error(self, stage: Stage, field_name: str, problem: str) -> errors.SpecError:
        return errors.SpecError(f"{self._where()}: stage {stage.name!r}: {field_name}: {problem}.")

    def resolve(self, path: Path | str) -> Path:
        """``path`` (``~`` expanded) joined to the workflow's base when it is relative."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base / p

    def _input_path(self, src: Path | str, item: str | None, index: int, iteration: int) -> Path:
        text = render(src, item=item, index=index, iteration=iteration) if isinstance(src, str) else src
        return self.resolve(text)


# ----------------------------------------------------------------------------- placeholders


def placeholders(text: str) -> set[str]:
    """The placeholder names used in ``text`` (``{{`` and ``}}`` are literal braces)."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1) is not None}


def render(text: str, *, item: str | None, index: int, iteration: int) -> str:
    """``text`` with ``{item}``, ``{index}`` and ``{iteration}`` replaced (``{{``/``}}``: braces)."""
    values = {"item": item if item is not None else "", "index": str(index), "iteration": str(iteration)}

    def sub(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values.get(match.group(1), token)

    return _PLACEHOLDER.sub(sub, text)


# ----------------------------------------------------------------------------- checks


def _check_workflow(wf: Workflow) -> None:
    where = wf._where()
    if not wf.name or not _STAGE_NAME.fullmatch(wf.name):
        raise errors.SpecError(f"{where}: name: {wf.name!r} must be letters, digits, '_', '.', '-' (at most 64).")
    if not wf.stages:
        raise errors.SpecError(f"{where}: stages: the workflow needs at least one stage.")
    seen: dict[str, Stage] = {}
    for stage in wf.stages:
        if not isinstance(stage, Stage):
            raise errors.SpecError(f"{where}: stages: {stage!r} is not a Stage.")
        if not _STAGE_NAME.fullmatch(stage.name) or stage.name == SELF:
            raise wf._error(stage, "name", "use letters, digits, '_', '.', '-' (at most 64), and not the word 'self'")
        if stage.name in seen:
            raise wf._error(stage, "name", "another stage has this name; each needs its own")
        _check_stage(wf, stage, seen)
        seen[stage.name] = stage


def _check_stage(wf: Workflow, stage: Stage, earlier: Mapping[str, Stage]) -> None:
    if (stage.module is None) == (stage.image is None):
        raise wf._error(stage, "module", "give exactly one of 'module' (a .wasm file) or 'image' (a docker save tar)")
    items = stage.items
    if items is not None and not items:
        raise wf._error(stage, "foreach", "has no items: a fan-out needs at least one")
    if isinstance(stage.foreach, int) and stage.foreach < 1:
        raise wf._error(stage, "foreach", "count must be at least 1")

    texts: list[tuple[str, str]] = [("description", stage.description)]
    texts += [(f"args[{i}]", a) for i, a in enumerate(stage.args)]
    texts += [(f"env.{k}", v) for k, v in stage.env.items()]
    sources = stage.sources()
    for name, src in sources.items():
        texts.append((f"inputs.{name}", name))
        if isinstance(src, str):
            texts.append((f"inputs.{name}", src))
    for field_name, text in texts:
        for ph in placeholders(text):
            if ph not in _PLACEHOLDERS:
                raise wf._error(
                    stage, field_name, f"unknown placeholder {{{ph}}}: use {{item}}, {{index}}, {{iteration}}"
                )
            if ph in ("item", "index") and items is None:
                raise wf._error(stage, field_name, f"{{{ph}}} needs a 'foreach' on the stage")

    for name, src in sources.items():
        if isinstance(src, FromStage):
            _check_reference(wf, stage, f"inputs.{name}", src, earlier)
        elif not isinstance(src, (str, Path)):
            raise wf._error(stage, f"inputs.{name}", f"{src!r} is not a path or FromStage")
    for dep in stage.after:
        if dep == SELF or dep not in earlier:
            raise wf._error(stage, "after", _unknown_stage(dep, stage, earlier))

    if stage.repeat is not None:
        _check_repeat(wf, stage, stage.repeat)

    options = wf.options(stage)
    for required in ("max_price", "max_units", "collateral"):
        if getattr(options, required) is None:
            raise wf._error(stage, required, "is required: set it in the stage or in 'defaults'")
    k, m = options.k or 1, options.m or 1
    if not 1 <= m <= k or 2 * m <= k:
        raise wf._error(stage, "m", f"m={m} with k={k}: the quorum m must be at most k and more than k/2")

    # The spec each job will get, with the artifact and stored inputs stood in for: catches
    # bad names, too many inputs, long args, env names, before anything is uploaded or paid.
    for index, item in enumerate(items or (None,)):
        for iteration in (0, 1) if stage.repeat is not None else (0,):
            names = _input_names(stage, earlier, index, item, iteration)
            if len(names) > MAX_INPUTS:
                raise wf._error(stage, "inputs", f"{len(names)} inputs per job, over the limit of {MAX_INPUTS}")
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise wf._error(stage, "inputs", f"two inputs would both be named {duplicates[0]!r}")
            for input_name in names:
                try:
                    _check_name(input_name)
                except PydanticCustomError as exc:
                    raise wf._error(stage, "inputs", f"input name {input_name!r}: {exc}") from None
            try:
                JobSpec(
                    version=1,
                    executor="wasm" if stage.module is not None else "docker",
                    artifact=_PROBE_CID,
                    args=[render(a, item=item, index=index, iteration=iteration) for a in stage.args],
                    env={k: render(v, item=item, index=index, iteration=iteration) for k, v in stage.env.items()},
                    limits=options.limits or Limits(),
                    network=bool(options.network),
                    description=_description(wf, stage, index, item, iteration),
                )
            except ValidationError as exc:
                raise wf._error(stage, "job spec", describe_errors(exc).rstrip(".")) from None


def _check_reference(wf: Workflow, stage: Stage, field_name: str, ref: FromStage, earlier: Mapping[str, Stage]) -> None:
    if ref.stage == SELF:
        if stage.repeat is None:
            raise wf._error(stage, field_name, "{stage: self} (the previous iteration) needs 'repeat' on the stage")
        target = stage
    elif ref.stage in earlier:
        target = earlier[ref.stage]
    else:
        raise wf._error(stage, field_name, _unknown_stage(ref.stage, stage, earlier))
    if ref.index == "{index}":
        if stage.items is None or target.items is None or len(stage.items) != len(target.items):
            raise wf._error(
                stage,
                field_name,
                f"index '{{index}}' pairs jobs one to one: both this stage ({stage.width} jobs) and "
                f"stage {target.name!r} ({target.width} jobs) need a 'foreach' of the same length",
            )
    elif ref.index is not None and (
        isinstance(ref.index, bool) or not isinstance(ref.index, int) or not 0 <= ref.index < target.width
    ):
        raise wf._error(
            stage, field_name, f"index {ref.index!r} is not a job of stage {target.name!r} (0..{target.width - 1})"
        )


def _check_repeat(wf: Workflow, stage: Stage, repeat: Repeat) -> None:
    if isinstance(repeat.max, bool) or not isinstance(repeat.max, int) or not 1 <= repeat.max <= MAX_ITERATIONS:
        raise wf._error(stage, "repeat.max", f"must be an integer from 1 to {MAX_ITERATIONS}")
    until = repeat.until
    if isinstance(until, Until):
        parts = Path(until.file).parts
        if not until.file or Path(until.file).is_absolute() or ".." in parts:
            raise wf._error(stage, "repeat.until.file", f"{until.file!r} must be a path inside the job's outputs")
        if not until.key:
            raise wf._error(stage, "repeat.until.key", "must name a number in the file")
        if (until.below is None) == (until.above is None):
            raise wf._error(stage, "repeat.until", "give exactly one of 'below' or 'above'")
        bound = until.below if until.below is not None else until.above
        if bound is None or not math.isfinite(bound):
            raise wf._error(stage, "repeat.until", "the bound must be a finite number")
    elif until is not None and not callable(until):
        raise wf._error(stage, "repeat.until", "must be an Until or a function of the outputs directories")


def _unknown_stage(name: str, stage: Stage, earlier: Mapping[str, Stage]) -> str:
    if name == stage.name:
        return f"a stage cannot name itself ({name!r}); use {{stage: self}} with 'repeat' for its previous iteration"
    known = ", ".join(earlier) or "none"
    return f"no stage {name!r} before this one (stages are listed in the order they depend on; earlier: {known})"


def _input_names(stage: Stage, stages: Mapping[str, Stage], index: int, item: str | None, iteration: int) -> list[str]:
    names: list[str] = []
    for name, src in stage.sources().items():
        rendered = render(name, item=item, index=index, iteration=iteration)
        if not isinstance(src, FromStage):
            names.append(rendered)
            continue
        if src.stage == SELF and iteration == 0:
            continue
        target = stage if src.stage == SELF else stages[src.stage]
        if src.index is None and target.items is not None:
            names += [f"{rendered}-{i}" for i in range(target.width)]
        else:
            names.append(rendered)
    return names


def _description(wf: Workflow, stage: Stage, index: int, item: str | None, iteration: int) -> str:
    if stage.description:
        return render(stage.description, item=item, index=index, iteration=iteration)
    text = f"{wf.name}/{stage.name}"
    if stage.items is not None:
        text += f"[{index}]"
    if stage.repeat is not None:
        text += f"#{iteration}"
    return text


# ----------------------------------------------------------------------------- YAML parsing


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, coerce_numbers_to_str=True)


class _TopModel(_Model):
    name: str | None = None
    description: str = ""
    defaults: dict[str, Any] | None = None
    stages: list[Any] = Field(min_length=1)


_Amount = int | str


class _OptionsModel(_Model):
    k: int | None = Field(default=None, ge=1, le=255)
    m: int | None = Field(default=None, ge=1, le=255)
    max_price: _Amount | None = None
    max_units: int | None = Field(default=None, ge=1, lt=2**64)
    min_units: int | None = Field(default=None, ge=0, lt=2**64)
    collateral: _Amount | None = None
    verifiers: int | None = Field(default=None, ge=0, le=255)
    audit_bps: int | None = Field(default=None, ge=0, le=10_000)
    challenge_window: int | None = Field(default=None, ge=0, lt=2**32)
    fill_timeout: int | None = Field(default=None, ge=1, lt=2**32)
    exec_timeout: int | None = Field(default=None, ge=1, lt=2**32)
    reveal_window: int | None = Field(default=None, ge=1, lt=2**32)
    bid_window: int | None = Field(default=None, ge=0, lt=2**32)
    lottery: bool | None = None
    safety: Literal["deterministic", "nondestructive", "destructive"] | None = None
    limits: Limits | None = None
    network: bool | None = None


class _UntilModel(_Model):
    file: str
    key: str
    below: float | None = None
    above: float | None = None


class _RepeatModel(_Model):
    max: int = Field(ge=1, le=MAX_ITERATIONS)
    until: _UntilModel | None = None


class _StageModel(_OptionsModel):
    name: str
    module: str | None = None
    image: str | None = None
    inputs: dict[str, Any] = {}
    args: list[str] = []
    env: dict[str, str] = {}
    foreach: Any = None
    after: list[str] | str = []
    repeat: _RepeatModel | None = None
    description: str = ""


def _describe(exc: ValidationError) -> str:
    """A validation error as one line, worded for a workflow file (not for a job spec)."""
    parts = []
    for item in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "missing":
            msg = "is required"
        elif item["type"] == "extra_forbidden":
            msg = "is not a known field (a typo?)"
        else:
            msg = item["msg"][:1].lower() + item["msg"][1:]
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + "."


def _amount(value: int | str | None, field_name: str) -> int | None:
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 0:
            raise ValueError(f"{field_name}: must not be negative")
        return value
    try:
        return parse_wei(value)
    except ValueError as exc:
        raise ValueError(f"{field_name}: {exc}") from None


def _options(model: _OptionsModel) -> JobOptions:
    return JobOptions(
        k=model.k,
        m=model.m,
        max_price=_amount(model.max_price, "max_price"),
        max_units=model.max_units,
        min_units=model.min_units,
        collateral=_amount(model.collateral, "collateral"),
        verifiers=model.verifiers,
        audit_bps=model.audit_bps,
        challenge_window=model.challenge_window,
        fill_timeout=model.fill_timeout,
        exec_timeout=model.exec_timeout,
        reveal_window=model.reveal_window,
        bid_window=model.bid_window,
        lottery=model.lottery,
        safety=SafetyClass[model.safety.upper()] if model.safety else None,
        limits=model.limits,
        network=model.network,
    )


def _parse_stage(raw: Any, number: int, base: Path, where: str) -> Stage:
    label = f"stage #{number}"
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        label = f"stage {raw['name']!r}"
    if not isinstance(raw, dict):
        raise errors.SpecError(f"{where}: {label}: must be a mapping with 'name' and 'module' (or 'image').")
    try:
        model = _StageModel.model_validate(raw)
        options = _options(model)
    except ValidationError as exc:
        raise errors.SpecError(f"{where}: {label}: {_describe(exc)}") from exc
    except ValueError as exc:
        raise errors.SpecError(f"{where}: {label}: {exc}.") from exc

    def fail(field_name: str, problem: str) -> errors.SpecError:
        return errors.SpecError(f"{where}: {label}: {field_name}: {problem}.")

    inputs: dict[str, StageInput] = {}
    for name, value in model.inputs.items():
        if isinstance(value, str):
            inputs[name] = value
        elif isinstance(value, dict) and "stage" in value and set(value) <= {"stage", "index"}:
            stage_name, index = value["stage"], value.get("index")
            if not isinstance(stage_name, str):
                raise fail(f"inputs.{name}.stage", "must be a stage name (or self)")
            if index is not None and index != "{index}" and (isinstance(index, bool) or not isinstance(index, int)):
                raise fail(f"inputs.{name}.index", "must be a job index (0, 1, ...) or '{index}'")
            inputs[name] = FromStage(stage=stage_name, index=index)
        else:
            raise fail(f"inputs.{name}", "must be a path (a string) or {stage: NAME} (optionally with index: N)")
    return Stage(
        name=model.name,
        module=Path(model.module) if model.module is not None else None,
        image=Path(model.image) if model.image is not None else None,
        inputs=inputs,
        args=tuple(model.args),
        env=dict(model.env),
        foreach=_parse_foreach(model.foreach, base, fail),
        after=(model.after,) if isinstance(model.after, str) else tuple(model.after),
        repeat=_parse_repeat(model.repeat),
        options=options,
        description=model.description,
    )


def _parse_foreach(value: Any, base: Path, fail: Callable[[str, str], errors.SpecError]) -> Sequence[str] | int | None:
    if value is None:
        return None
    if isinstance(value, str):
        pattern = os.path.normpath(value if Path(value).is_absolute() else base / value)
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise fail("foreach", f"{value!r} matches no file (relative to {base})")
        return matches
    if isinstance(value, list):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise fail("foreach", "a list must hold strings or numbers")
        return [str(v) for v in value]
    if isinstance(value, dict) and set(value) == {"count"}:
        count = value["count"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INPUTS * 16:
            raise fail("foreach.count", f"must be an integer from 1 to {MAX_INPUTS * 16}")
        return count
    raise fail("foreach", "use a glob pattern (a string), a list of items, or {count: N}")


def _parse_repeat(model: _RepeatModel | None) -> Repeat | None:
    if model is None:
        return None
    until = model.until
    return Repeat(
        max=model.max,
        until=Until(file=until.file, key=until.key, below=until.below, above=until.above) if until else None,
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {exc.problem}{context}."
    return f"not valid YAML: {' '.join(str(exc).split())}."


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """Something that happened during a run, for progress display.

    Attributes:
        kind: ``posted``, ``status`` (a job changed status), ``iteration`` (a repeat
            stage's iteration was judged), ``done`` (a stage finished), ``fetched``
            (a result written to the output directory), ``failed``.
        stage: The stage's name.
        message: One line for people, e.g. ``map[1] job 4: Running``.
        job_id: The job, when the event is about one.
        index: The job's index in its stage.
        iteration: The iteration of a repeat stage (0 otherwise).
        status: The job's new status (``posted``, ``status``, ``failed``).
        value: The iteration's ``until`` value (``iteration``).
    """

    kind: Literal["posted", "status", "iteration", "done", "fetched", "failed"]
    stage: str
    message: str
    job_id: JobId | None = None
    index: int | None = None
    iteration: int = 0
    status: JobStatus | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class StageJob:
    """One finished job of a run.

    Attributes:
        stage: Its stage.
        index: Its index in the stage (0 for a single-job stage).
        iteration: Its iteration (0 unless the stage repeats).
        handle: The job on chain.
        parents: Its parent jobs (the stages it read or waited for).
        result_cid: The accepted result.
        receipt: Who was paid what (read from the chain after finalization).
        outputs: Its ``outputs`` directory under the run's ``out`` (None: not fetched).
    """

    stage: str
    index: int
    iteration: int
    handle: JobHandle
    parents: tuple[JobId, ...]
    result_cid: str
    receipt: JobReceipt
    outputs: Path | None = None

    @property
    def job_id(self) -> JobId:
        return self.handle.job_id


@dataclass(frozen=True, slots=True)
class StageRun:
    """What one stage did.

    Attributes:
        name: The stage.
        jobs: Every job, iteration by iteration, index by index.
        iterations: How many iterations were posted (1 unless the stage repeats).
        converged: Whether ``repeat.until`` held at the end (None: no condition).
        values: The ``until`` value of each iteration (an :class:`Until` only).
    """

    name: str
    jobs: tuple[StageJob, ...]
    iterations: int = 1
    converged: bool | None = None
    values: tuple[float, ...] = ()

    @property
    def final(self) -> tuple[StageJob, ...]:
        """The jobs of the last iteration: what later stages read."""
        return tuple(j for j in self.jobs if j.iteration == self.iterations - 1)

    @property
    def handles(self) -> tuple[JobHandle, ...]:
        """Every job's handle."""
        return tuple(j.handle for j in self.jobs)

    @property
    def paid(self) -> Wei:
        return Wei(sum(j.receipt.paid for j in self.jobs))


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A finished run: per stage its jobs, results and payments.

    Attributes:
        name: The workflow.
        stages: Per stage name, in workflow order.
        out: Where the leaf stages' results were written (None: not fetched).
        paid: Wei paid to providers for every job.
        escrow: Wei locked when posting.
        refund: Wei returned to the client's credit (``chainsched account withdraw``).
        elapsed: Seconds from the first post to the last finalization.
    """

    name: str
    stages: Mapping[str, StageRun]
    out: Path | None
    paid: Wei
    escrow: Wei
    refund: Wei
    elapsed: float

    def __getitem__(self, stage: str) -> StageRun:
        return self.stages[stage]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the totals, and per stage every job's id, result and payment."""
        return {
            "workflow": self.name,
            "out": str(self.out) if self.out is not None else None,
            "paid": self.paid,
            "escrow": self.escrow,
            "refund": self.refund,
            "elapsed_s": round(self.elapsed, 3),
            "stages": {
                name: {
                    "iterations": s.iterations,
                    "converged": s.converged,
                    "values": list(s.values),
                    "paid": s.paid,
                    "jobs": [
                        {
                            "job_id": j.job_id,
                            "index": j.index,
                            "iteration": j.iteration,
                            "result_cid": j.result_cid,
                            "paid": j.receipt.paid,
                            "parents": list(j.parents),
                            "outputs": str(j.outputs) if j.outputs is not None else None,
                        }
                        for j in s.jobs
                    ],
                }
                for name, s in self.stages.items()
            },
        }


@dataclass(slots=True)
class _Posted:
    stage: str
    index: int
    iteration: int
    handle: JobHandle
    parents: tuple[JobId, ...]
    status: JobStatus = JobStatus.OPEN
    retry_at: float = 0.0  # monotonic time before which no keeper call is tried again

    @property
    def label(self) -> str:
        return f"{self.stage}[{self.index}]" + (f"#{self.iteration}" if self.iteration else "")


@dataclass(slots=True)
class _StageState:
    stage: Stage
    iterations: list[list[_Posted]] = field(default_factory=list)
    finished: bool = False  # no more iterations will be posted
    converged: bool | None = None
    values: list[float] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return bool(self.iterations)


_SUCCEEDED = (JobStatus.SUCCEEDED, JobStatus.FINALIZED)
_ENDED_BADLY = (JobStatus.FAILED, JobStatus.CANCELLED)


class _Runner:
    """One run of a workflow: a single thread that posts what is ready and polls the rest."""

    def __init__(
        self,
        wf: Workflow,
        client: Client,
        *,
        out: Path | None,
        timeout: float,
        poll: float,
        eager: bool,
        on_event: Callable[[WorkflowEvent], None] | None,
    ) -> None:
        self.wf = wf
        self.client = client
        self.out = out
        self.timeout = timeout
        self.poll = poll
        self.on_event = on_event
        self.states = {s.name: _StageState(stage=s) for s in wf.stages}
        self.jobs: list[_Posted] = []
        # Early posting relies on the contract holding a child until its parents are Finalized;
        # otherwise a child is posted once they are (and a repeat iteration once the last one is).
        self.eager = eager
        self._judged = frozenset(_SUCCEEDED) if eager else frozenset({JobStatus.FINALIZED})

    def emit(self, event: WorkflowEvent) -> None:
        logger.info("workflow %s: %s", self.wf.name, event.message)
        if self.on_event is not None:
            self.on_event(event)

    def run(self) -> WorkflowRun:
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            while True:
                self._refresh()
                self._judge_iterations()
                self._post_ready()
                if all(s.finished for s in self.states.values()) and all(
                    j.status == JobStatus.FINALIZED for j in self.jobs
                ):
                    break
                if time.monotonic() >= deadline:
                    waiting = next((j for j in self.jobs if j.status != JobStatus.FINALIZED), self.jobs[-1])
                    raise errors.WaitTimeout(
                        job_id=waiting.handle.job_id,
                        status=waiting.status,
                        until=f"Finalized (workflow {self.wf.name!r}, stage {waiting.stage!r})",
                        timeout=self.timeout,
                    )
                time.sleep(self.poll)
        except (errors.WaitTimeout, errors.ChainUnavailable):
            raise  # the jobs may still finish; or the node cannot be told anything
        except errors.ChainSchedulerError:
            # A job failed, or posting one was refused: what waits on chain would never be used.
            self._abandon()
            raise
        elapsed = time.monotonic() - started
        return self._collect(elapsed)

    # ----------------------------------------------------------------- posting

    def _post_ready(self) -> None:
        for state in self.states.values():
            if state.started:
                continue
            if all(self._ready(self.states[d]) for d in state.stage.depends_on()):
                self._post_iteration(state, 0)
                if state.stage.repeat is None:
                    state.finished = True

    def _ready(self, dep: _StageState) -> bool:
        """Whether a stage that reads or waits for ``dep`` may be posted now."""
        if not dep.started:
            return False
        if dep.stage.repeat is not None and not dep.finished:
            return False  # its consumers read its last iteration, known only once it has finished
        return self.eager or all(j.status == JobStatus.FINALIZED for j in dep.iterations[-1])

    def _post_iteration(self, state: _StageState, iteration: int) -> None:
        stage = state.stage
        options = self.wf.options(stage).submit_kwargs()
        posted: list[_Posted] = []
        for index, item in enumerate(stage.items or (None,)):
            inputs: dict[str, Path | JobHandle] = {}
            for name, src in stage.sources().items():
                rendered = render(name, item=item, index=index, iteration=iteration)
                if not isinstance(src, FromStage):
                    inputs[rendered] = self.wf._input_path(src, item, index, iteration)
                    continue
                if src.stage == SELF:
                    if iteration == 0:
                        continue
                    target, jobs = stage, state.iterations[iteration - 1]
                else:
                    target, jobs = self.states[src.stage].stage, self.states[src.stage].iterations[-1]
                if src.index is None and target.items is not None:
                    inputs.update({f"{rendered}-{i}": j.handle for i, j in enumerate(jobs)})
                else:
                    pick = index if src.index == "{index}" else int(src.index or 0)
                    inputs[rendered] = jobs[pick].handle
            after = [j.handle for dep in stage.after for j in self.states[dep].iterations[-1]]
            handle = self.client.submit(
                module=self.wf.resolve(stage.module) if stage.module is not None else None,
                image=self.wf.resolve(stage.image) if stage.image is not None else None,
                inputs=inputs,
                args=[render(a, item=item, index=index, iteration=iteration) for a in stage.args],
                env={k: render(v, item=item, index=index, iteration=iteration) for k, v in stage.env.items()},
                parents=after,
                description=_description(self.wf, stage, index, item, iteration),
                **options,
            )
            # The order Client.submit lists them in the terms: `after` first, then the inputs.
            read = [h for h in inputs.values() if isinstance(h, JobHandle)]
            parents = tuple(dict.fromkeys(h.job_id for h in [*after, *read]))
            job = _Posted(stage=stage.name, index=index, iteration=iteration, handle=handle, parents=parents)
            posted.append(job)
            self.jobs.append(job)
            waits = f", parents {', '.join(map(str, parents))}" if parents else ""
            self.emit(
                WorkflowEvent(
                    kind="posted",
                    stage=stage.name,
                    message=f"{job.label} posted as job {handle.job_id}{waits}",
                    job_id=handle.job_id,
                    index=index,
                    iteration=iteration,
                    status=JobStatus.OPEN,
                )
            )
        state.iterations.append(posted)

    # ----------------------------------------------------------------- following

    def _refresh(self) -> None:
        for job in self.jobs:
            if job.status == JobStatus.FINALIZED:
                continue
            state = job.handle.status()
            status = state.status
            if status == JobStatus.OPEN and state.deadline and time.time() > state.deadline:
                self._expire(job)
            if status == job.status:
                continue
            job.status = status
            failed = status in _ENDED_BADLY
            self.emit(
                WorkflowEvent(
                    kind="failed" if failed else "status",
                    stage=job.stage,
                    message=f"{job.label} job {job.handle.job_id}: {status.name.title()}",
                    job_id=job.handle.job_id,
                    index=job.index,
                    iteration=job.iteration,
                    status=status,
                )
            )
            if failed:
                job.handle.wait(timeout=0)  # raises JobFailed with the reason and refund

    def _expire(self, job: _Posted) -> None:
        """Call ``timeout`` on a job of ours that nobody took in time, so it fails (refunded) instead of
        waiting forever: providers keep only the jobs they hold, and anyone may do this."""
        now = time.monotonic()
        if now < job.retry_at:
            return
        job.retry_at = now + 2.0
        try:
            self.client.market.timeout(job.handle.job_id)
        except errors.ContractError as exc:  # the chain's clock is behind ours, or it just got filled
            logger.debug("workflow %s: timeout of job_id=%d refused: %s", self.wf.name, job.handle.job_id, exc)
        else:
            logger.info("workflow %s: job_id=%d unfilled past its deadline: timed out", self.wf.name, job.handle.job_id)

    def _judge_iterations(self) -> None:
        for state in self.states.values():
            repeat = state.stage.repeat
            if state.finished or repeat is None or not state.started:
                continue
            current = state.iterations[-1]
            if not all(j.status in self._judged for j in current):
                continue
            iteration = len(state.iterations) - 1
            converged = self._converged(state, repeat, current, iteration)
            last = converged or iteration + 1 >= repeat.max
            if last:
                state.finished = True
                state.converged = converged if repeat.until is not None else None
                why = "converged" if converged else f"reached repeat.max={repeat.max}"
                self.emit(
                    WorkflowEvent(
                        kind="done",
                        stage=state.stage.name,
                        message=f"{state.stage.name}: {why} after {iteration + 1} iteration(s)",
                        iteration=iteration,
                    )
                )
            else:
                self._post_iteration(state, iteration + 1)

    def _converged(self, state: _StageState, repeat: Repeat, jobs: Sequence[_Posted], iteration: int) -> bool:
        until = repeat.until
        if until is None:
            return False
        name = state.stage.name
        with tempfile.TemporaryDirectory(prefix="chainsched-workflow-") as tmp:
            outputs = [j.handle.fetch(Path(tmp) / str(j.index)) for j in jobs]
            if not isinstance(until, Until):
                met = bool(until(outputs))
                self.emit(
                    WorkflowEvent(
                        kind="iteration",
                        stage=name,
                        message=f"{name}: iteration {iteration} {'meets' if met else 'does not meet'} repeat.until",
                        iteration=iteration,
                    )
                )
                return met
            values = [_read_number(d / until.file, until.key, job) for d, job in zip(outputs, jobs, strict=True)]
        value = until.value(values)
        state.values.append(value)
        met = until.met(value)
        self.emit(
            WorkflowEvent(
                kind="iteration",
                stage=name,
                message=f"{name}: iteration {iteration} {until.key} = {value:.6g} "
                f"({'meets' if met else 'not yet'} {until.describe()})",
                iteration=iteration,
                value=value,
            )
        )
        return met

    def _abandon(self) -> None:
        """Cancel the run's jobs still Open: they wait on a failed parent, or would run for nothing."""
        for job in self.jobs:
            try:
                if job.handle.status().status != JobStatus.OPEN:
                    continue
                self.client.market.cancel(job.handle.job_id)
            except errors.ChainSchedulerError as exc:  # taken meanwhile, or the node went away
                logger.warning("workflow %s: could not cancel job_id=%d: %s", self.wf.name, job.handle.job_id, exc)
                continue
            self.emit(
                WorkflowEvent(
                    kind="failed",
                    stage=job.stage,
                    message=f"{job.label} job {job.handle.job_id}: cancelled (refunded)",
                    job_id=job.handle.job_id,
                    index=job.index,
                    iteration=job.iteration,
                    status=JobStatus.CANCELLED,
                )
            )

    # ----------------------------------------------------------------- results

    def _collect(self, elapsed: float) -> WorkflowRun:
        leaves = {s.name for s in self.wf.leaves()}
        stages: dict[str, StageRun] = {}
        for name, state in self.states.items():
            last = len(state.iterations) - 1
            finished: list[StageJob] = []
            for iteration, jobs in enumerate(state.iterations):
                for job in jobs:
                    outputs = None
                    if self.out is not None and name in leaves and iteration == last:
                        dest = self.out / name
                        if state.stage.items is not None:
                            dest = dest / str(job.index)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        outputs = job.handle.fetch(dest)
                        self.emit(
                            WorkflowEvent(
                                kind="fetched",
                                stage=name,
                                message=f"{job.label} job {job.handle.job_id}: result in {dest}",
                                job_id=job.handle.job_id,
                                index=job.index,
                                iteration=iteration,
                            )
                        )
                    receipt = job.handle.receipt()
                    finished.append(
                        StageJob(
                            stage=name,
                            index=job.index,
                            iteration=iteration,
                            handle=job.handle,
                            parents=job.parents,
                            result_cid=receipt.result_cid,
                            receipt=receipt,
                            outputs=outputs,
                        )
                    )
            stages[name] = StageRun(
                name=name,
                jobs=tuple(finished),
                iterations=len(state.iterations),
                converged=state.converged,
                values=tuple(state.values),
            )
        receipts = [j.receipt for s in stages.values() for j in s.jobs]
        run = WorkflowRun(
            name=self.wf.name,
            stages=stages,
            out=self.out,
            paid=Wei(sum(r.paid for r in receipts)),
            escrow=Wei(sum(r.escrow for r in receipts)),
            refund=Wei(sum(r.refund for r in receipts)),
            elapsed=elapsed,
        )
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "workflow.json").write_text(json.dumps(run.to_json(), indent=2) + "\n")
        return run


def _read_number(path: Path, key: str, job: _Posted) -> float:
    where = f"{job.label} (job {job.handle.job_id})"
    try:
        value: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        stderr = path.parent / "stderr"
        tail = stderr.read_text(errors="replace").strip()[-300:] if stderr.is_file() else ""
        raise errors.ChainSchedulerError(
            f"{where}: repeat.until reads {path.name} from the job's outputs, which has none that parses "
            f"({exc.__class__.__name__}); the job's stderr: {tail or '(empty)'}"
        ) from exc
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise errors.ChainSchedulerError(f"{where}: {path.name} has no key {key!r} (repeat.until.key).")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise errors.ChainSchedulerError(f"{where}: {path.name} {key} is {value!r}, not a finite number.")
    return float(value)
