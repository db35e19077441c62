"""The Wasm executor: WASI command modules under wasmtime, metered in fuel.

A job's module runs with its arguments, the inputs read-only at ``/inputs``,
a writable ``/outputs`` (stdout and stderr land there as ``stdout`` and
``stderr``), a memory limit, a fuel limit equal to the job's ``max_units``, an
optional limit on the bytes under ``/outputs`` and a wall-clock timeout (the
node's safety net: the job's own time limit is part of its fuel budget). Usage
is the fuel the module burnt.

Replicas must agree on both the outputs and the fuel, so everything the host
could leak into the guest is made a function of the module, the inputs and
the job seed:

- the engine canonicalizes NaNs and disables threads, shared memory and
  relaxed SIMD;
- WASI's clocks read a virtual time: the wall clock starts at a date in 2024
  picked by the seed, every clock advances 1 ms per read, and sleeping
  (``poll_oneoff`` on clocks only) advances the virtual time instead of
  waiting;
- ``random_get`` returns SHAKE-256 of the seed and a call counter;
- directory listings (``fd_readdir``) come sorted by name with inode numbers
  derived from the name;
- ``stat`` results (``fd_filestat_get``, ``path_filestat_get``) carry no host
  device, inode, link count, directory size or timestamps.

wasmtime's WASI functions need the calling instance's memory, so the host
cannot call them directly. The replacements call the real ones through a
small shim module instantiated in the same store (same WASI context, its own
scratch memory) and refund the shim's fuel, so the guest is charged only for
its own instructions.

Limits and ``ExecutionResult.stopped_by``:

- FUEL: the guest burnt ``max_units``; charged in full. Deterministic.
- MEMORY: the module needs more than ``memory_limit`` to start, or it trapped
  with its memory within a page of the limit (a refused ``memory.grow`` the
  program handled and exited on is its own exit, not a stop). Deterministic.
- TIMEOUT: the wall-clock timeout passed (checked at the engine's epoch
  ticks, every ``tick_seconds``).
- OUTPUT: with ``max_output_bytes``, the store has an epoch-deadline callback,
  which measures ``/outputs`` (stdout and stderr included) as often as the
  headroom left requires, every tick once the guest could reach the limit,
  and stops the guest past it. A run that ends, by itself or by another
  limit, with more under ``/outputs`` is OUTPUT too (its outputs are over the
  limit either way). Host calls cannot be interrupted, so ``/outputs`` can pass
  the limit by what the guest writes in one tick (3 to 12 MB here at 0.3 to
  1.2 GB/s) plus one ``fd_write`` (at most its linear memory, so at most
  ``memory_limit``).
- TIMEOUT and OUTPUT depend on the machine's speed.

Fuel after a TIMEOUT or OUTPUT stop is a lower bound. Cranelift keeps a
running guest's fuel counter in a register and writes it back to the store
only at calls, returns, ``unreachable`` and the out-of-fuel check; the
interrupt traps without writing it back, so the store holds the figure of
the guest's last call or return (a hot loop that calls nothing is not
counted). FUEL stops and runs that end by themselves (``proc_exit`` or
returning from ``_start``) are exact; other traps than ``unreachable`` (an
out-of-bounds access, a division by zero) leave the figure of the last call
or return too, the same on every replica.

Errors: a bad artifact, a trap, running out of fuel or time, a memory limit
hit or too much output are reported in ``ExecutionResult.error``, never
raised. ``run`` raises only ``ValueError`` for a malformed request (a
programming error).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import wasmtime
from wasmtime import _ffi as wasmtime_ffi

from compute_node.executors._base import ExecutionRequest, ExecutionResult, StopReason

__all__ = ["WasmExecutor"]

logger = logging.getLogger(__name__)

_WASI = "wasi_snapshot_preview1"
_WASM_MAGIC = b"\0asm"
_SEED_BYTES = 32

# WASI preview1 errno values.
_ESUCCESS = 0
_EFAULT = 21
_EINVAL = 28
_EIO = 29
_ENAMETOOLONG = 37

# WASI preview1 clock ids and file types.
_CLOCK_REALTIME = 0
_CLOCK_IDS = frozenset({0, 1, 2, 3})
_FILETYPE_DIRECTORY = 3

# Virtual time: a 2024 date picked by the seed, advancing 1 ms per clock read.
_EPOCH_2024_NS = 1_704_067_200 * 1_000_000_000
_YEAR_NS = 365 * 86_400 * 1_000_000_000
_CLOCK_STEP_NS = 1_000_000

# Layout of the shim's scratch memory (two 64 KiB pages).
_SHIM_PAGES = 2
_SCRATCH = 0  # readdir buffer / poll subscriptions, 64 KiB
_SCRATCH_LEN = 65_536
_WORD = 65_536  # a u32 out-parameter (bytes used, events written)
_FILESTAT = 65_600  # 64-byte filestat out-parameter
_PATH = 65_664  # path argument, up to _PATH_MAX bytes
_PATH_MAX = 4_096
_EVENTS = _PATH + _PATH_MAX  # poll events out-parameter
_SUBSCRIPTION = 48
_EVENT = 32
_MAX_SUBSCRIPTIONS = min(_SCRATCH_LEN // _SUBSCRIPTION, (65_536 * _SHIM_PAGES - _EVENTS) // _EVENT)
_DIRENT_HEADER = 24
_FILESTAT_LEN = 64
# Fuel lent to the shim for one call and refunded afterwards.
_SHIM_FUEL = 10_000
_MAX_FUEL = 2**64 - 1  # the store's fuel is a u64; ctypes wraps larger values silently
_WASM_PAGE = 65_536
# The fastest a guest is assumed to fill /outputs (page cache, big fd_writes;
# about 1 GB/s measured here). The output check comes before the guest could
# pass the limit at this rate, and every tick once it is that close.
_FASTEST_WRITES = 4 << 30

_SHIM_WAT = f"""
(module
  (import "{_WASI}" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "{_WASI}" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "{_WASI}" "path_filestat_get"
    (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "{_WASI}" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {_SHIM_PAGES} {_SHIM_PAGES})
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $fd_readdir)
  (func (export "fd_filestat_get") (param i32 i32) (result i32)
    local.get 0 local.get 1 call $fd_filestat_get)
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $path_filestat_get)
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $poll_oneoff))
"""

_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


def _engine_config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    config.cranelift_nan_canonicalization = True
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_relaxed_simd = False
    config.wasm_relaxed_simd_deterministic = True
    config.wasm_memory64 = False
    return config


# Changing _engine_config changes compiled code: bump this so modules
# serialized by an older configuration are not loaded from the disk cache.
_CONFIG_VERSION = "1"


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A module compiled and linked against the executor's WASI imports."""

    pre: wasmtime.InstancePre
    digest: str


@dataclass(frozen=True, slots=True)
class _Rejected:
    """Why an artifact cannot run, and its digest when it could be read."""

    reason: str
    digest: str = ""


@dataclass(slots=True)
class _OutputWatch:
    """Measures ``/outputs`` against ``max_output_bytes``, as often as the headroom requires."""

    root: Path
    limit: int
    headroom: int = 0  # bytes left under the limit at the last walk
    next_walk: float = 0.0

    def exceeded(self, now: float) -> bool:
        if now < self.next_walk:
            return False
        self.headroom = self.limit - _tree_size(self.root)
        # Walking thousands of files takes a while: space the walks so that
        # they never take more than about a tenth of the run.
        self.next_walk = now + 9 * (time.monotonic() - now)
        return self.headroom < 0

    def seconds_to_next_check(self, now: float) -> float:
        """How long the guest can write at ``_FASTEST_WRITES`` before it could pass the limit."""
        return max(self.next_walk - now, self.headroom / _FASTEST_WRITES)


@dataclass(slots=True)
class _RunState:
    """Per-run state read by the deterministic WASI functions and the epoch callback."""

    seed: bytes
    shim_pre: wasmtime.InstancePre
    realtime_base_ns: int
    deadline: float
    outputs: _OutputWatch | None = None
    ticks: int = 0
    random_calls: int = 0
    shim: wasmtime.Instance | None = None
    listings: dict[int, list[tuple[bytes, int]]] = field(default_factory=dict)
    stopped_by: StopReason | None = None
    interrupted: BaseException | None = None  # raised in the epoch callback; run() re-raises it

    def limit_passed(self, now: float) -> StopReason | None:
        """The wall-clock or output limit the run is past, if any."""
        if now >= self.deadline:
            return StopReason.TIMEOUT
        if self.outputs is not None and self.outputs.exceeded(now):
            return StopReason.OUTPUT
        return None

    def seconds_to_next_check(self, now: float) -> float:
        wait = self.deadline - now
        if self.outputs is not None:
            wait = min(wait, self.outputs.seconds_to_next_check(now))
        return wait


# wasmtime_store_epoch_deadline_callback's callback (wasmtime.h): returns NULL
# to continue with a new deadline, or a wasmtime_error_t* to stop the guest.
_EPOCH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(wasmtime_ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(wasmtime_ffi.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_UPDATE_DEADLINE_CONTINUE = 0


class _Limits:
    """Stops a run at its timeout, and past its output limit when it has one.

    A run without an output limit gets a plain epoch deadline: the guest traps
    at its timeout and no Python runs on its thread meanwhile. A run with one
    gets an epoch-deadline callback instead. wasmtime-py 50 wraps none, so it
    is installed through the C API (wasmtime is pinned in pyproject.toml). It
    runs on the guest's thread, reads the run's state like the WASI functions
    do and walks ``/outputs`` while the guest is paused. It needs the GIL, so
    the deadline is re-armed no sooner than the next check is due.

    As with the WASI functions written in Python, ctypes drops an exception
    raised on entry to the callback: a Ctrl-C that lands there is lost. The
    node runs jobs in worker threads, where no signal is delivered.
    """

    def __init__(self, *, local: threading.local, period: float) -> None:
        self._local = local
        self._period = period
        # Kept for the executor's lifetime: the engine calls it from every store.
        self._callback = _EPOCH_CALLBACK(self._on_deadline)

    def install(self, store: wasmtime.Store, state: _RunState) -> None:
        """Check ``state``'s limits while ``store`` runs."""
        now = time.monotonic()
        if state.outputs is None:
            store.set_epoch_deadline(math.ceil((state.deadline - now) / self._period) + 1)
            return
        wasmtime_ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback, None, _NO_FINALIZER)
        store.set_epoch_deadline(self._ticks(state.seconds_to_next_check(now)))

    def _ticks(self, seconds: float) -> int:
        return max(1, int(seconds / self._period))

    def _on_deadline(self, _context: Any, _data: Any, delta: Any, kind: Any) -> int:
        state: _RunState | None = getattr(self._local, "state", None)
        if state is None:
            return _stop("no run is active on this thread")
        try:
            now = time.monotonic()
            reason = state.limit_passed(now)
            if reason is None:
                delta[0] = self._ticks(state.seconds_to_next_check(now))
                kind[0] = _UPDATE_DEADLINE_CONTINUE
                return 0
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind into wasmtime; run() re-raises it
            state.interrupted = exc
            return _stop(type(exc).__name__)
        state.stopped_by = reason
        return _stop(f"{reason.value} limit")


def _stop(message: str) -> int:
    """A wasmtime_error_t* for the epoch callback to return (wasmtime frees it)."""
    error = wasmtime_ffi.wasmtime_error_new(message.encode())
    return ctypes.cast(error, ctypes.c_void_p).value or 0


class _EpochTicker:
    """Advances the engine's epoch every ``period`` seconds while runs are active.

    Each store sets its deadline as a number of ticks (re-armed by its callback
    when it has an output limit), so concurrent runs share one thread and one
    engine.
    """

    def __init__(self, *, engine: wasmtime.Engine, period: float) -> None:
        self._engine = engine
        self.period = period
        self._active = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        with self._cond:
            if self._closed:
                raise ValueError("WasmExecutor is closed; create a new one to run jobs")
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasm-epoch-ticker", daemon=True)
                self._thread.start()
            self._cond.notify()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._active -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._active == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(self.period)
            self._engine.increment_epoch()


def _fuel(ctx: wasmtime.Caller) -> int:
    # Store.get_fuel/set_fuel only use the context pointer, which a Caller has.
    return wasmtime.Store.get_fuel(cast(wasmtime.Store, ctx))


def _set_fuel(ctx: wasmtime.Caller, fuel: int) -> None:
    wasmtime.Store.set_fuel(cast(wasmtime.Store, ctx), fuel)


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory | None:
    memory = caller.get("memory")
    return memory if isinstance(memory, wasmtime.Memory) else None


def _in_bounds(memory: wasmtime.Memory, caller: wasmtime.Caller, ptr: int, size: int) -> bool:
    return ptr >= 0 and size >= 0 and ptr + size <= memory.data_len(caller)


def _unsigned_args(func: Callable[..., int], params: list[wasmtime.ValType]) -> Callable[..., int]:
    """Reinterpret wasm's signed i32/i64 arguments as the unsigned WASI types
    (pointers above 2 GiB arrive negative otherwise)."""
    masks = tuple((1 << 32) - 1 if p == _I32 else (1 << 64) - 1 for p in params)

    def call(caller: wasmtime.Caller, *args: int) -> int:
        return func(caller, *(arg & mask for arg, mask in zip(args, masks, strict=True)))

    return call


def _fake_inode(name: bytes) -> int:
    return int.from_bytes(hashlib.sha256(b"inode:" + name).digest()[:8], "little") | 1


def _tree_size(root: Path) -> int:
    """Total bytes of the regular files under ``root``, never following symlinks."""
    total = 0
    pending = [str(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:  # removed while walking
                        continue
        except OSError:
            continue
    return total


class _DeterministicWasi:
    """Host replacements for the WASI functions that would leak host state."""

    def __init__(self, *, local: threading.local) -> None:
        self._local = local

    def define(self, linker: wasmtime.Linker) -> None:
        """Shadow the nondeterministic WASI functions in ``linker``."""
        functions: list[tuple[str, list[wasmtime.ValType], Callable[..., int]]] = [
            ("clock_time_get", [_I32, _I64, _I32], self.clock_time_get),
            ("clock_res_get", [_I32, _I32], self.clock_res_get),
            ("random_get", [_I32, _I32], self.random_get),
            ("fd_readdir", [_I32, _I32, _I32, _I64, _I32], self.fd_readdir),
            ("fd_filestat_get", [_I32, _I32], self.fd_filestat_get),
            ("path_filestat_get", [_I32, _I32, _I32, _I32, _I32], self.path_filestat_get),
            ("poll_oneoff", [_I32, _I32, _I32, _I32], self.poll_oneoff),
        ]
        for name, params, func in functions:
            ty = wasmtime.FuncType(params, [_I32])
            linker.define_func(_WASI, name, ty, _unsigned_args(func, params), access_caller=True)

    def _state(self) -> _RunState:
        state: _RunState | None = getattr(self._local, "state", None)
        if state is None:
            raise RuntimeError("WASI call outside a WasmExecutor run")
        return state

    # -- clocks and randomness ------------------------------------------------

    def _now(self, state: _RunState, clock_id: int) -> int:
        state.ticks += 1
        elapsed = state.ticks * _CLOCK_STEP_NS
        return state.realtime_base_ns + elapsed if clock_id == _CLOCK_REALTIME else elapsed

    def clock_time_get(self, caller: wasmtime.Caller, clock_id: int, _precision: int, out: int) -> int:
        state = self._state()
        memory = _memory(caller)
        if clock_id not in _CLOCK_IDS:
            return _EINVAL
        if memory is None or not _in_bounds(memory, caller, out, 8):
            return _EFAULT
        memory.write(caller, struct.pack("<Q", self._now(state, clock_id)), out)
        return _ESUCCESS

    def clock_res_get(self, caller: wasmtime.Caller, clock_id: int, out: int) -> int:
        memory = _memory(caller)
        if clock_id not in _CLOCK_IDS:
            return _EINVAL
        if memory is None or not _in_bounds(memory, caller, out, 8):
            return _EFAULT
        memory.write(caller, struct.pack("<Q", _CLOCK_STEP_NS), out)
        return _ESUCCESS

    def random_get(self, caller: wasmtime.Caller, buf: int, length: int) -> int:
        state = self._state()
        memory = _memory(caller)
        if memory is None or not _in_bounds(memory, caller, buf, length):
            return _EFAULT
        state.random_calls += 1
        stream = hashlib.shake_256(
            b"chain-scheduler/wasi-random\0" + state.seed + state.random_calls.to_bytes(8, "little")
        )
        if length:
            memory.write(caller, stream.digest(length), buf)
        return _ESUCCESS

    # -- the shim: real WASI calls with a scratch memory ----------------------

    def _shim(self, caller: wasmtime.Caller, state: _RunState) -> tuple[wasmtime.Memory, Any]:
        if state.shim is None:
            state.shim = state.shim_pre.instantiate(caller)
        exports = state.shim.exports(caller)
        return cast(wasmtime.Memory, exports["memory"]), exports

    def _call_shim(self, caller: wasmtime.Caller, func: Any, *args: int) -> int:
        # The shim's few instructions must not count against the guest, and
        # how often it runs depends on the host's directory order.
        fuel = _fuel(caller)
        _set_fuel(caller, min(fuel + _SHIM_FUEL, _MAX_FUEL))
        try:
            return int(func(caller, *args))
        finally:
            _set_fuel(caller, fuel)

    # -- directory listings ---------------------------------------------------

    def _list_dir(self, caller: wasmtime.Caller, state: _RunState, fd: int) -> list[tuple[bytes, int]] | int:
        scratch, exports = self._shim(caller, state)
        entries: list[tuple[bytes, int]] = []
        cookie = 0
        while True:
            errno = self._call_shim(caller, exports["fd_readdir"], fd, _SCRATCH, _SCRATCH_LEN, cookie, _WORD)
            if errno != _ESUCCESS:
                return errno
            (used,) = struct.unpack("<I", scratch.read(caller, _WORD, _WORD + 4))
            data = bytes(scratch.read(caller, _SCRATCH, _SCRATCH + used))
            offset = 0
            progressed = False
            while offset + _DIRENT_HEADER <= used:
                next_cookie, _ino, name_len, kind = struct.unpack_from("<QQIB", data, offset)
                end = offset + _DIRENT_HEADER + name_len
                if end > used:
                    break
                entries.append((data[offset + _DIRENT_HEADER : end], kind))
                cookie = next_cookie
                offset = end
                progressed = True
            if used < _SCRATCH_LEN:
                break
            if not progressed:
                return _EIO
        entries.sort()
        return entries

    def fd_readdir(self, caller: wasmtime.Caller, fd: int, buf: int, buf_len: int, cookie: int, used_out: int) -> int:
        state = self._state()
        memory = _memory(caller)
        if memory is None or not _in_bounds(memory, caller, buf, buf_len):
            return _EFAULT
        if not _in_bounds(memory, caller, used_out, 4):
            return _EFAULT
        listing = state.listings.get(fd)
        if cookie == 0 or listing is None:
            listed = self._list_dir(caller, state, fd)
            if isinstance(listed, int):
                return listed
            listing = state.listings[fd] = listed
        out = bytearray()
        # Cookies are positions in the sorted listing; WASI lets the last
        # entry be cut off when the buffer is full.
        for index in range(min(cookie, len(listing)), len(listing)):
            if len(out) >= buf_len:
                break
            name, kind = listing[index]
            out += struct.pack("<QQIB3x", index + 1, _fake_inode(name), len(name), kind)
            out += name
        out = out[:buf_len]
        if out:
            memory.write(caller, out, buf)
        memory.write(caller, struct.pack("<I", len(out)), used_out)
        return _ESUCCESS

    # -- stat -----------------------------------------------------------------

    def _clean_filestat(self, state: _RunState, raw: bytes, inode: int) -> bytes:
        _dev, _ino, filetype, _nlink, size, _atim, _mtim, _ctim = struct.unpack("<QQB7xQQQQQ", raw)
        if filetype == _FILETYPE_DIRECTORY:
            size = 0  # directory sizes depend on the host's filesystem
        stamp = state.realtime_base_ns
        return struct.pack("<QQB7xQQQQQ", 0, inode, filetype, 1, size, stamp, stamp, stamp)

    def fd_filestat_get(self, caller: wasmtime.Caller, fd: int, out: int) -> int:
        state = self._state()
        memory = _memory(caller)
        if memory is None or not _in_bounds(memory, caller, out, _FILESTAT_LEN):
            return _EFAULT
        scratch, exports = self._shim(caller, state)
        errno = self._call_shim(caller, exports["fd_filestat_get"], fd, _FILESTAT)
        if errno != _ESUCCESS:
            return errno
        raw = bytes(scratch.read(caller, _FILESTAT, _FILESTAT + _FILESTAT_LEN))
        memory.write(caller, self._clean_filestat(state, raw, _fake_inode(b"fd:%d" % fd)), out)
        return _ESUCCESS

    def path_filestat_get(
        self, caller: wasmtime.Caller, fd: int, flags: int, path: int, path_len: int, out: int
    ) -> int:
        state = self._state()
        memory = _memory(caller)
        if memory is None or not _in_bounds(memory, caller, path, path_len):
            return _EFAULT
        if not _in_bounds(memory, caller, out, _FILESTAT_LEN):
            return _EFAULT
        if path_len > _PATH_MAX:
            return _ENAMETOOLONG
        name = bytes(memory.read(caller, path, path + path_len))
        scratch, exports = self._shim(caller, state)
        if name:
            scratch.write(caller, name, _PATH)
        errno = self._call_shim(caller, exports["path_filestat_get"], fd, flags, _PATH, path_len, _FILESTAT)
        if errno != _ESUCCESS:
            return errno
        raw = bytes(scratch.read(caller, _FILESTAT, _FILESTAT + _FILESTAT_LEN))
        inode = _fake_inode(name.rstrip(b"/").rsplit(b"/", 1)[-1])
        memory.write(caller, self._clean_filestat(state, raw, inode), out)
        return _ESUCCESS

    # -- sleeping -------------------------------------------------------------

    def poll_oneoff(self, caller: wasmtime.Caller, subs: int, events: int, count: int, count_out: int) -> int:
        state = self._state()
        memory = _memory(caller)
        if memory is None or count <= 0 or count > _MAX_SUBSCRIPTIONS:
            return _EINVAL
        if not (
            _in_bounds(memory, caller, subs, count * _SUBSCRIPTION)
            and _in_bounds(memory, caller, events, count * _EVENT)
            and _in_bounds(memory, caller, count_out, 4)
        ):
            return _EFAULT
        raw = bytes(memory.read(caller, subs, subs + count * _SUBSCRIPTION))
        tags = [raw[i * _SUBSCRIPTION + 8] for i in range(count)]
        if all(tag == 0 for tag in tags):
            return self._sleep(caller, state, memory, raw, count, events, count_out)
        # File descriptors are always ready in this sandbox (no sockets, no
        # stdin); let WASI answer so the event fields are right.
        scratch, exports = self._shim(caller, state)
        scratch.write(caller, raw, _SCRATCH)
        errno = self._call_shim(caller, exports["poll_oneoff"], _SCRATCH, _EVENTS, count, _WORD)
        if errno != _ESUCCESS:
            return errno
        (written,) = struct.unpack("<I", scratch.read(caller, _WORD, _WORD + 4))
        written = min(written, count)
        if written:
            memory.write(caller, scratch.read(caller, _EVENTS, _EVENTS + written * _EVENT), events)
        memory.write(caller, struct.pack("<I", written), count_out)
        return _ESUCCESS

    def _sleep(
        self,
        caller: wasmtime.Caller,
        state: _RunState,
        memory: wasmtime.Memory,
        raw: bytes,
        count: int,
        events: int,
        count_out: int,
    ) -> int:
        # Advance virtual time to the earliest deadline instead of waiting.
        now_mono = state.ticks * _CLOCK_STEP_NS
        waits: list[tuple[int, int]] = []
        for i in range(count):
            userdata, _tag, clock_id, timeout, _precision, flags = struct.unpack_from(
                "<QB7xIxxxxQQH", raw, i * _SUBSCRIPTION
            )
            if clock_id not in _CLOCK_IDS:
                return _EINVAL
            if flags & 1:  # absolute deadline
                now = state.realtime_base_ns + now_mono if clock_id == _CLOCK_REALTIME else now_mono
                timeout = max(0, timeout - now)
            waits.append((timeout, userdata))
        shortest = min(timeout for timeout, _ in waits)
        state.ticks += -(-shortest // _CLOCK_STEP_NS)
        fired = [userdata for timeout, userdata in waits if timeout == shortest]
        out = b"".join(struct.pack("<QHBx4xQH6x", u, 0, 0, 0, 0) for u in fired)
        memory.write(caller, out, events)
        memory.write(caller, struct.pack("<I", len(fired)), count_out)
        return _ESUCCESS


class WasmExecutor:
    """Runs WASI command modules under wasmtime with fuel metering.

    One executor owns one wasmtime engine, a cache of compiled modules keyed
    by artifact CID (in memory, and serialized under ``cache_dir`` when one is
    given) and a ticker thread that enforces timeouts and paces the output
    checks. ``run`` may be called from several threads at once.

    Example::

        with WasmExecutor(cache_dir=Path.home() / ".cache/compute-node/wasm") as executor:
            result = executor.run(ExecutionRequest(
                job_id=7, artifact=Path("wordcount.wasm"), artifact_cid=cid, args=(),
                inputs_dir=inputs, outputs_dir=outputs, seed=seed,
                max_units=10**9, memory_limit=64 << 20, timeout=30.0,
            ))
        print(result.exit_code, result.usage, result.stopped_by)  # usage is fuel

    Args:
        cache_dir: Directory for serialized compiled modules, or None to keep
            the cache in memory only. Created on first use.
        max_cached_modules: Compiled modules kept in memory (least recently
            used dropped first).
        max_module_bytes: Larger artifacts are refused without compiling.
        tick_seconds: Granularity of the timeout and of the output-limit
            checks: how often the engine epoch advances while a run is active.
    """

    kind: str = "wasm"

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        max_cached_modules: int = 64,
        max_module_bytes: int = 64 * 1024 * 1024,
        tick_seconds: float = 0.01,
    ) -> None:
        if max_cached_modules < 1:
            raise ValueError(f"max_cached_modules must be at least 1, got {max_cached_modules}")
        if tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be positive, got {tick_seconds}")
        self._cache_dir = cache_dir
        self._max_cached = max_cached_modules
        self._max_module_bytes = max_module_bytes
        self._engine = wasmtime.Engine(_engine_config())
        self._ticker = _EpochTicker(engine=self._engine, period=tick_seconds)
        self._local = threading.local()
        self._limits = _Limits(local=self._local, period=tick_seconds)
        self._lock = threading.Lock()
        self._modules: OrderedDict[str, _Compiled] = OrderedDict()
        self._linker = wasmtime.Linker(self._engine)
        self._linker.define_wasi()
        self._linker.allow_shadowing = True
        _DeterministicWasi(local=self._local).define(self._linker)
        plain_wasi = wasmtime.Linker(self._engine)
        plain_wasi.define_wasi()
        self._shim_pre = plain_wasi.instantiate_pre(wasmtime.Module(self._engine, _SHIM_WAT))

    def close(self) -> None:
        """Stop the timeout thread and drop cached modules. Idempotent."""
        self._ticker.close()
        with self._lock:
            self._modules.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cached_modules(self) -> int:
        """Number of compiled modules held in memory."""
        with self._lock:
            return len(self._modules)

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one replica of a Wasm job.

        Args:
            request: The job replica; ``artifact`` is the module file.

        Returns:
            The exit code and fuel used; ``error`` says why the sandbox
            stopped the run (bad module, trap, out of fuel, timeout, memory,
            output) and ``stopped_by`` which limit did, if one did.

        Raises:
            ValueError: The request itself is malformed (seed length,
                missing inputs directory, non-positive limits).
        """
        _check_request(request)
        started = time.perf_counter()
        request.outputs_dir.mkdir(parents=True, exist_ok=True)
        bytes_in = _tree_size(request.inputs_dir)
        compiled = self._compiled(request)
        if isinstance(compiled, _Rejected):
            logger.warning("job_id=%s wasm module rejected: %s", request.job_id, compiled.reason)
            return self._result(
                request,
                started,
                digest=compiled.digest,
                exit_code=-1,
                fuel=0,
                peak=None,
                bytes_in=bytes_in,
                error=compiled.reason,
            )
        store = wasmtime.Store(self._engine)
        try:
            store.set_wasi(self._wasi_config(request))
        except wasmtime.WasmtimeError as exc:
            reason = f"cannot set up the sandbox's files: {_first_line(exc)}"
            return self._result(
                request,
                started,
                digest=compiled.digest,
                exit_code=-1,
                fuel=0,
                peak=None,
                bytes_in=bytes_in,
                error=reason,
            )
        store.set_fuel(request.max_units)
        store.set_limits(
            memory_size=request.memory_limit,
            table_elements=1_000_000,
            instances=2,  # the guest and the WASI shim
            tables=4,
            memories=2,
        )
        state = _RunState(
            seed=request.seed,
            shim_pre=self._shim_pre,
            realtime_base_ns=_realtime_base(request.seed),
            deadline=time.monotonic() + request.timeout,
            outputs=(
                None
                if request.max_output_bytes is None
                else _OutputWatch(root=request.outputs_dir, limit=request.max_output_bytes)
            ),
        )
        self._limits.install(store, state)
        self._local.state = state
        instance: wasmtime.Instance | None = None
        exit_code, error, trap, stopped_by = -1, None, None, None
        try:
            with self._ticker:
                instance = compiled.pre.instantiate(store)
                start = instance.exports(store).get("_start")
                if not isinstance(start, wasmtime.Func):
                    error = "the module is not a WASI command: it exports no _start function"
                else:
                    start(store)
                    exit_code = 0
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code
        except wasmtime.Trap as exc:
            trap = exc.trap_code
            error = _trap_reason(exc, request)
        except wasmtime.WasmtimeError as exc:
            error, stopped_by = _instantiation_reason(exc, request, started_module=instance is not None)
        finally:
            self._local.state = None
        if state.interrupted is not None:
            raise state.interrupted
        if state.stopped_by is not None:
            stopped_by, error = state.stopped_by, _limit_reason(state.stopped_by, request)
        elif trap == wasmtime.TrapCode.OUT_OF_FUEL:
            stopped_by = StopReason.FUEL
        elif trap == wasmtime.TrapCode.INTERRUPT:
            stopped_by = StopReason.TIMEOUT
        # Running dry is charged in full, so a replica cannot gain by
        # reporting less than the limit it hit. After a TIMEOUT or OUTPUT
        # stop the store holds the fuel of the guest's last call or return
        # (see the module docstring).
        fuel = request.max_units if stopped_by is StopReason.FUEL else request.max_units - store.get_fuel()
        peak = None
        if instance is not None:
            memory = instance.exports(store).get("memory")
            if isinstance(memory, wasmtime.Memory):
                peak = memory.data_len(store)
        if trap is not None and stopped_by is None and peak and peak + _WASM_PAGE > request.memory_limit:
            stopped_by = StopReason.MEMORY
            error = f"{error} (memory limit of {request.memory_limit} bytes reached)"
        result = self._result(
            request,
            started,
            digest=compiled.digest,
            exit_code=exit_code,
            fuel=fuel,
            peak=peak,
            bytes_in=bytes_in,
            error=error,
            stopped_by=stopped_by,
        )
        logger.info(
            "job_id=%s wasm run done: exit_code=%s fuel=%s wall_ms=%s stopped_by=%s error=%s",
            request.job_id,
            result.exit_code,
            result.fuel,
            result.wall_ms,
            result.stopped_by,
            result.error,
        )
        return result

    # -- helpers ---------------------------------------------------------------

    def _wasi_config(self, request: ExecutionRequest) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["main", *request.args]
        wasi.env = sorted(request.env.items())
        wasi.preopen_dir(str(request.inputs_dir), "/inputs", False)
        wasi.preopen_dir(str(request.outputs_dir), "/outputs", True)
        wasi.stdout_file = str(request.outputs_dir / "stdout")
        wasi.stderr_file = str(request.outputs_dir / "stderr")
        return wasi

    def _result(
        self,
        request: ExecutionRequest,
        started: float,
        *,
        digest: str,
        exit_code: int,
        fuel: int,
        peak: int | None,
        bytes_in: int,
        error: str | None,
        stopped_by: StopReason | None = None,
    ) -> ExecutionResult:
        bytes_out = _tree_size(request.outputs_dir)
        if request.max_output_bytes is not None and bytes_out > request.max_output_bytes:
            # Also when the run ended by itself (or by another limit) between
            # two checks: the outputs are over the limit either way.
            reason = _limit_reason(StopReason.OUTPUT, request)
            error = reason if error is None or stopped_by is StopReason.OUTPUT else f"{reason}; {error}"
            stopped_by = StopReason.OUTPUT
        return ExecutionResult(
            executor=self.kind,
            artifact_digest=digest,
            exit_code=exit_code,
            usage=fuel,
            fuel=fuel,
            cpu_ms=None,
            peak_memory=peak,
            wall_ms=round((time.perf_counter() - started) * 1000),
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            error=error,
            stopped_by=stopped_by,
        )

    def _compiled(self, request: ExecutionRequest) -> _Compiled | _Rejected:
        """The compiled module for the request's CID, or why there is none."""
        key = request.artifact_cid
        with self._lock:
            cached = self._modules.get(key)
            if cached is not None:
                self._modules.move_to_end(key)
                return cached
        try:
            size = request.artifact.stat().st_size
            if size > self._max_module_bytes:
                return _Rejected(
                    f"the module is {size} bytes, over this node's limit of "
                    f"{self._max_module_bytes}; raise max_module_bytes to accept it"
                )
            wasm = request.artifact.read_bytes()
        except OSError as exc:
            return _Rejected(f"cannot read the module {request.artifact}: {exc.strerror}")
        digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
        if not wasm.startswith(_WASM_MAGIC):
            return _Rejected(
                "the artifact is not a Wasm module (it does not start with the \\0asm magic bytes)",
                digest,
            )
        module = self._load_from_disk(key, digest)
        if module is None:
            try:
                module = wasmtime.Module(self._engine, wasm)
            except wasmtime.WasmtimeError as exc:
                return _Rejected(f"the artifact is not a valid Wasm module: {_first_line(exc)}", digest)
            self._save_to_disk(key, digest, module)
        try:
            pre = self._linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            return _Rejected(
                f"the module's imports cannot be satisfied by WASI preview1: {_first_line(exc)}",
                digest,
            )
        compiled = _Compiled(pre=pre, digest=digest)
        with self._lock:
            self._modules[key] = compiled
            self._modules.move_to_end(key)
            while len(self._modules) > self._max_cached:
                self._modules.popitem(last=False)
        return compiled

    def _disk_path(self, cid: str, digest: str) -> Path | None:
        if self._cache_dir is None:
            return None
        key = hashlib.sha256(
            f"{wasmtime.__name__}:{_wasmtime_version()}:{_CONFIG_VERSION}:{cid}:{digest}".encode()
        ).hexdigest()
        return self._cache_dir / f"{key}.cwasm"

    def _load_from_disk(self, cid: str, digest: str) -> wasmtime.Module | None:
        path = self._disk_path(cid, digest)
        if path is None or not path.exists():
            return None
        try:
            return wasmtime.Module.deserialize_file(self._engine, str(path))
        except wasmtime.WasmtimeError as exc:
            logger.warning("dropping unusable compiled module %s: %s", path, _first_line(exc))
            path.unlink(missing_ok=True)
            return None

    def _save_to_disk(self, cid: str, digest: str, module: wasmtime.Module) -> None:
        path = self._disk_path(cid, digest)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(module.serialize())
            tmp.replace(path)
        except OSError as exc:
            logger.warning("cannot cache the compiled module in %s: %s", path.parent, exc)

    def check(self, artifact: Path, artifact_cid: str) -> str | None:
        """Why the module can never run, the same on every node; None when it compiles and links.

        Compiles through the module cache under ``artifact_cid``, as ``run`` does, so a
        module checked before bidding is not compiled again when it runs. Refused: not
        Wasm, not a valid module, imports WASI preview1 does not provide, no ``_start``
        (the messages ``run`` would give).

        Raises:
            ValueError: the module is over this node's ``max_module_bytes`` (another node may take it).
            OSError: the file cannot be read.
        """
        size = artifact.stat().st_size
        if size > self._max_module_bytes:
            raise ValueError(f"the module is {size} bytes, over this node's limit of {self._max_module_bytes}")
        probe = ExecutionRequest(
            job_id=0, artifact=artifact, artifact_cid=artifact_cid, args=(), inputs_dir=artifact.parent,
            outputs_dir=artifact.parent, seed=bytes(_SEED_BYTES), max_units=1, memory_limit=1, timeout=1.0,
        )  # fmt: skip
        compiled = self._compiled(probe)
        if isinstance(compiled, _Rejected):
            return compiled.reason
        if not any(e.name == "_start" and isinstance(e.type, wasmtime.FuncType) for e in compiled.pre.module.exports):
            return "the module is not a WASI command: it exports no _start function"
        return None


def _check_request(request: ExecutionRequest) -> None:
    if len(request.seed) != _SEED_BYTES:
        raise ValueError(f"seed must be {_SEED_BYTES} bytes, got {len(request.seed)}")
    if not request.inputs_dir.is_dir():
        raise ValueError(f"inputs_dir {request.inputs_dir} is not a directory; fetch the inputs first")
    if not 0 < request.max_units < 2**64:
        raise ValueError(f"max_units must be between 1 and 2**64 - 1, got {request.max_units}")
    if request.memory_limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {request.memory_limit}")
    if request.timeout <= 0:
        raise ValueError(f"timeout must be positive, got {request.timeout}")


def _realtime_base(seed: bytes) -> int:
    offset = int.from_bytes(hashlib.sha256(b"chain-scheduler/wasi-clock\0" + seed).digest()[:8], "little")
    return _EPOCH_2024_NS + offset % _YEAR_NS


def _first_line(exc: BaseException) -> str:
    """wasmtime's message on one line: the summary and its innermost cause."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1 :]
        if causes:
            return f"{lines[0]}: {causes[-1]}"
    return lines[0]


def _limit_reason(reason: StopReason, request: ExecutionRequest) -> str:
    if reason is StopReason.OUTPUT:
        return f"output limit: the program wrote more than max_output_bytes={request.max_output_bytes} under /outputs"
    if reason is StopReason.TIMEOUT:
        return f"timeout: the program ran longer than {request.timeout:g} s"
    if reason is StopReason.FUEL:
        return f"out of fuel: the program needs more than max_units={request.max_units}"
    return f"memory limit: the program needs more than memory_limit={request.memory_limit} bytes"


def _trap_reason(trap: wasmtime.Trap, request: ExecutionRequest) -> str:
    code = trap.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return _limit_reason(StopReason.FUEL, request)
    if code == wasmtime.TrapCode.INTERRUPT:
        return _limit_reason(StopReason.TIMEOUT, request)
    message = trap.message.strip().splitlines()
    # wasmtime puts the backtrace first and the cause last.
    cause = message[-1].strip() if message else "unknown"
    return "trap: " + cause.removeprefix("wasm trap: ")


def _instantiation_reason(
    exc: wasmtime.WasmtimeError, request: ExecutionRequest, *, started_module: bool
) -> tuple[str, StopReason | None]:
    text = str(exc)
    if "memory minimum size" in text or "exceeds memory limits" in text:
        reason = f"memory limit: the module needs more than memory_limit={request.memory_limit} bytes to start"
        return reason, StopReason.MEMORY
    where = "run" if started_module else "instantiation"
    return f"{where} failed: {_first_line(exc)}", None


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"
