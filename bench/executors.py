"""Executor benchmarks: per-job overhead and speed against native code.

Each case is a named entry in ``CASES``; run them all (or some with
``--only``), print a table and write ``bench/results/executors.json``.

Definitions:
    overhead: the time ``Executor.run`` takes minus the program's own run
        time. For the trivial job (``noop``) the program's own time is the
        bare ``_start`` call on raw wasmtime, a few microseconds.
    warm: the module is already compiled in the executor's memory cache.
    cold: first run of a CID on a running executor: read, hash, compile.
    disk: the memory cache is empty but the compiled module is on disk.

Adding a case (e.g. Docker): write ``def my_case(ctx: Context) -> Measurement``
that times what it measures (``Measurement.of(samples_s, program_ms=...)``)
and append ``Case("name", "description", my_case)`` to ``CASES``.

Usage::

    python bench/executors.py              # all cases
    python bench/executors.py --quick      # fewer repetitions
    python bench/executors.py --only wasm-noop

Aims (issue 4): warm Wasm overhead under 5 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import wasmtime  # noqa: E402

from compute_node.executors._base import ExecutionRequest, Executor  # noqa: E402
from compute_node.executors._wasm import WasmExecutor  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "executors.json"
BUILD = ROOT / "examples" / "wasm" / "build"
SEED = bytes(range(32))
# sha256("chain-scheduler-bench-1:" || nonce) first has 21 zero bits at
# nonce 1_292_105: about half a second of native code on a 2020s core.
MINER_ARGS = ("chain-scheduler-bench-1:", "21")
MINER_NONCE = 1_292_105


@dataclass(frozen=True, slots=True)
class Measurement:
    """One case's figures. Times in milliseconds.

    ``median_ms`` is the median wall time of one ``Executor.run``;
    ``program_ms`` the program's own run time, when the case knows it;
    ``overhead_ms`` their difference. ``extra`` holds case-specific figures.
    """

    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    program_ms: float | None = None
    extra: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def overhead_ms(self) -> float | None:
        return None if self.program_ms is None else self.median_ms - self.program_ms

    @classmethod
    def of(
        cls,
        samples_s: Sequence[float],
        *,
        program_ms: float | None = None,
        **extra: float | str,
    ) -> Measurement:
        ms = sorted(s * 1000 for s in samples_s)
        p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
        return cls(
            runs=len(ms),
            median_ms=statistics.median(ms),
            p90_ms=p90,
            min_ms=ms[0],
            program_ms=program_ms,
            extra=dict(extra),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """Shared by the cases: scratch space and how hard to try."""

    work: Path
    repeat: int  # repetitions for fast cases; slow cases use fewer

    def fresh_dir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return path


@dataclass(frozen=True, slots=True)
class Case:
    """A named benchmark; ``run`` returns its measurement."""

    name: str
    description: str
    run: Callable[[Context], Measurement]


# -- helpers ------------------------------------------------------------------


def _inputs(ctx: Context) -> Path:
    inputs = ctx.work / "inputs"
    if not inputs.exists():
        inputs.mkdir()
        (inputs / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 100)
    return inputs


def _request(ctx: Context, module: str, *, args: tuple[str, ...] = (), cid: str | None = None) -> ExecutionRequest:
    inputs = _inputs(ctx)
    return ExecutionRequest(
        job_id=0,
        artifact=BUILD / f"{module}.wasm",
        artifact_cid=cid or f"bench-{module}",
        args=args,
        inputs_dir=inputs,
        outputs_dir=ctx.fresh_dir("out"),
        seed=SEED,
        max_units=10**13,
        memory_limit=256 * 1024 * 1024,
        timeout=120.0,
    )


def _timed_run(executor: Executor, request: ExecutionRequest) -> float:
    started = time.perf_counter()
    result = executor.run(request)
    elapsed = time.perf_counter() - started
    if result.error is not None or result.exit_code != 0:
        raise RuntimeError(f"{request.artifact.name} failed: {result.error or result.exit_code}")
    return elapsed


def _bare_start_seconds(ctx: Context, module_path: Path, repeat: int) -> float:
    """Median time of the module's ``_start`` call alone on raw wasmtime."""
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module.from_file(engine, str(module_path)))
    samples = []
    for _ in range(repeat):
        store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(str(_inputs(ctx)), "/inputs", False)
        wasi.preopen_dir(str(ctx.fresh_dir("bare")), "/outputs", True)
        store.set_wasi(wasi)
        start = pre.instantiate(store).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        began = time.perf_counter()
        start(store)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


@contextmanager
def _executor(**kwargs: object) -> Iterator[WasmExecutor]:
    executor = WasmExecutor(**kwargs)  # type: ignore[arg-type]
    try:
        yield executor
    finally:
        executor.close()


# -- Wasm cases -----------------------------------------------------------------


def wasm_noop_warm(ctx: Context) -> Measurement:
    program_ms = _bare_start_seconds(ctx, BUILD / "noop.wasm", ctx.repeat) * 1000
    with _executor() as executor:
        _timed_run(executor, _request(ctx, "noop"))  # compile once
        samples = [_timed_run(executor, _request(ctx, "noop")) for _ in range(ctx.repeat)]
    return Measurement.of(samples, program_ms=program_ms)


def _cold(ctx: Context, module: str, runs: int) -> Measurement:
    program_ms = _bare_start_seconds(ctx, BUILD / f"{module}.wasm", ctx.repeat) * 1000
    size = (BUILD / f"{module}.wasm").stat().st_size
    with _executor() as executor:
        # A new CID each time: the executor has never seen the module.
        samples = [_timed_run(executor, _request(ctx, module, cid=f"cold-{module}-{i}")) for i in range(runs)]
    return Measurement.of(samples, program_ms=program_ms, module_bytes=size)


def wasm_noop_cold(ctx: Context) -> Measurement:
    return _cold(ctx, "noop", max(5, ctx.repeat // 10))


def wasm_wordcount_cold(ctx: Context) -> Measurement:
    return _cold(ctx, "wordcount", max(3, ctx.repeat // 20))


def wasm_wordcount_disk(ctx: Context) -> Measurement:
    program_ms = _bare_start_seconds(ctx, BUILD / "wordcount.wasm", ctx.repeat) * 1000
    cache = ctx.fresh_dir("cache")
    with _executor(cache_dir=cache) as executor:
        _timed_run(executor, _request(ctx, "wordcount"))  # compile and serialize
    samples = []
    for _ in range(max(3, ctx.repeat // 20)):
        with _executor(cache_dir=cache) as executor:  # empty memory cache
            samples.append(_timed_run(executor, _request(ctx, "wordcount")))
    return Measurement.of(samples, program_ms=program_ms)


def _native_seconds(program: str, args: Sequence[str], outputs: Path) -> float:
    env = {**os.environ, "JOB_INPUTS": str(outputs.parent / "inputs"), "JOB_OUTPUTS": str(outputs)}
    started = time.perf_counter()
    subprocess.run([str(BUILD / "native" / program), *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def miner_wasm_vs_native(ctx: Context) -> Measurement:
    runs = 3
    _inputs(ctx)
    spawn = statistics.median(_native_seconds("noop", (), ctx.fresh_dir("n")) for _ in range(10))
    native_out = ctx.fresh_dir("native")
    native = [_native_seconds("miner", MINER_ARGS, native_out) for _ in range(runs)]
    found = json.loads((native_out / "nonce.json").read_text())
    if found["nonce"] != MINER_NONCE:
        raise RuntimeError(f"native miner found nonce {found['nonce']}, expected {MINER_NONCE}")
    with _executor() as executor:
        _timed_run(executor, _request(ctx, "noop"))
        warm_overhead = statistics.median(_timed_run(executor, _request(ctx, "noop")) for _ in range(20))
        wasm, fuel = [], 0
        for _ in range(runs):
            request = _request(ctx, "miner", args=MINER_ARGS)
            started = time.perf_counter()
            result = executor.run(request)
            wasm.append(time.perf_counter() - started)
            fuel = result.fuel or 0
            wasm_found = json.loads((request.outputs_dir / "nonce.json").read_text())
            if wasm_found != found:
                raise RuntimeError(f"wasm and native miners disagree: {wasm_found} != {found}")
    native_ms = (statistics.median(native) - spawn) * 1000
    wasm_ms = (statistics.median(wasm) - warm_overhead) * 1000
    return Measurement.of(
        wasm,
        wasm_ms=round(wasm_ms, 2),
        native_ms=round(native_ms, 2),
        slowdown=round(wasm_ms / native_ms, 2),
        fuel=fuel,
        fuel_per_ns=round(fuel / (wasm_ms * 1e6), 2),
        tries=MINER_NONCE + 1,
    )


# Case name -> the most overhead, in ms, the issue aims for.
OVERHEAD_AIMS_MS: dict[str, float] = {"wasm-noop-warm": 5.0}

CASES: list[Case] = [
    Case("wasm-noop-warm", "trivial Wasm job, module compiled in memory", wasm_noop_warm),
    Case("wasm-noop-cold", "trivial Wasm job, first run of its CID (compile)", wasm_noop_cold),
    Case("wasm-wordcount-cold", "40 KB C module, first run of its CID", wasm_wordcount_cold),
    Case(
        "wasm-wordcount-disk",
        "40 KB C module, compiled module loaded from disk",
        wasm_wordcount_disk,
    ),
    Case(
        "miner-wasm-vs-native",
        "nonce search, 21 bits, 1.29M sha256: Wasm vs native",
        miner_wasm_vs_native,
    ),
]


# -- driver -------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_table(rows: list[tuple[Case, Measurement]]) -> None:
    header = ("case", "runs", "median ms", "p90 ms", "program ms", "overhead ms", "notes")
    lines = [header]
    for case, m in rows:
        notes = " ".join(f"{k}={v}" for k, v in m.extra.items())
        lines.append(
            (
                case.name,
                str(m.runs),
                _fmt(m.median_ms),
                _fmt(m.p90_ms),
                _fmt(m.program_ms),
                _fmt(m.overhead_ms),
                notes,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=False))
        ]
        print("  ".join([*cells, line[-1]]))


def _check_aims(rows: list[tuple[Case, Measurement]]) -> dict[str, dict[str, object]]:
    aims: dict[str, dict[str, object]] = {}
    for case, m in rows:
        aim = OVERHEAD_AIMS_MS.get(case.name)
        if aim is None or m.overhead_ms is None:
            continue
        met = m.overhead_ms < aim
        aims[case.name] = {"overhead_aim_ms": aim, "overhead_ms": m.overhead_ms, "met": met}
        verdict = "met" if met else "MISSED"
        print(f"{case.name}: overhead {m.overhead_ms:.2f} ms, aim < {aim:g} ms: {verdict}")
    return aims


def _build_examples() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_examples.py"), "--quiet"], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Executor overhead and speed benchmarks.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", action="append", default=[], help="run cases whose name contains this")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker cases (bench/executors_docker.py)")
    args = parser.parse_args(argv)
    _build_examples()
    cases = [c for c in CASES if not args.only or any(o in c.name for o in args.only)]
    rows: list[tuple[Case, Measurement]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    try:
        ctx = Context(work=work, repeat=30 if args.quick else 200)
        for case in cases:
            print(f"running {case.name} ...", file=sys.stderr, flush=True)
            rows.append((case, case.run(ctx)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_table(rows)
    aims = _check_aims(rows)
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "wasmtime": version("wasmtime"),
        },
        "aims": aims,
        "cases": [
            {
                "name": case.name,
                "description": case.description,
                **asdict(m),
                "overhead_ms": m.overhead_ms,
            }
            for case, m in rows
        ],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    if args.no_docker or args.only:
        return 0
    # The Docker cases live in their own script (they start an engine); run them in this same run.
    print("\nDocker executor:", flush=True)
    docker_args = ["--quick"] if args.quick else []
    return subprocess.run([sys.executable, str(ROOT / "bench" / "executors_docker.py"), *docker_args]).returncode


if __name__ == "__main__":
    sys.exit(main())
