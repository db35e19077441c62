"""The Wasm executor runs real WASI modules: the C examples and small WAT probes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import wasmtime

from compute_node.executors import _wasm as wasm_module
from compute_node.executors._base import ExecutionRequest, ExecutionResult, Executor, StopReason
from compute_node.executors._wasm import WasmExecutor

RequestFactory = Callable[..., ExecutionRequest]
TEST_SEED = bytes(range(32))
MiB = 1024 * 1024

WASI = "wasi_snapshot_preview1"
INPUTS_FD = 3  # preopened first
OUTPUTS_FD = 4

SAMPLE_INPUTS = {
    "a.txt": b"hello world\nfoo  bar\tbaz\n",
    "b.txt": b"no newline at the end",
    "sub/c.md": "caf\u00e9 \u00fcber   na\u00efve\n\n\n".encode(),
    "sub/deeper/empty": b"",
    "z.bin": bytes(range(256)) * 10,
}


def wat_module(tmp_path: Path, name: str, wat: str) -> Path:
    """Compile WAT text to a binary module file (the executor accepts binary only)."""
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def outputs(result_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(result_dir.iterdir())}


def assert_ok(result: ExecutionResult) -> None:
    assert result.error is None, result.error
    assert result.exit_code == 0


# -- the example jobs ----------------------------------------------------------


def test_wordcount_counts_every_input_file(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    request = make_request(wasm_examples["wordcount"], inputs=SAMPLE_INPUTS)

    result = wasm_executor.run(request)

    assert_ok(result)
    expected = []
    for name in sorted(SAMPLE_INPUTS):
        data = SAMPLE_INPUTS[name]
        lines = data.count(b"\n")
        expected.append(f"{lines} {len(data.split())} {len(data)} {name}")
    total = [sum(int(line.split()[i]) for line in expected) for i in range(3)]
    expected.append(f"{total[0]} {total[1]} {total[2]} total")
    assert (request.outputs_dir / "wc.txt").read_text().splitlines() == expected
    assert (request.outputs_dir / "stdout").read_text() == expected[-1] + "\n"
    assert (request.outputs_dir / "stderr").read_bytes() == b""
    assert result.bytes_in == sum(len(d) for d in SAMPLE_INPUTS.values())
    assert result.bytes_out == sum(len(d) for d in outputs(request.outputs_dir).values())
    assert result.usage == result.fuel and result.fuel > 0
    assert result.artifact_digest == ("sha256:" + hashlib.sha256(wasm_examples["wordcount"].read_bytes()).hexdigest())


def test_sha256sum_matches_hashlib(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    inputs = {**SAMPLE_INPUTS, "big.bin": hashlib.shake_256(b"big").digest(300_000)}
    request = make_request(wasm_examples["sha256sum"], inputs=inputs)

    result = wasm_executor.run(request)

    assert_ok(result)
    listing = "".join(f"{hashlib.sha256(inputs[n]).hexdigest()}  {n}\n" for n in sorted(inputs))
    assert (request.outputs_dir / "sha256sums.txt").read_text() == listing
    combined = hashlib.sha256(listing.encode()).hexdigest()
    assert (request.outputs_dir / "stdout").read_text() == combined + "\n"


def test_pi_same_seed_same_result_and_fuel_other_seed_differs(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    def run(seed: bytes) -> tuple[dict[str, bytes], int]:
        request = make_request(wasm_examples["pi"], args=("20000",), seed=seed)
        result = wasm_executor.run(request)
        assert_ok(result)
        return outputs(request.outputs_dir), result.fuel or 0

    first, fuel_first = run(TEST_SEED)
    again, fuel_again = run(TEST_SEED)
    other, _ = run(bytes(32))

    assert first == again and fuel_first == fuel_again
    assert first["pi.json"] != other["pi.json"]
    estimate = json.loads(first["pi.json"])
    assert estimate["samples"] == 20000
    assert 3.0 < estimate["pi"] < 3.3


def test_miner_finds_the_first_nonce_with_enough_zero_bits(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    prefix, bits = "block-42:", 10
    request = make_request(wasm_examples["miner"], args=(prefix, str(bits)))

    result = wasm_executor.run(request)

    assert_ok(result)
    found = json.loads((request.outputs_dir / "nonce.json").read_text())

    def zero_bits(nonce: int) -> int:
        value = int.from_bytes(hashlib.sha256(f"{prefix}{nonce}".encode()).digest(), "big")
        return 256 - value.bit_length()

    expected = next(n for n in range(1_000_000) if zero_bits(n) >= bits)
    assert found["nonce"] == expected
    assert found["hash"] == hashlib.sha256(f"{prefix}{expected}".encode()).hexdigest()


def test_nonzero_exit_is_reported_with_stderr_not_as_an_error(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    request = make_request(wasm_examples["miner"], args=())

    result = wasm_executor.run(request)

    assert result.error is None
    assert result.exit_code == 2
    assert b"usage: miner" in (request.outputs_dir / "stderr").read_bytes()


# -- limits ----------------------------------------------------------------------


def test_running_out_of_fuel_is_reported_and_charged_in_full(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    request = make_request(wasm_examples["pi"], args=("1000000",), max_units=200_000)

    result = wasm_executor.run(request)

    assert result.error is not None and result.error.startswith("out of fuel")
    assert result.usage == result.fuel == 200_000
    assert result.exit_code == -1
    assert result.stopped_by is StopReason.FUEL


GROW_WAT = f"""
(module
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; exit 1 when the memory cannot grow by 32 pages (2 MiB), else 0
    (call $exit (i32.eq (memory.grow (i32.const 32)) (i32.const -1)))))
"""


GROW_THEN_TRAP_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "_start")
    ;; grow a page at a time until refused, then trap like a failed malloc's abort()
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
"""


def test_memory_limit_is_enforced(wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path) -> None:
    module = wat_module(tmp_path, "grow", GROW_WAT)

    small = wasm_executor.run(make_request(module, memory_limit=1024 * 1024))
    large = wasm_executor.run(make_request(module, memory_limit=4 * 1024 * 1024))
    too_small = wasm_executor.run(make_request(module, memory_limit=1000))

    # A program that handles the refused growth and exits was not stopped by the sandbox.
    assert (small.error, small.exit_code, small.peak_memory, small.stopped_by) == (None, 1, 65536, None)
    assert (large.error, large.exit_code, large.peak_memory, large.stopped_by) == (None, 0, 33 * 65536, None)
    assert too_small.error is not None and too_small.error.startswith("memory limit")
    assert too_small.stopped_by is StopReason.MEMORY


def test_trap_at_the_memory_limit_is_a_memory_stop(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    module = wat_module(tmp_path, "grow-then-trap", GROW_THEN_TRAP_WAT)

    result = wasm_executor.run(make_request(module, memory_limit=1024 * 1024))

    assert result.stopped_by is StopReason.MEMORY
    assert result.error is not None and "memory limit of 1048576 bytes reached" in result.error
    assert result.peak_memory == 1024 * 1024


LOOP_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $forever
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $forever))))
"""


def test_timeout_stops_an_infinite_loop(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    module = wat_module(tmp_path, "loop", LOOP_WAT)
    request = make_request(module, timeout=0.3, max_units=2**62)

    result = wasm_executor.run(request)

    assert result.error is not None and result.error.startswith("timeout")
    assert result.stopped_by is StopReason.TIMEOUT
    assert result.wall_ms < 10_000  # stopped, not left to burn 2**62 fuel


STAT_THEN_SPIN_WAT = f"""
(module
  (import "{WASI}" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $fstat (i32.const 1) (i32.const 64)))  ;; through the WASI shim
    (loop $spin (br $spin))))
"""


def test_fuel_after_a_timeout_is_the_fuel_of_the_last_call(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    # wasmtime writes the guest's fuel counter back to the store only at calls,
    # returns and the out-of-fuel check, not when the clock interrupts it: a
    # loop that calls nothing is not counted, however long it spins. The shim
    # behind fd_filestat_get leaves the written-back figure exactly as it was.
    module = wat_module(tmp_path, "stat-then-spin", STAT_THEN_SPIN_WAT)

    short = wasm_executor.run(make_request(module, timeout=0.05, max_units=2**62))
    long = wasm_executor.run(make_request(module, timeout=0.3, max_units=2**62))

    assert short.stopped_by is long.stopped_by is StopReason.TIMEOUT
    assert short.fuel == long.fuel
    assert short.fuel is not None and 0 < short.fuel < 10


def stat_calls_wat(padding: int) -> str:
    """``padding`` fuel, then 3,500 calls through the WASI shim 3 fuel apart (two constants and the call)."""
    return f"""
(module
  (import "{WASI}" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    {"(drop (i32.const 0))" * padding}
    {"(drop (call $fstat (i32.const 1) (i32.const 64)))" * 3500}))
"""


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_shim_calls_work_with_the_largest_fuel_budget(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path, padding: int
) -> None:
    # The shim is lent 10,000 fuel on top of what the guest has left. With a
    # budget of 2**64 - 1 that sum wrapped around the store's u64 counter to
    # 9,999 less what the guest had burnt: the call made with 9,999 burnt (one
    # of the three paddings makes one) gave the shim no fuel at all.
    module = wat_module(tmp_path, f"stat-calls-{padding}", stat_calls_wat(padding))

    result = wasm_executor.run(make_request(module, max_units=2**64 - 1))
    usual = wasm_executor.run(make_request(module, max_units=10**9))

    assert (result.error, result.exit_code, result.stopped_by) == (None, 0, None)
    assert result.fuel == usual.fuel


def writer_wat(target: str, chunk: int) -> str:
    """A module writing ``chunk`` zero bytes at a time, forever, to stdout or /outputs/flood."""
    if target == "stdout":
        open_fd = "(i32.store (i32.const 16) (i32.const 1))"
    else:
        open_fd = f"""(if (call $open (i32.const {OUTPUTS_FD}) (i32.const 0) (i32.const 32) (i32.const 5)
          (i32.const {O_CREAT}) (i64.const {RIGHT_FD_WRITE}) (i64.const 0) (i32.const 0) (i32.const 16))
      (then unreachable))"""
    return f"""
(module
  (import "{WASI}" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {chunk // 65536 + 2})
  (data (i32.const 32) "flood")
  (func (export "_start")
    {open_fd}
    (i32.store (i32.const 0) (i32.const 65536))  ;; iovec: the zeros from 64 KiB on
    (i32.store (i32.const 4) (i32.const {chunk}))
    (loop $forever
      (drop (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
"""


@pytest.mark.parametrize("target", ["stdout", "file"])
def test_output_limit_stops_a_program_that_writes_without_end(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path, target: str
) -> None:
    module = wat_module(tmp_path, f"flood-{target}", writer_wat(target, chunk=64 * 1024))
    request = make_request(module, max_output_bytes=MiB, max_units=2**62)

    result = wasm_executor.run(request)

    assert result.stopped_by is StopReason.OUTPUT
    assert result.error == "output limit: the program wrote more than max_output_bytes=1048576 under /outputs"
    assert result.exit_code == -1
    on_disk = sum(len(data) for data in outputs(request.outputs_dir).values())
    assert result.bytes_out == on_disk
    # Checked once per 10 ms tick: past the limit by what it wrote since the last check.
    assert MiB < on_disk < MiB + 64 * MiB


@pytest.mark.parametrize(("limit", "stopped_by"), [(1000, StopReason.OUTPUT), (5000, None)])
def test_run_that_ends_with_outputs_over_the_limit_is_an_output_stop(
    wasm_executor: WasmExecutor,
    make_request: RequestFactory,
    tmp_path: Path,
    limit: int,
    stopped_by: StopReason | None,
) -> None:
    # writes 2000 bytes in one call and returns: over a limit of 1000, under 5000
    wat = f"""
(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2000))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
    request = make_request(wat_module(tmp_path, "write-2000", wat), max_output_bytes=limit)

    result = wasm_executor.run(request)

    assert result.exit_code == 0
    assert result.bytes_out == 2000
    assert result.stopped_by is stopped_by
    assert (result.error is not None) == (stopped_by is not None)


PRINT_FOREVER_WAT = f"""
(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i64) (local $v i64) (local $p i32)
    (i32.store8 (i32.const 100) (i32.const 10))
    (loop $line
      ;; the decimal digits of $n end at 99, then the newline at 100
      (local.set $p (i32.const 100))
      (local.set $v (local.get $n))
      (loop $digit
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
        (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
        (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
      (i32.store (i32.const 0) (local.get $p))
      (i32.store (i32.const 4) (i32.sub (i32.const 101) (local.get $p)))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i64.add (local.get $n) (i64.const 1)))
      (br $line))))
"""


def test_printing_forever_stopped_by_fuel_is_deterministic(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    # Given a module that prints a counter forever, and an output limit it stays
    # under (so the output checks interrupt it all along, at moments that differ)
    module = wat_module(tmp_path, "print-forever", PRINT_FOREVER_WAT)

    def run(executor: WasmExecutor) -> tuple[dict[str, bytes], ExecutionResult]:
        request = make_request(module, max_units=3_000_000, max_output_bytes=10 * MiB)
        result = executor.run(request)
        return outputs(request.outputs_dir), result

    # When it runs twice, and once more with checks ten times as frequent
    first, first_result = run(wasm_executor)
    again, again_result = run(wasm_executor)
    with WasmExecutor(tick_seconds=0.001) as fast_ticks:
        third, third_result = run(fast_ticks)

    # Then every run stops at the same instruction with the same bytes written
    for result in (first_result, again_result, third_result):
        assert (result.stopped_by, result.fuel, result.exit_code) == (StopReason.FUEL, 3_000_000, -1)
    assert first == again == third
    lines = first["stdout"].decode().splitlines()
    assert len(lines) > 10_000
    assert lines == [str(n) for n in range(len(lines))]


def test_an_exception_in_the_output_check_is_raised_by_run(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose output check fails (it runs inside wasmtime's callback,
    # which must not swallow the exception)
    module = wat_module(tmp_path, "loop", LOOP_WAT)
    request = make_request(module, timeout=2.0, max_units=2**62, max_output_bytes=MiB)
    real_tree_size = wasm_module._tree_size

    def failing_tree_size(root: Path) -> int:
        if root == request.outputs_dir:
            raise OSError("the outputs disk went away")
        return real_tree_size(root)

    monkeypatch.setattr(wasm_module, "_tree_size", failing_tree_size)

    # When it runs, then the error comes out of run() (ctypes would have printed
    # and dropped it, and the run gone on to its timeout)
    with pytest.raises(OSError, match="the outputs disk went away"):
        wasm_executor.run(request)


# -- the sandbox's file system ------------------------------------------------------


def open_wat(fd: int, path: str, oflags: int, rights: int) -> str:
    """A module that exits with the errno of path_open(fd, path) (0 = opened)."""
    return f"""
(module
  (import "{WASI}" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{path}")
  (func (export "_start")
    (call $exit (call $open (i32.const {fd}) (i32.const 0) (i32.const 0) (i32.const {len(path)})
      (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 512)))))
"""


UNLINK_WAT = f"""
(module
  (import "{WASI}" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "a.txt")
  (func (export "_start")
    (call $exit (call $unlink (i32.const {INPUTS_FD}) (i32.const 0) (i32.const 5)))))
"""

O_CREAT = 1
RIGHT_FD_WRITE = 1 << 6


def test_inputs_are_read_only_and_outputs_writable(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    cases = {
        "create_in_inputs": open_wat(INPUTS_FD, "new.txt", O_CREAT, RIGHT_FD_WRITE),
        "write_an_input": open_wat(INPUTS_FD, "a.txt", 0, RIGHT_FD_WRITE),
        "unlink_an_input": UNLINK_WAT,
        "create_in_outputs": open_wat(OUTPUTS_FD, "new.txt", O_CREAT, RIGHT_FD_WRITE),
    }
    exits: dict[str, int] = {}
    requests = {}
    for name, wat in cases.items():
        request = make_request(wat_module(tmp_path, name, wat), inputs={"a.txt": b"original"})
        result = wasm_executor.run(request)
        assert result.error is None, result.error
        exits[name] = result.exit_code
        requests[name] = request

    assert exits["create_in_inputs"] != 0
    assert exits["write_an_input"] != 0
    assert exits["unlink_an_input"] != 0
    assert exits["create_in_outputs"] == 0
    for name in ("create_in_inputs", "write_an_input", "unlink_an_input"):
        inputs_dir = requests[name].inputs_dir
        assert sorted(p.name for p in inputs_dir.iterdir()) == ["a.txt"]
        assert (inputs_dir / "a.txt").read_bytes() == b"original"
    assert (requests["create_in_outputs"].outputs_dir / "new.txt").exists()


# -- bad artifacts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"#!/bin/sh\necho not wasm\n", "not a Wasm module"),
        (b"\0asm\x01\0\0\0 truncated", "not a valid Wasm module"),
        (wasmtime.wat2wasm('(module (import "env" "f" (func)))'), "imports cannot be satisfied"),
        (wasmtime.wat2wasm('(module (func (export "main")))'), "exports no _start"),
    ],
    ids=["text", "truncated", "foreign-import", "no-start"],
)
def test_bad_artifacts_give_a_clear_error_without_raising(
    wasm_executor: WasmExecutor,
    make_request: RequestFactory,
    tmp_path: Path,
    content: bytes,
    reason: str,
) -> None:
    artifact = tmp_path / "artifact.wasm"
    artifact.write_bytes(content)

    result = wasm_executor.run(make_request(artifact))

    assert result.error is not None and reason in result.error
    assert result.exit_code == -1
    assert result.usage == 0
    assert result.artifact_digest == "sha256:" + hashlib.sha256(content).hexdigest()


def test_missing_artifact_gives_a_clear_error(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    result = wasm_executor.run(make_request(tmp_path / "absent.wasm"))

    assert result.error is not None and "cannot read the module" in result.error


def test_malformed_request_raises(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        wasm_executor.run(make_request(wasm_examples["noop"], seed=b"short"))


# -- determinism -------------------------------------------------------------------


PROBE_WAT = f"""
(module
  (import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))
  (import "{WASI}" "path_filestat_get"
    (func $stat (param i32 i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "a.txt")
  (func (export "_start")
    ;; 100: realtime, 108: monotonic, 116: realtime again, 124: 32 random bytes,
    ;; 160: filestat of a.txt (64 bytes), 224: bytes used by readdir,
    ;; 256: the directory listing of /inputs
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 100)))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 108)))
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 116)))
    (drop (call $random (i32.const 124) (i32.const 32)))
    (drop (call $stat (i32.const {INPUTS_FD}) (i32.const 0) (i32.const 0) (i32.const 5)
      (i32.const 160)))
    (drop (call $readdir (i32.const {INPUTS_FD}) (i32.const 256) (i32.const 4096) (i64.const 0)
      (i32.const 224)))
    (i32.store (i32.const 32) (i32.const 100))
    (i32.store (i32.const 36) (i32.add (i32.const 156) (i32.load (i32.const 224))))
    (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))
"""


@dataclass(frozen=True)
class Probe:
    """What PROBE_WAT saw from inside the sandbox."""

    realtime: int
    monotonic: int
    realtime2: int
    random: bytes
    stat: tuple[int, ...]  # dev, ino, filetype, nlink, size, atim, mtim, ctim
    listing: tuple[str, ...]


def parse_probe(stdout: bytes) -> Probe:
    realtime, monotonic, realtime2 = struct.unpack_from("<QQQ", stdout, 0)
    stat = struct.unpack_from("<QQB7xQQQQQ", stdout, 60)
    (used,) = struct.unpack_from("<I", stdout, 124)
    raw = stdout[156 : 156 + used]
    names, offset = [], 0
    while offset < len(raw):
        _next, _ino, name_len, _kind = struct.unpack_from("<QQIB", raw, offset)
        names.append(raw[offset + 24 : offset + 24 + name_len].decode())
        offset += 24 + name_len
    return Probe(realtime, monotonic, realtime2, stdout[24:56], stat, tuple(names))


def test_clocks_random_stat_and_listings_come_from_the_seed(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    module = wat_module(tmp_path, "probe", PROBE_WAT)
    names = ["b", "a.txt", "Zed", "c", "_x", "0"]

    def probe(seed: bytes) -> Probe:
        request = make_request(module, seed=seed, inputs={n: n.encode() for n in names})
        result = wasm_executor.run(request)
        assert_ok(result)
        return parse_probe((request.outputs_dir / "stdout").read_bytes())

    first, again, other = probe(TEST_SEED), probe(TEST_SEED), probe(bytes(32))

    assert first == again
    assert first.random != other.random
    assert first.realtime != other.realtime
    assert datetime.fromtimestamp(first.realtime / 1e9, UTC).year == 2024
    assert first.realtime2 == first.realtime + 2_000_000  # 1 ms per clock read
    assert first.monotonic == 2_000_000
    # stat shows no host device, inode, link count or timestamps
    dev, ino, filetype, nlink, size, atim, mtim, ctim = first.stat
    host = (tmp_path / "inputs-0" / "a.txt").stat()
    assert (dev, nlink, size, filetype) == (0, 1, 5, 4)
    assert ino != host.st_ino
    assert atim == mtim == ctim and abs(mtim - host.st_mtime_ns) > 10**9
    # the listing is sorted by name, whatever the host's order
    assert list(first.listing) == sorted([".", "..", *names])


HIGH_POINTER_WAT = f"""
(module
  (import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 32769)  ;; 2 GiB + 64 KiB
  (func (export "_start")
    ;; exit 100 if random_get refuses a pointer above 2 GiB, 1 if it wrote zeros
    (if (call $random (i32.const 0x80000010) (i32.const 8)) (then (call $exit (i32.const 100))))
    (call $exit (i64.eqz (i64.load (i32.const 0x80000010))))))
"""


def test_pointers_above_2_gib_reach_the_deterministic_wasi_functions(
    wasm_executor: WasmExecutor, make_request: RequestFactory, tmp_path: Path
) -> None:
    module = wat_module(tmp_path, "high", HIGH_POINTER_WAT)

    result = wasm_executor.run(make_request(module, memory_limit=3 * 1024**3))

    assert (result.error, result.exit_code) == (None, 0)


@pytest.fixture
def order_sensitive_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: tmpfs lists newest first, so
    creation order shows through readdir (ext4 lists in hash order)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="wasm-order-", dir=shm))
        yield directory
        shutil.rmtree(directory)
    else:
        yield tmp_path


def test_fuel_and_outputs_do_not_depend_on_the_host_directory_order(
    wasm_executor: WasmExecutor,
    wasm_examples: dict[str, Path],
    make_request: RequestFactory,
    order_sensitive_dir: Path,
) -> None:
    # Given the same 40 files created in opposite orders in two directories
    contents = {f"file-{hashlib.sha256(bytes([i])).hexdigest()[:8]}": bytes([i]) * i for i in range(40)}
    dirs = []
    for label, order in (("fwd", sorted(contents)), ("back", sorted(contents, reverse=True))):
        directory = order_sensitive_dir / label
        directory.mkdir()
        for name in order:
            (directory / name).write_bytes(contents[name])
        dirs.append(directory)

    # When sha256sum (which sorts the names itself) runs over each
    results = []
    for directory in dirs:
        request = make_request(wasm_examples["sha256sum"], inputs_dir=directory)
        result = wasm_executor.run(request)
        assert_ok(result)
        results.append((outputs(request.outputs_dir), result.fuel))

    # Then the outputs and the fuel agree
    assert results[0] == results[1]


def test_two_executor_instances_agree_and_share_a_disk_cache(
    wasm_examples: dict[str, Path], make_request: RequestFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    jobs = [("sha256sum", ()), ("wordcount", ()), ("pi", ("5000",)), ("miner", ("x", "8"))]

    def run_all(executor: WasmExecutor) -> list[tuple[dict[str, bytes], int | None, str]]:
        runs = []
        for name, args in jobs:
            request = make_request(wasm_examples[name], args=args, inputs=SAMPLE_INPUTS)
            result = executor.run(request)
            assert_ok(result)
            runs.append((outputs(request.outputs_dir), result.fuel, result.artifact_digest))
        return runs

    with WasmExecutor(cache_dir=cache) as first:
        first_runs = run_all(first)
    cached = sorted(cache.glob("*.cwasm"))
    with WasmExecutor(cache_dir=cache) as second:
        second_runs = run_all(second)
    with WasmExecutor() as uncached:
        uncached_runs = run_all(uncached)

    assert len(cached) == len(jobs)
    assert sorted(cache.glob("*.cwasm")) == cached  # reused, not rewritten under new names
    assert first_runs == second_runs == uncached_runs


def test_concurrent_runs_keep_their_own_seed(
    wasm_executor: WasmExecutor, wasm_examples: dict[str, Path], make_request: RequestFactory
) -> None:
    seeds = [bytes([i]) * 32 for i in range(4)]
    serial = {}
    for seed in seeds:
        request = make_request(wasm_examples["pi"], args=("30000",), seed=seed)
        result = wasm_executor.run(request)
        serial[seed] = ((request.outputs_dir / "pi.json").read_bytes(), result.fuel)

    parallel: dict[bytes, tuple[bytes, int | None]] = {}

    def worker(seed: bytes) -> None:
        request = make_request(wasm_examples["pi"], args=("30000",), seed=seed)
        result = wasm_executor.run(request)
        parallel[seed] = ((request.outputs_dir / "pi.json").read_bytes(), result.fuel)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert parallel == serial
    assert len({out for out, _ in serial.values()}) == len(seeds)


def test_implements_the_executor_protocol() -> None:
    with WasmExecutor() as executor:
        assert isinstance(executor, Executor)
        assert executor.kind == "wasm"
