"""SQLite persistence: every acknowledged change is committed before its reply leaves.

The engine hands over changed records as (kind, key, record); they are kept as msgpack blobs
in one table, so a new kind of record needs no new table. The event log and the replies of
mutating requests (for safe retries by ``request_id``) go into the same transaction, so
after a crash the state, the events that announced it and the replies that acknowledged it
agree. One transaction per server wake-up (group commit) keeps this cheap.

A state file belongs to one daemon: a second one on the same file would have every write
fail, so it is refused at the start (a lock on ``<state>.lock``, which holds the owner's
PID). A record the daemon cannot read back is refused too, by name, before anything is
written: starting without it would drop someone's reservation unannounced.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import msgpack

SCHEMA_VERSION = 3

REPLIES_V3 = """
CREATE TABLE replies (user TEXT, request_id TEXT, ts REAL, digest BLOB, data BLOB,
    PRIMARY KEY (user, request_id)) WITHOUT ROWID;
"""

AUDIT = """
CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts REAL, user TEXT, data BLOB);
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_user ON audit (user, seq);
CREATE TABLE audit_ids (id TEXT, seq INTEGER, PRIMARY KEY (id, seq)) WITHOUT ROWID;
CREATE INDEX audit_ids_seq ON audit_ids (seq);
"""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE records (kind TEXT, key TEXT, data BLOB, PRIMARY KEY (kind, key))
    WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY, data BLOB);
""" + REPLIES_V3 + AUDIT


def _create(db: sqlite3.Connection, script: str) -> None:
    """Statement by statement: executescript would commit the migration's transaction."""
    for statement in filter(str.strip, script.split(";")):
        db.execute(statement)


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Version 1 kept no reply cache; version 2 adds it (safe retries across restarts)."""
    db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, ts REAL, data BLOB) WITHOUT ROWID")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Version 3 keys replies by (user, request_id) instead of one joined string (which
    two users could share), keeps a digest of each request, and adds the audit trail."""
    db.execute("ALTER TABLE replies RENAME TO replies_v2")
    _create(db, REPLIES_V3)
    rows = db.execute("SELECT key, ts, data FROM replies_v2").fetchall()
    db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, NULL, ?)",
                   [(*key.split("\0", 1), ts, data) for key, ts, data in rows if "\0" in key])
    db.execute("DROP TABLE replies_v2")
    _create(db, AUDIT)


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}
VACUUM_PAGES = 2000    # pages (4 KiB) given back per incremental_vacuum: a few ms at most
AUTO_VACUUM_INCREMENTAL = 2


class StoreError(Exception):
    """The state file cannot be used; the message says why and what to do."""


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def schema_version(path: Path, db: sqlite3.Connection) -> int | None:
    """The file's schema version; None for an empty file (a new state). Raises StoreError
    for a file that is not ours or is newer than this atsd."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    if "meta" not in tables or "records" not in tables:
        raise StoreError(f"{path}: not an atsd state file (tables: "
                         f"{', '.join(sorted(tables))}); it was left as it is")
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = row[0] if row else None
    if not isinstance(version, int):
        raise StoreError(f"{path}: state file has no schema version; left as it is")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: state file schema {version} is newer than this "
                         f"atsd's ({SCHEMA_VERSION}); upgrade atsd. The file was left "
                         "as it is")
    return version


def last_seq(db: sqlite3.Connection) -> int:
    """The newest event's seq: trimming keeps the newest, so it is always in the table
    (files written before this, and restored backups, keep it in meta as well)."""
    return db.execute(
        "SELECT max(COALESCE((SELECT max(seq) FROM events), 0),"
        " COALESCE((SELECT value FROM meta WHERE key='last_seq'), 0))").fetchone()[0]


def take_lock(path: Path):
    """Hold ``<state>.lock`` for as long as this daemon runs (the kernel lets go when it
    dies, however it dies), with our PID in it for whoever finds it taken."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        f = open(lock_path, "a+")
    except OSError as exc:
        raise StoreError(f"{lock_path}: cannot open the state file's lock "
                         f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read(32).strip() or "unknown"
        f.close()
        raise StoreError(f"{path}: in use by another atsd (PID {holder}, lock "
                         f"{lock_path}); stop it, or give this one another state file") \
            from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Store:
    def __init__(self, path: Path | str, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = take_lock(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise StoreError(f"{self.path}: not a usable atsd state file ({exc}); "
                             "it was left as it is") from None
        except StoreError:
            self._lock.close()
            raise

    def _check_schema(self) -> None:
        """Refuse a file we cannot use before writing a byte to it (switching to WAL would)."""
        # a damaged page would otherwise surface only when the records are read, after a
        # migration has already written to the file
        problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise StoreError(f"{self.path}: damaged state file ({' '.join(problem.split())}); "
                             "it was left as it is")
        version = schema_version(self.path, self.db)
        if version is None:       # before anything is written: a new file starts incremental
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit is in the OS before the reply, so a killed
        # or crashed daemon loses nothing; FULL also fsyncs each commit (power loss).
        self.db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        if version is None:
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            return
        self.db.execute("BEGIN IMMEDIATE")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](self.db)
            version += 1
        self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
        self.db.execute("COMMIT")
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            # a file from before incremental vacuum: switching takes one full VACUUM
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("VACUUM")

    def vacuum_some(self) -> None:
        """Give back up to VACUUM_PAGES free pages, so the file shrinks after a busy spell
        instead of staying at its high-water mark. (``executescript`` runs the pragma to
        the end; ``execute`` would free one page.)"""
        self.db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")

    def size(self) -> dict:
        """The file's size as SQLite sees it, and how much of it is free pages."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        wal = self.path.with_name(self.path.name + "-wal")
        return {"bytes": page * pages, "free_bytes": page * free,
                "wal_bytes": wal.stat().st_size if wal.exists() else 0}

    @contextmanager
    def records(self) -> Iterator[dict[str, Iterator[dict]]]:
        """Records by kind, each read lazily so a large calendar is never held twice. A
        record that fails to unpack, or that its reader (the engine) fails on inside the
        ``with``, stops the start with a StoreError naming it."""
        reading = ["", ""]

        def rows(kind: str) -> Iterator[dict]:
            for key, data in self.db.execute("SELECT key, data FROM records WHERE kind=?",
                                             (kind,)):
                reading[:] = kind, key
                yield _unpack_stored(data)
        kinds = [k for (k,) in self.db.execute("SELECT DISTINCT kind FROM records")]
        try:
            yield {kind: rows(kind) for kind in kinds}
        except RECORD_ERRORS as exc:
            kind, key = reading
            raise StoreError(f"{self.path}: damaged record in table records, kind {kind!r}, "
                             f"key {str(key)[:100]!r}: {_why(exc)}; it was left as it is") from None

    def load_record(self, kind: str, key: str) -> dict | None:
        row = self.db.execute("SELECT data FROM records WHERE kind=? AND key=?",
                              (kind, key)).fetchone()
        return None if row is None else unpack(row[0])

    def load_events(self, limit: int) -> list[dict]:
        rows = self.db.execute("SELECT seq, data FROM events ORDER BY seq DESC LIMIT ?",
                               (limit,))
        return unpack_events(self.path, reversed(rows.fetchall()))

    def last_seq(self) -> int:
        return last_seq(self.db)

    def load_replies(self, since: float) -> list[tuple[str, str, float, bytes | None, bytes]]:
        """(user, request_id, ts, digest, data) rows, oldest first."""
        return self.db.execute("SELECT user, request_id, ts, digest, data FROM replies"
                               " WHERE ts >= ? ORDER BY ts", (since,)).fetchall()

    def last_audit_seq(self) -> int:
        return self.db.execute("SELECT COALESCE(max(seq), 0) FROM audit").fetchone()[0]

    def audit(self, since: float | None, until: float | None, actor: str | None,
              resource: str | None, limit: int) -> list[dict]:
        """Audit entries in [since, until), oldest first; by ``actor`` and touching the id
        ``resource`` when given."""
        where, params = [], []
        if resource is not None:
            where.append("seq IN (SELECT seq FROM audit_ids WHERE id = ?)")
            params.append(resource)
        for clause, value in (("ts >= ?", since), ("ts < ?", until), ("user = ?", actor)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = ("SELECT data FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq LIMIT ?")
        return [unpack(d) for (d,) in self.db.execute(sql, (*params, limit))]

    def commit(self, records: list[tuple[str, str, dict | None]], events: list[dict],
               replies: list[tuple[str, str, float, bytes | None, bytes]], keep_events: int,
               forget_replies_before: float | None = None, *,
               dropped_replies: list[tuple[str, str]] = (), audit: list[dict] = (),
               trim_audit: tuple[float, int] | None = None) -> None:
        """Write one group of changes atomically; raises sqlite3.Error and rolls back.
        ``trim_audit`` is (oldest time kept, most entries kept)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            upserts = [(k, key, pack(rec)) for k, key, rec in records if rec is not None]
            deletes = [(k, key) for k, key, rec in records if rec is None]
            if upserts:
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", upserts)
            if deletes:
                db.executemany("DELETE FROM records WHERE kind=? AND key=?", deletes)
            if events:
                db.executemany("INSERT INTO events VALUES (?, ?)",
                               [(e["seq"], pack(e)) for e in events])
                last = events[-1]["seq"]
                if last % 1000 < len(events):   # trim now and then, not on every commit
                    db.execute("DELETE FROM events WHERE seq <= ?", (last - keep_events,))
            if replies:
                db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)", replies)
            if dropped_replies:
                db.executemany("DELETE FROM replies WHERE user=? AND request_id=?",
                               dropped_replies)
            if forget_replies_before is not None:
                db.execute("DELETE FROM replies WHERE ts < ?", (forget_replies_before,))
            if audit:
                db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?)",
                               [(a["seq"], a["time"], a["user"], pack(a)) for a in audit])
                db.executemany("INSERT OR IGNORE INTO audit_ids VALUES (?, ?)",
                               [(i, a["seq"]) for a in audit for i in a["ids"]])
            if trim_audit is not None:
                self._trim_audit(*trim_audit)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # the server awaits these, as it must PostgreSQL's (store_pg.py); SQLite's return at once

    async def write(self, *args, **kw) -> None:
        self.commit(*args, **kw)

    async def read_audit(self, *args) -> list[dict]:
        return self.audit(*args)

    def _trim_audit(self, oldest: float, keep: int) -> None:
        db = self.db
        row = db.execute("SELECT seq FROM audit WHERE ts >= ? ORDER BY ts LIMIT 1",
                         (oldest,)).fetchone()
        last = db.execute("SELECT COALESCE(max(seq), 0) FROM audit").fetchone()[0]
        first = max(row[0] if row else last + 1, last - keep + 1)
        db.execute("DELETE FROM audit WHERE seq < ?", (first,))
        db.execute("DELETE FROM audit_ids WHERE seq < ?", (first,))

    def close(self) -> None:
        self.db.close()
        self._lock.close()


# what the engine raises on a record it cannot read back: a missing field, a field of the
# wrong type or shape (and NotMsgpack, a ValueError, for one that does not unpack)
RECORD_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError)


class NotMsgpack(ValueError):
    """A stored blob that does not even unpack."""


def _unpack_stored(data: bytes):
    try:
        return unpack(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise NotMsgpack(f"not valid msgpack ({_detail(exc)})") from None


def unpack_events(store_name, rows) -> list[dict]:
    """Stored events from (seq, blob) rows; one that does not unpack stops the start,
    named by its seq, since subscribers would otherwise miss it without a gap to see."""
    events = []
    for seq, data in rows:
        try:
            events.append(_unpack_stored(data))
        except NotMsgpack as exc:
            raise StoreError(f"{store_name}: damaged record in table events, seq {seq}: "
                             f"{_why(exc)}; it was left as it is") from None
    return events


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {str(exc.args[0])[:100]!r}"
    return str(exc) if isinstance(exc, NotMsgpack) else _detail(exc)


def _detail(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
