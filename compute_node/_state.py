"""The provider node's durable state: one SQLite file in WAL mode.

Everything the node needs after a crash lives here, written *before* the
transaction that depends on it:

- the event cursor (the last block fully handled) and the keys of handled
  events, so the watcher resumes without missing or repeating work;
- the jobs in flight, with the seed, the salt and the result, so a node killed
  between commit and reveal can still reveal;
- the journal of signed transactions (:class:`chain_scheduler.TxJournal`), so a
  transaction signed but not yet broadcast is sent after a restart;
- the jobs the node must come back to without holding a slot in them
  (:class:`Watch`): bids put off while it was busy, children waiting for their
  parents, rounds it left unfilled, and other clients' jobs whose deadlines it
  keeps as a keeper. The event cursor passes their events once, so they must be
  on disk, not in memory.

One daemon per state file: :meth:`NodeState.open` takes an exclusive lock on
``<file>.lock`` (held until :meth:`close` or the process dies, so ``kill -9``
releases it) and a second daemon is refused with :class:`StateLocked`.

Every write is one SQLite transaction with ``synchronous=FULL``: when a method
returns, the row is on disk and survives ``kill -9`` (and a power cut).

Example:
    >>> with NodeState(Path("node/state.db")) as state:
    ...     state.upsert(JobRecord(job_id=JobId(7), phase=JobPhase.BIDDING))
    ...     state.in_flight()
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from chain_scheduler import JobId, PendingTx

logger = logging.getLogger(__name__)


class StateError(Exception):
    """The state file cannot be used (not opened, or written by a newer version)."""


class StateLocked(StateError):
    """Another process (a second daemon) has the state file open."""


class WatchKind(enum.StrEnum):
    """Why the node comes back to a job it holds no slot in."""

    DEFER = "defer"  # wanted to bid but was busy: bid when capacity frees
    PARENTS = "parents"  # the job waits for its parents to finalize
    LEFT = "left"  # the node left a round that did not fill: bid again when another provider joins
    KEEP = "keep"  # another client's job: time it out when its phase deadline passes
    DRAW = "draw"  # a draw is armed (audit decision, audit or verifier seats): carry it out


@dataclass(frozen=True, slots=True)
class Watch:
    """A job the node must come back to.

    Attributes:
        job_id: The job.
        kind: Why.
        round: The round it would bid in (DEFER, PARENTS, LEFT), or the draw is for (DRAW).
        deadline: The job's phase deadline (KEEP; chain seconds), or None.
        count: How many times the node left the job's round (LEFT); the block whose hash the
            pending draw uses (DRAW).
    """

    job_id: JobId
    kind: WatchKind
    round: int = 0
    deadline: int | None = None
    count: int = 0


class JobPhase(enum.StrEnum):
    """Where this node is in a job, from its own point of view."""

    BIDDING = "bidding"  # bid sent, slot not confirmed yet
    ENTERED = "entered"  # entered a lottery job's draw: a slot comes only if drawn
    ASSIGNED = "assigned"  # holds a slot; waiting for bidding to close (seed)
    RUNNING = "running"  # executing; the result (and salt) is recorded before commit
    COMMITTED = "committed"  # commitment on chain; reveal next
    REVEALED = "revealed"  # reveal on chain; waiting for the tally and payout
    SETTLED = "settled"  # done: paid or slashed, nothing more to send
    ABANDONED = "abandoned"  # given up (declined, lost the slot, failed); see error


#: Phases after which the node has nothing more to do for a job.
FINAL_PHASES = frozenset({JobPhase.SETTLED, JobPhase.ABANDONED})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job this node takes part in.

    Attributes:
        job_id: The job.
        phase: Where the node is in it.
        slot: The slot index the node holds (None until assigned).
        round: The job's round when the slot was taken.
        terms_digest: The digest of the job's terms when the node took part: after a
            chain restore or reorg the same id may name another job.
        seed: The job's shared seed (set when bidding closes).
        salt: The commitment salt; recorded with the result before the commit is sent.
        result_cid: CID of outputs plus receipt.
        usage: Units of work to reveal.
        receipt_cid: CID of the metering receipt.
        error: Why the job was abandoned or failed, for the log and status.
        updated_at: Unix time of the last write (set by :meth:`NodeState.upsert`).
    """

    job_id: JobId
    phase: JobPhase
    slot: int | None = None
    round: int = 0
    terms_digest: bytes | None = None
    seed: bytes | None = None
    salt: bytes | None = None
    result_cid: str | None = None
    usage: int | None = None
    receipt_cid: str | None = None
    error: str | None = None
    updated_at: float = 0.0

    @property
    def in_flight(self) -> bool:
        return self.phase not in FINAL_PHASES


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One signed transaction in the journal, pending or settled.

    Attributes:
        nonce, tx_hash, raw_tx, label: As recorded.
        status: None while pending; else 1 (mined), 0 (reverted) or -1 (dropped).
        mined_hash: The hash that settled the nonce (maybe a replacement of this one).
        recorded_at: Unix time it was recorded.
    """

    nonce: int
    tx_hash: str
    raw_tx: bytes
    label: str
    status: int | None
    mined_hash: str | None
    recorded_at: float


#: Schema migrations, applied in order; the index + 1 is the schema version.
#: Never edit a released entry: append a new one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            block INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE handled_events (
            tx_hash TEXT NOT NULL,
            log_index INTEGER NOT NULL,
            block INTEGER,
            handled_at REAL NOT NULL,
            PRIMARY KEY (tx_hash, log_index)
        ) WITHOUT ROWID""",
        "CREATE INDEX handled_events_block ON handled_events (block)",
        """CREATE TABLE jobs (
            job_id INTEGER PRIMARY KEY,
            phase TEXT NOT NULL,
            slot INTEGER,
            round INTEGER NOT NULL DEFAULT 0,
            seed BLOB,
            salt BLOB,
            result_cid TEXT,
            usage INTEGER,
            receipt_cid TEXT,
            error TEXT,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_phase ON jobs (phase)",
        """CREATE TABLE tx_journal (
            tx_hash TEXT PRIMARY KEY,
            nonce INTEGER NOT NULL,
            raw_tx BLOB NOT NULL,
            label TEXT NOT NULL,
            recorded_at REAL NOT NULL,
            status INTEGER,
            mined_hash TEXT,
            settled_at REAL
        )""",
        "CREATE INDEX tx_journal_pending ON tx_journal (nonce) WHERE status IS NULL",
    ),
    (
        "ALTER TABLE jobs ADD COLUMN terms_digest BLOB",
        """CREATE TABLE watched (
            job_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            round INTEGER NOT NULL DEFAULT 0,
            deadline INTEGER,
            count INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, kind)
        ) WITHOUT ROWID""",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_JOB_COLUMNS = "job_id, phase, slot, round, seed, salt, result_cid, usage, receipt_cid, error, updated_at, terms_digest"


class NodeState:
    """The node's SQLite state file: cursor, handled events, jobs, transaction journal.

    Serves as the watcher's cursor store (:meth:`load`, :meth:`save`) and as the
    transaction sender's :class:`chain_scheduler.TxJournal` (:meth:`record`,
    :meth:`settled`, :meth:`pending`). Safe to share between threads.

    Args:
        path: The database file (created with its folder on :meth:`open`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------- lifecycle

    def open(self) -> NodeState:
        """Open (or create) the file and bring its schema up to date."""
        with self._lock:
            if self._db is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            try:
                self._db = self._connect()
                self._migrate()
            except BaseException:
                self.close()
                raise
            logger.debug("state %s open (schema %d)", self.path, SCHEMA_VERSION)
            return self

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local filesystem.")
            # FULL: each commit fsyncs the WAL, so a returned write survives kill -9 and power loss.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        return db

    def _take_lock(self) -> None:
        """Hold ``<file>.lock`` exclusively: one daemon per state file (the kernel frees it on exit)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"{self.path} is in use by another process (pid {holder}): one compute-node per state "
                "directory. Stop the other daemon, or give this one its own --state."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> NodeState:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        rows = self._query("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"NodeState({self.path}) is not open: call open() or use it in a with block.")
        return self._db

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one read, under the lock so no thread sees another's open write."""
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (committed, and fsynced, on exit)."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self) -> None:
        db = self._conn()
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {current}, newer than this compute-node knows "
                f"({SCHEMA_VERSION}). Upgrade compute-node, or point it at another state file."
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self._write() as tx:
                for statement in _MIGRATIONS[version - 1]:
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, time.time()))
            logger.info("state %s migrated to schema %d", self.path, version)

    # ---------------------------------------------------------------- cursor

    def load(self) -> int | None:
        """The last block fully handled, or None before the first save."""
        rows = self._query("SELECT block FROM cursor WHERE id = 1")
        return int(rows[0][0]) if rows else None

    def save(self, block: int) -> None:
        """Record that every event up to ``block`` (inclusive) is handled."""
        with self._write() as tx:
            tx.execute(
                "INSERT INTO cursor (id, block, updated_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET block = excluded.block, updated_at = excluded.updated_at",
                (int(block), time.time()),
            )

    # -------------------------------------------------------- handled events

    def is_handled(self, tx_hash: str, log_index: int) -> bool:
        """Whether the event at (tx hash, log index) was already handled."""
        sql = "SELECT 1 FROM handled_events WHERE tx_hash = ? AND log_index = ?"
        return bool(self._query(sql, (tx_hash.lower(), int(log_index))))

    def mark_handled(self, tx_hash: str, log_index: int, *, block: int | None = None) -> bool:
        """Remember an event as handled; False when it already was."""
        with self._write() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO handled_events (tx_hash, log_index, block, handled_at) VALUES (?, ?, ?, ?)",
                (tx_hash.lower(), int(log_index), block, time.time()),
            )
            return cur.rowcount == 1

    def forget_handled_before(self, block: int) -> int:
        """Drop handled-event keys of blocks before ``block`` (the cursor is past them).

        Returns:
            How many keys were dropped.
        """
        with self._write() as tx:
            return tx.execute("DELETE FROM handled_events WHERE block < ?", (int(block),)).rowcount

    # ------------------------------------------------------------------ jobs

    def upsert(self, record: JobRecord) -> JobRecord:
        """Write a job's record (insert or replace) in one durable transaction.

        Write salt and result together here *before* sending the commit: after a
        crash the node reveals from this row.

        Returns:
            The record as stored (with ``updated_at`` set).
        """
        stored = replace(record, updated_at=time.time())
        with self._write() as tx:
            tx.execute(
                f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    int(stored.job_id),
                    stored.phase.value,
                    stored.slot,
                    int(stored.round),
                    stored.seed,
                    stored.salt,
                    stored.result_cid,
                    stored.usage,
                    stored.receipt_cid,
                    stored.error,
                    stored.updated_at,
                    stored.terms_digest,
                ),
            )
        return stored

    def get(self, job_id: int) -> JobRecord | None:
        """The job's record, or None when this node never took part in it."""
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (int(job_id),))
        return _job(rows[0]) if rows else None

    def in_flight(self) -> list[JobRecord]:
        """Jobs not yet settled or abandoned, oldest job first."""
        finals = tuple(p.value for p in FINAL_PHASES)
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE phase NOT IN ({', '.join('?' * len(finals))}) ORDER BY job_id",
            finals,
        )
        return [_job(row) for row in rows]

    def jobs(self) -> list[JobRecord]:
        """Every job this node has a record of, oldest first."""
        return [_job(row) for row in self._query(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY job_id")]

    # --------------------------------------------------------------- watched

    def watch(self, *watches: Watch) -> None:
        """Remember jobs to come back to (insert or replace), in one durable write."""
        if not watches:
            return
        now = time.time()
        with self._write() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO watched (job_id, kind, round, deadline, count, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(int(w.job_id), w.kind.value, int(w.round), w.deadline, int(w.count), now) for w in watches],
            )

    def unwatch(self, *keys: tuple[int, WatchKind]) -> None:
        """Forget (job, kind) pairs; unknown ones are ignored."""
        if not keys:
            return
        with self._write() as tx:
            tx.executemany("DELETE FROM watched WHERE job_id = ? AND kind = ?", [(int(j), k.value) for j, k in keys])

    def watched(self, kind: WatchKind | None = None) -> list[Watch]:
        """The jobs to come back to (of one kind), oldest job first."""
        query = "SELECT job_id, kind, round, deadline, count FROM watched"
        args: tuple[str, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            args = (kind.value,)
        return [
            Watch(job_id=JobId(int(j)), kind=WatchKind(k), round=int(r), deadline=None if d is None else int(d),
                  count=int(c))
            for j, k, r, d, c in self._query(query + " ORDER BY job_id", args)
        ]  # fmt: skip

    # ----------------------------------------------------- transaction journal

    def record(self, nonce: int, tx_hash: str, raw_tx: bytes, label: str) -> None:
        """Journal a signed transaction before it is broadcast (:class:`chain_scheduler.TxJournal`)."""
        with self._write() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO tx_journal (tx_hash, nonce, raw_tx, label, recorded_at) VALUES (?, ?, ?, ?, ?)",
                (tx_hash.lower(), int(nonce), bytes(raw_tx), label, time.time()),
            )

    def settled(self, nonce: int, tx_hash: str, status: int) -> None:
        """Close every still-pending transaction of ``nonce``: ``tx_hash`` settled it."""
        with self._write() as tx:
            tx.execute(
                "UPDATE tx_journal SET status = ?, mined_hash = ?, settled_at = ? WHERE nonce = ? AND status IS NULL",
                (int(status), tx_hash.lower(), time.time(), int(nonce)),
            )

    def pending(self) -> list[PendingTx]:
        """Transactions whose nonce is not settled, by nonce then in recording order."""
        rows = self._query(
            "SELECT nonce, tx_hash, raw_tx, label FROM tx_journal WHERE status IS NULL ORDER BY nonce, rowid"
        )
        return [PendingTx(nonce=int(n), tx_hash=str(h), raw_tx=bytes(r), label=str(label)) for n, h, r, label in rows]

    def journal(self, *, nonce: int | None = None) -> list[JournalEntry]:
        """The journal, pending and settled, optionally for one nonce (for status and audits)."""
        query = "SELECT nonce, tx_hash, raw_tx, label, status, mined_hash, recorded_at FROM tx_journal"
        args: tuple[int, ...] = ()
        if nonce is not None:
            query += " WHERE nonce = ?"
            args = (int(nonce),)
        rows = self._query(query + " ORDER BY nonce, rowid", args)
        return [
            JournalEntry(
                nonce=int(n),
                tx_hash=str(h),
                raw_tx=bytes(r),
                label=str(label),
                status=None if status is None else int(status),
                mined_hash=mined,
                recorded_at=float(at),
            )
            for n, h, r, label, status, mined, at in rows
        ]


def _job(row: Any) -> JobRecord:
    job_id, phase, slot, round_, seed, salt, result_cid, usage, receipt_cid, error, updated_at, digest = row
    return JobRecord(
        job_id=JobId(int(job_id)),
        phase=JobPhase(phase),
        slot=None if slot is None else int(slot),
        round=int(round_),
        seed=None if seed is None else bytes(seed),
        salt=None if salt is None else bytes(salt),
        result_cid=None if result_cid is None else str(result_cid),
        usage=None if usage is None else int(usage),
        receipt_cid=None if receipt_cid is None else str(receipt_cid),
        error=None if error is None else str(error),
        updated_at=float(updated_at),
        terms_digest=None if digest is None else bytes(digest),
    )
