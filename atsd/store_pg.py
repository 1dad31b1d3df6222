"""PostgreSQL persistence: the same promises as store.py's SQLite file, for several atsd.

Tables and transactions mirror store.py (records as msgpack blobs, the event log, the reply
cache and the audit trail, one transaction per group), so a change is acknowledged only
once PostgreSQL has committed it. What PostgreSQL adds is the lead (atsd/leader.py): a
session-level advisory lock that one atsd holds; the leader's every commit runs on the very
session that holds it, so a leader whose session ended (and whose lock another atsd may
have taken since) cannot commit anything.

The driver is psycopg 3's AsyncConnection: commits and reads are awaited on the daemon's own
loop, which never blocks on the database. The state is read once, when this atsd takes the
lead, into a snapshot that the engine is built from as at a restart; the snapshot is
dropped once built.

The schema has a version, and ``schema_migrations`` lists the migrations applied; only the
leader (under the lock) creates or migrates it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from .store import (RECORD_ERRORS, StoreError, _unpack_stored, _why, pack, unpack,
                    unpack_events)

SCHEMA_VERSION = 1
LOCK_KEY = 0x61747364           # "atsd": the advisory lock whose holder leads
OP_TIMEOUT_S = 5.0              # a database that answers nothing for this long is lost
# TCP keepalives on both ends of the session: when the leader's host dies or is cut off,
# PostgreSQL ends its session (and lets go of the lock) about 4 s after its last word, so a
# standby leads within 5 s; an idle but live leader keeps its lock however long it is busy
# (building a large state, say). Over a Unix socket a dead peer is seen at once.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1,
             "keepalives_count": 2, "tcp_user_timeout": 3000}
SERVER_KEEPALIVE = ("SELECT set_config('tcp_keepalives_idle', '1', false),"
                    " set_config('tcp_keepalives_interval', '1', false),"
                    " set_config('tcp_keepalives_count', '3', false),"
                    " set_config('tcp_user_timeout', '4000', false)")
# the leader's session check gives up sooner (within 2.5 s of its last word): a cut-off
# leader has stopped answering before PostgreSQL lets another atsd take the lock
CHECK_TIMEOUT_S = 2.0

V1 = """
CREATE TABLE records (kind TEXT, key TEXT, data BYTEA NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE events (seq BIGINT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE replies (user_name TEXT, request_id TEXT, ts DOUBLE PRECISION NOT NULL,
    digest BYTEA, data BYTEA NOT NULL, PRIMARY KEY (user_name, request_id));
CREATE INDEX replies_ts ON replies (ts);
CREATE TABLE audit (seq BIGINT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, user_name TEXT,
    data BYTEA NOT NULL);
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_user ON audit (user_name, seq);
CREATE TABLE audit_ids (id TEXT, seq BIGINT, PRIMARY KEY (id, seq));
CREATE INDEX audit_ids_seq ON audit_ids (seq);
CREATE TABLE leader (id INTEGER PRIMARY KEY CHECK (id = 1), endpoint TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, since DOUBLE PRECISION NOT NULL)
"""

# version -> (what it does, the statements that bring the schema from version - 1 to it)
MIGRATIONS = {1: ("records, events, replies, audit and leader tables", V1)}

MIGRATIONS_TABLE = """
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION
    NOT NULL, description TEXT NOT NULL)
"""


def shown_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1]))


class SessionLost(Exception):
    """The session (and so the lock) is gone; only ``try_lead`` opens another."""


class Snapshot:
    """The state as the new leader read it, for the engine to be built from."""

    def __init__(self, records, events, replies, last_seq: int, last_audit_seq: int) -> None:
        self.records: dict[str, list[tuple[str, bytes]]] = records
        self.events: list[tuple[int, bytes]] = events       # oldest first
        self.replies = replies
        self.last_seq = last_seq
        self.last_audit_seq = last_audit_seq


EMPTY = Snapshot({}, [], [], 0, 0)


class PgStore:
    def __init__(self, url: str, event_log_size: int) -> None:
        self.url = url
        self.name = shown_url(url)
        self.event_log_size = event_log_size
        self.conn: psycopg.AsyncConnection | None = None
        self.snapshot = EMPTY
        self._busy = asyncio.Lock()      # one statement sequence at a time on the session
        self._size = {"bytes": 0, "free_bytes": 0, "wal_bytes": 0}

    # --- the session and the lead ---

    async def _op(self, work, connect: bool = False, timeout: float = OP_TIMEOUT_S):
        """Run ``work(conn)`` alone on the session, within ``timeout``. Whatever fails
        ends the session (and the lock with it): its state is not known any more. Only
        trying for the lead opens a new session: a write on any other than the one that
        took the lock would be a write without it."""
        async with self._busy:
            if self.conn is None and not connect:
                raise SessionLost("the database session that held the lead is gone")
            try:
                if self.conn is None:
                    self.conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=int(OP_TIMEOUT_S),
                        **KEEPALIVE)
                    await self.conn.execute(SERVER_KEEPALIVE)
                return await asyncio.wait_for(work(self.conn), timeout)
            except BaseException:
                await self._close()
                raise

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        self.snapshot = EMPTY
        if conn is not None:
            await conn.close()

    async def try_lead(self, endpoint: str) -> bool:
        """Take the lock if nobody holds it. Taken: the schema is made current, this atsd
        is named the leader and the state is read into ``snapshot``."""
        async def attempt(conn):
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            if not (await cur.fetchone())[0]:
                return False
            await self._migrate(conn)
            await conn.execute(
                "INSERT INTO leader VALUES (1, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
                " SET endpoint = EXCLUDED.endpoint, host = EXCLUDED.host, pid = EXCLUDED.pid,"
                " since = EXCLUDED.since", (endpoint, socket.gethostname(), os.getpid(),
                                            time.time()))
            self.snapshot = await self._read(conn)
            return True
        return await self._op(attempt, connect=True)

    async def leader(self) -> str | None:
        """The listen endpoint of the atsd that took the lead last, when one did."""
        async def read(conn):
            cur = await conn.execute("SELECT to_regclass('leader') IS NOT NULL")
            if not (await cur.fetchone())[0]:
                return None
            row = await (await conn.execute("SELECT endpoint FROM leader")).fetchone()
            return row and row[0]
        return await self._op(read, connect=True)

    async def check(self) -> None:
        """Raise unless the session (and so the lock) is still there; the database's size
        is learnt on the way, for get_stats."""
        async def size(conn):
            cur = await conn.execute("SELECT pg_database_size(current_database())")
            self._size = {"bytes": (await cur.fetchone())[0], "free_bytes": 0, "wal_bytes": 0}
        await self._op(size, timeout=CHECK_TIMEOUT_S)

    async def _migrate(self, conn) -> None:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        tables = {r[0] for r in await cur.fetchall()}
        if "schema_migrations" not in tables:
            if tables:
                raise StoreError(f"{self.name}: not an atsd database (tables: "
                                 f"{', '.join(sorted(tables))[:300]}); it was left as it is")
            await conn.execute(MIGRATIONS_TABLE)
            version = 0
        else:
            cur = await conn.execute("SELECT COALESCE(max(version), 0) FROM schema_migrations")
            version = (await cur.fetchone())[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.name}: database schema {version} is newer than this "
                             f"atsd's ({SCHEMA_VERSION}); upgrade atsd. The database was "
                             "left as it is")
        while version < SCHEMA_VERSION:
            version += 1
            description, script = MIGRATIONS[version]
            async with conn.transaction():
                for statement in filter(str.strip, script.split(";")):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                                   (version, time.time(), description))

    async def _read(self, conn) -> Snapshot:
        """Everything a restart reads, in one repeatable-read transaction."""
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            records = defaultdict(list)
            cur = await conn.execute("SELECT kind, key, data FROM records")
            async for kind, key, data in cur:
                records[kind].append((key, data))
            cur = await conn.execute("SELECT seq, data FROM events ORDER BY seq DESC LIMIT %s",
                                     (self.event_log_size,))
            events = (await cur.fetchall())[::-1]
            cur = await conn.execute("SELECT user_name, request_id, ts, digest, data"
                                     " FROM replies ORDER BY ts")
            replies = await cur.fetchall()
            cur = await conn.execute("SELECT COALESCE(max(seq), 0) FROM events")
            last_seq = (await cur.fetchone())[0]
            cur = await conn.execute("SELECT COALESCE(max(seq), 0) FROM audit")
            last_audit = (await cur.fetchone())[0]
        return Snapshot(dict(records), events, replies, last_seq, last_audit)

    # --- what a start reads (from the snapshot) ---

    @contextmanager
    def records(self) -> Iterator[dict[str, Iterator[dict]]]:
        """As Store.records: a record that fails to unpack, or that the engine fails on,
        stops the start with a StoreError naming it."""
        reading = ["", ""]

        def rows(kind: str) -> Iterator[dict]:
            for key, data in self.snapshot.records[kind]:
                reading[:] = kind, key
                yield _unpack_stored(data)
        try:
            yield {kind: rows(kind) for kind in self.snapshot.records}
        except RECORD_ERRORS as exc:
            kind, key = reading
            raise StoreError(f"{self.name}: damaged record in table records, kind {kind!r}, "
                             f"key {str(key)[:100]!r}: {_why(exc)}; it was left as it is") from None

    def load_events(self, limit: int) -> list[dict]:
        return unpack_events(self.name, self.snapshot.events[-limit:])

    def last_seq(self) -> int:
        return self.snapshot.last_seq

    def load_replies(self, since: float) -> list[tuple[str, str, float, bytes | None, bytes]]:
        return [tuple(r) for r in self.snapshot.replies if r[2] >= since]

    def last_audit_seq(self) -> int:
        return self.snapshot.last_audit_seq

    def built(self) -> None:
        """The engine has its state: the snapshot is let go."""
        self.snapshot = EMPTY

    # --- while leading ---

    def size(self) -> dict:
        """The database's size as of the last check (PostgreSQL's autovacuum reuses free
        space: there is no free-page count to report)."""
        return dict(self._size)

    def vacuum_some(self) -> None:
        """Nothing to do: autovacuum gives PostgreSQL's free space back."""

    async def read_audit(self, since: float | None, until: float | None, actor: str | None,
                    resource: str | None, limit: int) -> list[dict]:
        where, params = [], []
        if resource is not None:
            where.append("seq IN (SELECT seq FROM audit_ids WHERE id = %s)")
            params.append(resource)
        for clause, value in (("ts >= %s", since), ("ts < %s", until),
                              ("user_name = %s", actor)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = ("SELECT data FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq LIMIT %s")

        async def read(conn):
            cur = await conn.execute(sql, (*params, limit))
            return [unpack(d) for (d,) in await cur.fetchall()]
        return await self._op(read)

    async def write(self, records: list[tuple[str, str, dict | None]], events: list[dict],
                    replies: list[tuple[str, str, float, bytes | None, bytes]],
                    keep_events: int, forget_replies_before: float | None = None, *,
                    dropped_replies: list[tuple[str, str]] = (), audit: list[dict] = (),
                    trim_audit: tuple[float, int] | None = None) -> None:
        """As Store.commit, in one transaction on the session that holds the lock."""
        upserts = [(k, key, pack(rec)) for k, key, rec in records if rec is not None]
        deletes = [(k, key) for k, key, rec in records if rec is None]

        async def commit(conn):
            # one pipeline, one round trip: BEGIN, the whole group and COMMIT go out, and
            # their answers come back, at the pipeline's one Sync (psycopg's transaction()
            # syncs after BEGIN, after the block and again after COMMIT). BEGIN is said,
            # not left to the pipeline's implicit transaction, which any Sync on the way
            # would commit part way
            async with conn.pipeline():
                cur = conn.cursor()
                await cur.execute("BEGIN")
                if upserts:
                    await cur.executemany(
                        "INSERT INTO records VALUES (%s, %s, %s) ON CONFLICT (kind, key)"
                        " DO UPDATE SET data = EXCLUDED.data", upserts)
                if deletes:
                    await cur.executemany("DELETE FROM records WHERE kind = %s AND key = %s",
                                          deletes)
                if events:
                    await cur.executemany("INSERT INTO events VALUES (%s, %s)",
                                          [(e["seq"], pack(e)) for e in events])
                    last = events[-1]["seq"]
                    if last % 1000 < len(events):   # trim now and then, as store.py does
                        await cur.execute("DELETE FROM events WHERE seq <= %s",
                                          (last - keep_events,))
                if replies:
                    await cur.executemany(
                        "INSERT INTO replies VALUES (%s, %s, %s, %s, %s) ON CONFLICT"
                        " (user_name, request_id) DO UPDATE SET ts = EXCLUDED.ts,"
                        " digest = EXCLUDED.digest, data = EXCLUDED.data", replies)
                if dropped_replies:
                    await cur.executemany(
                        "DELETE FROM replies WHERE user_name = %s AND request_id = %s",
                        dropped_replies)
                if forget_replies_before is not None:
                    await cur.execute("DELETE FROM replies WHERE ts < %s",
                                      (forget_replies_before,))
                if audit:
                    await cur.executemany(
                        "INSERT INTO audit VALUES (%s, %s, %s, %s)",
                        [(a["seq"], a["time"], a["user"], pack(a)) for a in audit])
                    ids = [(i, a["seq"]) for a in audit for i in a["ids"]]
                    if ids:
                        await cur.executemany("INSERT INTO audit_ids VALUES (%s, %s)"
                                              " ON CONFLICT DO NOTHING", ids)
                if trim_audit is not None:
                    await _trim_audit(cur, *trim_audit)
                await cur.execute("COMMIT")
        await self._op(commit)

    async def close(self) -> None:
        """End the session, and with it the lock if held."""
        async with self._busy:
            await self._close()


async def _trim_audit(cur, oldest: float, keep: int) -> None:
    await cur.execute("SELECT seq FROM audit WHERE ts >= %s ORDER BY ts LIMIT 1", (oldest,))
    row = await cur.fetchone()
    await cur.execute("SELECT COALESCE(max(seq), 0) FROM audit")
    last = (await cur.fetchone())[0]
    first = max(row[0] if row else last + 1, last - keep + 1)
    await cur.execute("DELETE FROM audit WHERE seq < %s", (first,))
    await cur.execute("DELETE FROM audit_ids WHERE seq < %s", (first,))
