"""A resumable watcher of the market's events: bounded ``eth_getLogs`` ranges from a persisted cursor.

The cursor is the last block whose events were fully handled. Each
:meth:`EventWatcher.poll` reads the next range after it (at most ``max_range``
blocks, never past ``head - confirmations``) and returns an :class:`EventBatch`;
the cursor moves only when the caller commits that batch, after handling it.

Delivery is therefore *at least once*: a crash between handling and committing
delivers the batch again on restart, and a batch that is not committed is
delivered again by the next poll. Handlers must be idempotent on
:attr:`MarketEvent.key` ``(tx_hash, log_index)``; :class:`SeenKeys` drops repeats
within one process. Events are hints: before acting, re-read the job from the
contract, which is the truth.

Confirmations guard against reorgs shallower than their number; the watcher does
not detect deeper ones.

Example:
    >>> watcher = EventWatcher(market=market, cursor=FileCursor(path=state_dir / "cursor"),
    ...                        confirmations=2)
    >>> seen = SeenKeys()
    >>> while running:
    ...     batch = watcher.poll()
    ...     for event in batch.events:
    ...         if seen.add(event.key):
    ...             handle(event)
    ...     batch.commit()
    ...     if batch.caught_up:
    ...         time.sleep(1.0)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from web3.exceptions import Web3RPCError

from chain_scheduler import errors
from chain_scheduler._market import Market, MarketEvent
from chain_scheduler._rpc import rpc_call

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How nodes and hosted RPC services word "this eth_getLogs range is too large":
#: geth/BSC ("exceed maximum block range"), reth ("query exceeds max block range"),
#: Erigon/Cloudflare ("block range too large"), Infura ("query returned more than
#: 10000 results", code -32005), Alchemy ("Log response size exceeded").
_RANGE_TOO_LARGE = re.compile(
    r"block range|max(imum)? (block )?range|range (is )?too (large|big|wide)|too many (blocks|logs|results)"
    r"|returned more than|response size|limit exceeded",
    re.IGNORECASE,
)
_LIMIT_EXCEEDED = -32005


@runtime_checkable
class CursorStore(Protocol):
    """Where a watcher keeps the last block it has fully handled."""

    def load(self) -> int | None:
        """The last handled block, or None when nothing was handled yet."""
        ...

    def save(self, block: int) -> None:
        """Record ``block`` as handled, durably before returning."""
        ...


class MemoryCursor:
    """A cursor in memory (tests, and watchers that may rescan after a restart).

    Args:
        block: The starting value (None: nothing handled yet).
    """

    def __init__(self, *, block: int | None = None) -> None:
        self._block = block

    def load(self) -> int | None:
        return self._block

    def save(self, block: int) -> None:
        self._block = int(block)

    def __repr__(self) -> str:
        return f"MemoryCursor(block={self._block})"


class FileCursor:
    """A cursor in a small text file, replaced atomically on every save.

    The new value is written to a temporary file in the same directory, flushed to
    disk, then renamed over the old file, so a crash leaves either the old or the
    new value, never a torn one.

    Args:
        path: The cursor file; its directory is created on the first save.
    """

    def __init__(self, *, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.ChainSchedulerError(
                f"Cannot read the event cursor {self.path}: {exc}. Fix or delete it (deleting rescans from the start)."
            ) from exc
        if not text.isdigit():
            raise errors.ChainSchedulerError(
                f"The event cursor {self.path} holds {text[:40]!r}, not a block number. "
                "Delete it to rescan from the start block."
            )
        return int(text)

    def save(self, block: int) -> None:
        if block < 0:
            raise ValueError(f"a cursor block is >= 0, got {block}")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(f"{int(block)}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(directory)

    def __repr__(self) -> str:
        return f"FileCursor(path={str(self.path)!r})"


class EventBatch:
    """The events of one block range, to handle and then :meth:`commit`.

    Attributes:
        events: Decoded events in chain order (block, then log index).
        from_block: First block of the range.
        to_block: Last block of the range (``from_block - 1`` when there was nothing
            new to read).
        head: The highest block the watcher may read now (``head - confirmations``).
        rewound_from: When the cursor was ahead of the chain (the chain was restored
            from older state, or reset) and was moved back to the head: where it was.
            Whatever the caller learned from the lost blocks may no longer be true.
    """

    __slots__ = ("_committed", "_watcher", "events", "from_block", "head", "rewound_from", "to_block")

    def __init__(
        self,
        *,
        watcher: EventWatcher,
        events: list[MarketEvent],
        from_block: int,
        to_block: int,
        head: int,
        rewound_from: int | None = None,
    ) -> None:
        self._watcher = watcher
        self.events = events
        self.from_block = from_block
        self.to_block = to_block
        self.head = head
        self.rewound_from = rewound_from
        self._committed = False

    @property
    def empty_range(self) -> bool:
        """True when no block was read (the watcher is at the head)."""
        return self.to_block < self.from_block

    @property
    def caught_up(self) -> bool:
        """True when this batch reaches the readable head: sleep before polling again."""
        return self.to_block >= self.head

    @property
    def committed(self) -> bool:
        return self._committed

    def commit(self) -> None:
        """Record the batch's blocks as handled; call it after handling every event.

        Idempotent. A batch that no longer follows the cursor (another batch of the
        same range was committed first) is ignored.
        """
        if self._committed:
            return
        self._watcher._commit(self)
        self._committed = True

    def __repr__(self) -> str:
        return f"EventBatch(blocks {self.from_block}..{self.to_block}, {len(self.events)} events, head {self.head})"


class EventWatcher:
    """Reads the market's events in bounded block ranges from a persisted cursor.

    Args:
        market: The contract binding whose events are read.
        cursor: Where the last handled block is kept.
        start_block: First block to read when the cursor is empty (the contract's
            deployment block saves scanning history before it).
        confirmations: Blocks to stay behind the head, so shallow reorgs never
            reach a handler.
        max_range: Most blocks per ``eth_getLogs`` call. Halved, and kept lower,
            whenever the node answers that a range is too large.
        names: Only these events (None: every event of the contract).
        rewind_depth: Blocks below the head read again when the cursor is found ahead of
            the chain: a chain restored from older state may have mined new blocks at
            heights the cursor had passed before the watcher looked.
    """

    def __init__(
        self,
        *,
        market: Market,
        cursor: CursorStore,
        start_block: int = 0,
        confirmations: int = 0,
        max_range: int = 2000,
        names: Sequence[str] | None = None,
        rewind_depth: int = 256,
    ) -> None:
        if start_block < 0 or confirmations < 0 or rewind_depth < 0:
            raise ValueError("start_block, confirmations and rewind_depth must be >= 0")
        if max_range < 1:
            raise ValueError(f"max_range must be >= 1, got {max_range}")
        self.market = market
        self.cursor = cursor
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_range = max_range
        self.names = tuple(names) if names else None
        self.rewind_depth = rewind_depth

    def next_block(self) -> int:
        """The first block the next poll reads."""
        last = self.cursor.load()
        return self.start_block if last is None else max(last + 1, self.start_block)

    def poll(self, head: int | None = None) -> EventBatch:
        """Read the events of the next block range after the cursor.

        Returns a batch even when there is nothing new (``empty_range``). The
        cursor does not move until the batch is committed: polling again without
        committing returns the same range.

        Args:
            head: The chain's latest block number when the caller just read it (saves
                one request per poll); None asks the node.

        Raises:
            ChainUnavailable: the node cannot be reached, or refuses even a
                one-block range; the cursor is unchanged.
        """
        first = self.next_block()
        if head is None:
            head = self._call(lambda: int(self.market.w3.eth.block_number))
        head -= self.confirmations
        rewound = None
        if first > head:
            last = self.cursor.load()
            if last is not None and last > head + self.confirmations:
                # The chain lost blocks we handled (restored from older state, or reset), and
                # may have mined new ones at heights we had passed: read the last
                # rewind_depth blocks again, and tell the caller.
                rewound = last
                self.cursor.save(max(head - self.rewind_depth, self.start_block - 1, -1))
                first = self.next_block()
                logger.warning(
                    "event cursor at block %d is ahead of the chain head %d: the chain lost blocks "
                    "(restored from older state or reset); reading on from block %d",
                    last,
                    head + self.confirmations,
                    first,
                )
            if rewound is None or first > head:
                return EventBatch(
                    watcher=self, events=[], from_block=first, to_block=first - 1, head=head, rewound_from=rewound
                )
        while True:
            last = min(first + self.max_range - 1, head)
            try:
                events = self.market.events(from_block=first, to_block=last, names=self.names)
            except (Web3RPCError, ValueError) as exc:
                if not _is_range_error(exc):
                    raise
                if last == first:
                    raise errors.ChainUnavailable(
                        f"The node refuses eth_getLogs even for block {first} alone ({exc}); "
                        "use a node that serves logs."
                    ) from exc
                self.max_range = max(1, (last - first + 1) // 2)
                logger.warning(
                    "node refused eth_getLogs over blocks %d..%d (%s); retrying with max_range=%d",
                    first,
                    last,
                    exc,
                    self.max_range,
                )
                continue
            events.sort(key=lambda e: (e.block_number, e.log_index))
            logger.debug("read blocks %d..%d: %d events (head %d)", first, last, len(events), head)
            return EventBatch(
                watcher=self, events=events, from_block=first, to_block=last, head=head, rewound_from=rewound
            )

    def rewind(self, block: int) -> None:
        """Read again from the block after ``block`` (a reorg or a restored chain replaced later blocks)."""
        last = self.cursor.load()
        target = max(block, self.start_block - 1)
        if last is not None and last > target:
            self.cursor.save(target)
            logger.warning("event cursor rewound from block %d to %d: the chain replaced later blocks", last, target)

    def _commit(self, batch: EventBatch) -> None:
        if batch.empty_range:
            return
        if self.next_block() != batch.from_block:
            logger.debug("not committing %r: the cursor has moved since it was read", batch)
            return
        self.cursor.save(batch.to_block)

    def _call(self, call: Callable[[], T]) -> T:
        return rpc_call(call)


class SeenKeys:
    """A bounded memory of recently handled event keys (least recently seen dropped first).

    Args:
        maxsize: Keys remembered.

    Example:
        >>> seen = SeenKeys(maxsize=10_000)
        >>> seen.add(event.key)   # True the first time, False for a repeat
        True
    """

    def __init__(self, *, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; True when it was not seen (or was forgotten) before."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.maxsize:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


def _is_range_error(exc: Exception) -> bool:
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict):
            if error.get("code") == _LIMIT_EXCEEDED:
                return True
            return bool(_RANGE_TOO_LARGE.search(str(error.get("message", ""))))
    return bool(_RANGE_TOO_LARGE.search(str(exc)))


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
