"""The workflow example jobs (wordfreq, merge, ga) run in the real Wasm executor.

These modules are the steps of the MapReduce word count and the staged
genetic-algorithm root finder, so their file formats are a contract: the
tests pin exact bytes where the format is fixed, and the properties the
workflows rely on (map-then-merge equals one big map; a later GA stage is at
least as good as the one it was fed) where it is not.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from compute_node.executors._base import ExecutionRequest, ExecutionResult
from compute_node.executors._wasm import WasmExecutor

RequestFactory = Callable[..., ExecutionRequest]

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "mapreduce" / "corpus"
CUBIC = "1,0,-2,-5"  # x^3 - 2x - 5
CUBIC_ROOT = 2.0945514815423265
OTHER_SEED = bytes(range(1, 33))


def assert_ok(result: ExecutionResult) -> None:
    assert result.error is None, result.error
    assert result.exit_code == 0


def run(
    executor: WasmExecutor, make_request: RequestFactory, module: Path, **kwargs: object
) -> tuple[ExecutionResult, Path]:
    request = make_request(module, **kwargs)
    return executor.run(request), request.outputs_dir


def reference_counts(texts: list[bytes]) -> bytes:
    """counts.tsv as the contract defines it, computed in Python."""
    counts: Counter[bytes] = Counter()
    for text in texts:
        counts.update(w.lower() for w in re.findall(rb"[A-Za-z0-9']+", text) if w.strip(b"'"))
    return b"".join(b"%s\t%d\n" % (word, n) for word, n in sorted(counts.items()))


# -- wordfreq (map) ------------------------------------------------------------


def test_wordfreq_counts_words_exactly(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    inputs = {
        # Uppercase folds, apostrophes stay inside words, a lone '' is no word,
        # a UTF-8 letter separates, and the file end ends a word.
        "b.txt": "Don't STOP: don't\u00e9stop 42 '' it's".encode(),
        "a/one.txt": b"the THE tHe\tcat's\ncat",
        "a/empty": b"",
    }
    result, out = run(wasm_executor, make_request, wasm_examples["wordfreq"], inputs=inputs)

    assert_ok(result)
    assert (out / "counts.tsv").read_bytes() == b"42\t1\ncat\t1\ncat's\t1\ndon't\t2\nit's\t1\nstop\t2\nthe\t3\n"
    assert (out / "stdout").read_text() == "7 distinct words, 11 words in 3 files\n"
    assert (out / "counts.tsv").read_bytes() == reference_counts([inputs[k] for k in sorted(inputs)])


def test_wordfreq_words_across_read_boundaries_and_long_words(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    # wordfreq reads 64 KiB at a time: "straddle" spans the first boundary.
    text = b"ab " * 21844 + b"xstraddle " + b"W" * 5000 + b"\x80" + b"y'" * 300 + b"\n"
    assert text.index(b"straddle") < 65536 < text.index(b"straddle") + 8
    result, out = run(wasm_executor, make_request, wasm_examples["wordfreq"], inputs={"big.txt": text})

    assert_ok(result)
    assert (out / "counts.tsv").read_bytes() == reference_counts([text])
    assert (out / "stdout").read_text() == "4 distinct words, 21847 words in 1 files\n"


# -- merge (reduce) ------------------------------------------------------------


def test_merge_sums_parent_counts_and_ranks_ties_by_word(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    inputs = {
        "a/outputs/counts.tsv": b"apple\t3\nbanana\t2\ncherry\t5\n",
        "a/outputs/stdout": b"not\tcounts\n",  # only files named counts.tsv are read
        "b/outputs/counts.tsv": b"banana\t3\ndate\t5\nelder\t1",  # no final newline
        "b/counts.tsv.bak": b"garbage",
    }
    result, out = run(wasm_executor, make_request, wasm_examples["merge"], inputs=inputs, args=("3",))

    assert_ok(result)
    assert (out / "counts.tsv").read_bytes() == b"apple\t3\nbanana\t5\ncherry\t5\ndate\t5\nelder\t1\n"
    assert (out / "top.txt").read_bytes() == b"5\tbanana\n5\tcherry\n5\tdate\n"
    assert (out / "stdout").read_bytes() == (out / "top.txt").read_bytes()


def test_merge_rejects_a_malformed_line_naming_file_and_line(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    inputs = {
        "a/outputs/counts.tsv": b"apple\t3\n",
        "b/outputs/counts.tsv": b"banana\t2\ncherry 4\n",
    }
    result, out = run(wasm_executor, make_request, wasm_examples["merge"], inputs=inputs)

    assert result.error is None
    assert result.exit_code == 1
    assert "/inputs/b/outputs/counts.tsv:2:" in (out / "stderr").read_text()


@pytest.mark.parametrize("args", [("0",), ("ten",), ("-3",), ("5x",), ("3", "4")])
def test_merge_bad_arguments_exit_2(
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    make_request: RequestFactory,
    args: tuple[str, ...],
) -> None:
    result, out = run(wasm_executor, make_request, wasm_examples["merge"], args=args)

    assert result.exit_code == 2
    assert "usage: merge [TOP]" in (out / "stderr").read_text()


def test_map_per_part_then_merge_equals_one_map_over_the_corpus(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory, tmp_path: Path
) -> None:
    parts = sorted(CORPUS.glob("part-*.txt"))
    assert len(parts) == 4
    reduce_inputs = tmp_path / "reduce-inputs"
    for part in parts:
        result, out = run(wasm_executor, make_request, wasm_examples["wordfreq"], inputs={part.name: part.read_bytes()})
        assert_ok(result)
        # Mounted the way a workflow mounts a parent: /inputs/<name>/outputs/.
        shutil.copytree(out, reduce_inputs / f"map-{part.stem}" / "outputs")
    merged, merged_out = run(wasm_executor, make_request, wasm_examples["merge"], inputs_dir=reduce_inputs)
    whole, whole_out = run(wasm_executor, make_request, wasm_examples["wordfreq"], inputs_dir=CORPUS)

    assert_ok(merged)
    assert_ok(whole)
    expected = reference_counts([p.read_bytes() for p in parts])
    assert (whole_out / "counts.tsv").read_bytes() == expected
    assert (merged_out / "counts.tsv").read_bytes() == expected
    top = (merged_out / "top.txt").read_text().splitlines()
    assert len(top) == 10
    assert top[0] == "1284\tthe"


# -- ga (one stage of the root finder) -----------------------------------------


def ga_stage(
    executor: WasmExecutor, make_request: RequestFactory, module: Path, **kwargs: object
) -> tuple[dict[str, float], bytes, ExecutionResult]:
    result, out = run(executor, make_request, module, args=(CUBIC,), **kwargs)
    assert_ok(result)
    best = json.loads((out / "best.json").read_text())
    return best, (out / "population.txt").read_bytes(), result


def test_ga_is_deterministic_for_a_seed(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    ga = wasm_examples["ga"]
    best, population, result = ga_stage(wasm_executor, make_request, ga)
    again, population_again, result_again = ga_stage(wasm_executor, make_request, ga)
    _, population_other, _ = ga_stage(wasm_executor, make_request, ga, seed=OTHER_SEED)

    assert (population_again, again) == (population, best)
    assert result_again.fuel == result.fuel
    assert population_other != population
    lines = population.decode().splitlines()
    assert len(lines) == 64
    assert float(lines[0]) == best["x"]
    assert {k: best[k] for k in ("generations", "population", "inputs")} == {
        "generations": 40,
        "population": 64,
        "inputs": 0,
    }
    assert best["abs_fx"] == abs(best["fx"])
    assert abs(best["x"] - CUBIC_ROOT) < 1e-3


def test_ga_later_stage_pools_islands_and_does_no_worse(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory, tmp_path: Path
) -> None:
    ga = wasm_examples["ga"]
    stage2_inputs = tmp_path / "stage2-inputs"
    islands = []
    for name, seed in (("island-a", bytes(32)), ("island-b", OTHER_SEED)):
        best, population, _ = ga_stage(wasm_executor, make_request, ga, seed=seed)
        islands.append(best)
        target = stage2_inputs / name / "outputs"
        target.mkdir(parents=True)
        (target / "population.txt").write_bytes(population)
    stage2, population2, _ = ga_stage(wasm_executor, make_request, ga, inputs_dir=stage2_inputs)
    stage3_inputs = tmp_path / "stage3-inputs" / "stage2" / "outputs"
    stage3_inputs.mkdir(parents=True)
    (stage3_inputs / "population.txt").write_bytes(population2)
    stage3, _, _ = ga_stage(wasm_executor, make_request, ga, inputs_dir=stage3_inputs.parents[1])

    assert stage2["inputs"] == 128
    assert stage2["abs_fx"] <= min(island["abs_fx"] for island in islands)
    assert stage3["abs_fx"] <= stage2["abs_fx"]
    assert abs(stage3["x"] - CUBIC_ROOT) < 1e-9


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("1,x",),
        ("1",),
        ("1,2", "3,4"),
        (CUBIC, "--pop", "1"),
        (CUBIC, "--gens", "-1"),
        (CUBIC, "--lo", "5", "--hi", "1"),
        (CUBIC, "--lo", "nan"),
        (CUBIC, "--lo", "-1e308", "--hi", "1e308"),
        (CUBIC, "--bogus", "3"),
        (CUBIC, "--gens"),
    ],
)
def test_ga_bad_arguments_exit_2(
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    make_request: RequestFactory,
    args: tuple[str, ...],
) -> None:
    result, out = run(wasm_executor, make_request, wasm_examples["ga"], args=args)

    assert result.exit_code == 2
    assert "usage: ga COEFFS" in (out / "stderr").read_text()


def test_ga_rejects_a_bad_population_line(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    inputs = {"s1/outputs/population.txt": b"2.5\n-1e3\ninf\n"}
    result, out = run(wasm_executor, make_request, wasm_examples["ga"], args=(CUBIC,), inputs=inputs)

    assert result.exit_code == 1
    assert "/inputs/s1/outputs/population.txt:3:" in (out / "stderr").read_text()
