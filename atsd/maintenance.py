"""The state file's upkeep: ``atsd backup``, ``atsd restore`` and ``atsd migrate``.

A file copy of a running daemon's state is not a backup: the newest commits are in the WAL
beside it, and a page copied mid-commit tears. ``backup`` uses SQLite's online backup API
on a connection of its own, so it reads one committed snapshot while the daemon goes on
writing. ``restore`` needs the daemon stopped (it takes the state's lock), removes the WAL
of the file it replaces (SQLite would otherwise replay those newer pages over the restored
ones), and carries the newest event seq over: subscribers track events by seq, and a seq
handed out twice would be read as one they already have.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .store import (AUTO_VACUUM_INCREMENTAL, MIGRATIONS, SCHEMA_VERSION, Store, StoreError,
                    last_seq, schema_version, take_lock)


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"{path}: no such state file")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def backup(state: Path, target: Path) -> dict:
    """Copy ``state`` to ``target`` as one consistent snapshot, the daemon running or not.
    Written beside ``target`` and renamed, so ``target`` is never a half backup."""
    if target.exists():
        raise StoreError(f"{target}: exists already; give a new file name")
    tmp = target.with_name(target.name + ".tmp")
    try:
        summary = _copy(state, tmp)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{state}: backup to {target} failed ({exc})") from None
    os.replace(tmp, target)
    return summary


def restore(source: Path, state: Path) -> dict:
    """Make ``source`` (a backup) the state file. Refused while a daemon holds ``state``."""
    lock = take_lock(state)
    try:
        check = _open_read_only(source)
        try:
            _check_backup(source, check)
        finally:
            check.close()
        tmp = state.with_name(state.name + ".restore")
        summary = _copy(source, tmp, _last_seq(state) if state.exists() else 0)
        for stale in _side_files(state):       # the old file's WAL would replay over it
            stale.unlink(missing_ok=True)
        os.replace(tmp, state)
        return summary
    except sqlite3.Error as exc:
        raise StoreError(f"restore of {source} into {state} failed ({exc}); "
                         f"{state} was left as it was") from None
    finally:
        lock.close()


def _copy(source: Path, tmp: Path, newest_seq: int = 0) -> dict:
    """``source`` into the new file ``tmp``: one read transaction, so one snapshot, as one
    self-contained file (no WAL), with events numbered on after ``newest_seq`` at least."""
    for stale in [tmp, *_side_files(tmp)]:
        stale.unlink(missing_ok=True)
    src = _open_read_only(source)
    try:
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            if newest_seq > last_seq(dst):
                dst.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (newest_seq,))
            return _summary(dst)
        finally:
            dst.close()
    finally:
        src.close()


def migrate_plan(state: Path) -> list[str]:
    """What opening ``state`` with this atsd would change, in words; empty when nothing."""
    db = _open_read_only(state)
    try:
        version = schema_version(state, db)
        if version is None:
            return [f"new state file: schema {SCHEMA_VERSION}, incremental vacuum"]
        plan = [f"schema {v} -> {v + 1}: {(MIGRATIONS[v].__doc__ or '').strip()}"
                for v in range(version, SCHEMA_VERSION)]
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            size = db.execute("PRAGMA page_count").fetchone()[0] * \
                db.execute("PRAGMA page_size").fetchone()[0]
            plan.append(f"auto_vacuum -> incremental: one VACUUM rewrites the file "
                        f"({size} bytes; needs as much again free on disk while it runs)")
        return plan
    finally:
        db.close()


def migrate(state: Path) -> None:
    """Apply the plan now, as the daemon would at start (refused while one runs)."""
    Store(state).close()


def _check_backup(path: Path, db: sqlite3.Connection) -> None:
    problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if problem != "ok":
        raise StoreError(f"{path}: damaged ({' '.join(problem.split())}); nothing restored")
    if schema_version(path, db) is None:
        raise StoreError(f"{path}: empty, not an atsd state file; nothing restored")


def _last_seq(path: Path) -> int:
    """The newest seq the file (with its WAL) ever handed out; 0 for a file that is not a
    readable state file, which has none to protect."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            return last_seq(db)
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _summary(db: sqlite3.Connection) -> dict:
    return {"records": db.execute("SELECT count(*) FROM records").fetchone()[0],
            "last_seq": last_seq(db)}
