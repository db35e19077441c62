"""Docker executor benchmark: per-job overhead of a trivial job with a warm image cache.

Definitions (times in milliseconds):
    total: the time ``DockerExecutor.run`` takes, measured around the call.
    program: the program's own run time as the engine saw it (StartedAt to
        FinishedAt, reported as ``ExecutionResult.wall_ms``).
    overhead: total minus program, per run; the table shows the median.
    warm: the image for the CID is already loaded and cached.
    cold: the engine does not have the image: verify, repack, ``docker load``.
    engine floor: the bare docker SDK cycle (create, start, wait, remove) of
        the same program with no limits, logs or metering: what any Docker
        executor pays on this engine.

Cases are printed as a table and written to ``bench/results/executors_docker.json``
in the same shape as ``bench/executors.py`` (the Wasm cases), to be merged there.

Usage::

    python bench/executors_docker.py            # 20 warm runs
    python bench/executors_docker.py --quick    # 5

Starts ``dockerd`` (scripts/dockerd.py) when no engine answers and stops it
afterwards. Aim (issue 4): Docker overhead under 500 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import docker  # noqa: E402 - after the path set-up above

from compute_node.executors._base import ExecutionRequest  # noqa: E402
from compute_node.executors._docker import DockerExecutor  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "executors_docker.json"
REPOSITORY = "chainsched-bench-artifact"
AIM_OVERHEAD_MS = 500
SEED = bytes(range(32))


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark's figures (the shape of ``bench/executors.py``'s entries)."""

    name: str
    description: str
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    program_ms: float | None
    overhead_ms: float | None
    extra: dict[str, float | int | str] = field(default_factory=dict)


def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


class Bench:
    """Shared scratch space, image tarball and repetitions."""

    def __init__(self, *, work: Path, tarball: Path, repeat: int) -> None:
        self.work = work
        self.tarball = tarball
        self.repeat = repeat
        self.inputs = work / "inputs"
        self.inputs.mkdir()
        (self.inputs / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 100)

    def request(self, *args: str, cid: str) -> ExecutionRequest:
        return ExecutionRequest(
            job_id=0,
            artifact=self.tarball,
            artifact_cid=cid,
            args=args,
            inputs_dir=self.inputs,
            outputs_dir=Path(tempfile.mkdtemp(prefix="out-", dir=self.work)),
            seed=SEED,
            max_units=60_000,
            memory_limit=256 * 1024 * 1024,
            timeout=60.0,
        )


def _timed(executor: DockerExecutor, request: ExecutionRequest) -> tuple[float, int, int]:
    """Run once; return (total ms, program ms, CPU ms)."""
    began = time.perf_counter()
    result = executor.run(request)
    total_ms = (time.perf_counter() - began) * 1000
    if result.error is not None or result.exit_code != 0:
        raise RuntimeError(f"benchmark job failed: {result.error or result.exit_code}")
    return total_ms, result.wall_ms, result.cpu_ms or 0


def _floor_cycle(client: docker.DockerClient, image_id: str) -> float:
    """One bare SDK create+start+wait+remove of ``true``; returns milliseconds."""
    began = time.perf_counter()
    container = client.containers.create(image_id, ["true"], network_mode="none")
    container.start()
    container.wait()
    container.remove(force=True)
    return (time.perf_counter() - began) * 1000


def warm_case(
    bench: Bench,
    executor: DockerExecutor,
    name: str,
    description: str,
    args: Sequence[str],
    floor: Callable[[], float] | None = None,
) -> tuple[Case, list[float]]:
    """Warm runs of one job; with ``floor``, one engine-floor cycle after each run.

    Alternating the two keeps them under the same machine load (this machine is
    shared), so their paired difference is the executor's own cost.
    """
    cid = f"bench-{uuid.uuid4().hex}"
    _timed(executor, bench.request(*args, cid=cid))  # load the image once
    totals, programs, cpus, floors = [], [], [], []
    for _ in range(bench.repeat):
        total, program, cpu = _timed(executor, bench.request(*args, cid=cid))
        totals.append(total)
        programs.append(program)
        cpus.append(cpu)
        if floor is not None:
            floors.append(floor())
    overheads = [t - p for t, p in zip(totals, programs, strict=True)]
    extra: dict[str, float | int | str] = {
        "overhead_p90_ms": _p90(overheads),
        "cpu_ms_median": statistics.median(cpus),
    }
    if floors:
        extra["over_engine_floor_ms"] = statistics.median(t - f for t, f in zip(totals, floors, strict=True))
    case = Case(
        name=name,
        description=description,
        runs=len(totals),
        median_ms=statistics.median(totals),
        p90_ms=_p90(totals),
        min_ms=min(totals),
        program_ms=statistics.median(programs),
        overhead_ms=statistics.median(overheads),
        extra=extra,
    )
    return case, floors


def cold_case(bench: Bench, client: docker.DockerClient, runs: int) -> Case:
    totals, programs = [], []
    for _ in range(runs):
        _remove_images(client)
        executor = DockerExecutor(image_repository=REPOSITORY)
        total, program, _ = _timed(executor, bench.request("true", cid=f"cold-{uuid.uuid4().hex}"))
        executor.close()
        totals.append(total)
        programs.append(program)
    overheads = [t - p for t, p in zip(totals, programs, strict=True)]
    return Case(
        name="docker-true-cold",
        description="trivial Docker job, image not in the engine: verify, repack, load",
        runs=runs,
        median_ms=statistics.median(totals),
        p90_ms=_p90(totals),
        min_ms=min(totals),
        program_ms=statistics.median(programs),
        overhead_ms=statistics.median(overheads),
        extra={"tarball_bytes": bench.tarball.stat().st_size},
    )


def engine_floor_case(floors: Sequence[float]) -> Case:
    return Case(
        name="docker-engine-floor",
        description="bare SDK create+start+wait+remove of `true`, no executor (interleaved with docker-true-warm)",
        runs=len(floors),
        median_ms=statistics.median(floors),
        p90_ms=_p90(floors),
        min_ms=min(floors),
        program_ms=None,
        overhead_ms=None,
    )


def _remove_images(client: docker.DockerClient) -> None:
    for image in client.images.list(name=REPOSITORY):
        for tag in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(tag)


@contextlib.contextmanager
def _engine() -> Iterator[docker.DockerClient]:
    dockerd = _load_script("dockerd")
    handle = dockerd.start()
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()
        if handle is not None:
            dockerd.stop(handle)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:9.1f}"


def _print_table(cases: Sequence[Case]) -> None:
    header = f"{'case':<24} {'runs':>4} {'median':>9} {'p90':>9} {'program':>9} {'overhead':>9}"
    print(header)
    print("-" * len(header))
    for case in cases:
        print(
            f"{case.name:<24} {case.runs:>4} {_fmt(case.median_ms)} {_fmt(case.p90_ms)} "
            f"{_fmt(case.program_ms)} {_fmt(case.overhead_ms)}"
        )
    print("(milliseconds; overhead = executor time - program time as the engine saw it)")
    print(
        f"the executor adds {cases[0].extra['over_engine_floor_ms']:.0f} ms (median of paired runs) "
        "to the engine's own create/start/wait/remove cycle"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Docker executor overhead benchmark.")
    parser.add_argument("--quick", action="store_true", help="5 warm runs instead of 20")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 20
    builder = _load_script("build_busybox_image")
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp, _engine() as client:
        work = Path(tmp)
        image_id = builder.build(output=work / "busybox.tar")
        bench = Bench(work=work, tarball=work / "busybox.tar", repeat=repeat)
        info: dict[str, Any] = client.info()
        executor = DockerExecutor(image_repository=REPOSITORY)
        try:
            trivial, floors = warm_case(
                bench,
                executor,
                "docker-true-warm",
                "trivial Docker job (`true`), image cached",
                ["true"],
                floor=lambda: _floor_cycle(client, image_id),
            )
            wordcount, _ = warm_case(
                bench, executor, "docker-wordcount-warm", "example word-count job on 4.4 KB of input", []
            )
            cases = [trivial, wordcount, cold_case(bench, client, runs=3), engine_floor_case(floors)]
        finally:
            executor.close()
            _remove_images(client)
    warm = cases[0]
    _print_table(cases)
    assert warm.overhead_ms is not None
    verdict = "meets" if warm.overhead_ms < AIM_OVERHEAD_MS else "MISSES"
    print(f"warm Docker overhead {warm.overhead_ms:.0f} ms {verdict} the aim of {AIM_OVERHEAD_MS} ms")
    document = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": info.get("NCPU"),
            "docker_sdk": version("docker"),
            "engine": info.get("ServerVersion"),
            "storage_driver": info.get("Driver"),
            "cgroup": f"v{info.get('CgroupVersion', '1')} {info.get('CgroupDriver')}",
        },
        "aims": {"docker_warm_overhead_ms": AIM_OVERHEAD_MS},
        "aims_met": {"docker_warm_overhead_ms": warm.overhead_ms < AIM_OVERHEAD_MS},
        "cases": [
            {
                "name": c.name,
                "description": c.description,
                "runs": c.runs,
                "median_ms": c.median_ms,
                "p90_ms": c.p90_ms,
                "min_ms": c.min_ms,
                "program_ms": c.program_ms,
                "extra": c.extra,
                "overhead_ms": c.overhead_ms,
            }
            for c in cases
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
