import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from daemon import BASE_CONFIG, Daemon


@pytest.fixture
def daemon_factory(tmp_path):
    """Start daemons with a given config; every one is stopped (by PID) after the test."""
    started = []

    def start(config=None, name="atsd", role="leader", **kw):
        d = Daemon(tmp_path / name, config or BASE_CONFIG, **kw)
        started.append(d)
        return d.start(role=role)

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


@pytest.fixture
def client(daemon):
    c = daemon.client("alice")
    yield c
    c.close()


@pytest.fixture(scope="session")
def pg_cluster():
    """One private PostgreSQL for the session (tests/pg_cluster.py); each test takes a fresh
    database from it (``pg_url``). Without a PostgreSQL server the tests are skipped, unless
    ATSD_REQUIRE_PG=1 (CI), which turns that into a failure."""
    from pg_cluster import PgCluster, pg_bin_dir
    if pg_bin_dir() is None:
        why = "no PostgreSQL server installed (bash .ci/pg-deps)"
        if os.environ.get("ATSD_REQUIRE_PG") == "1":
            pytest.fail(f"ATSD_REQUIRE_PG=1 but {why}")
        pytest.skip(why)
    # not under pytest's basetemp: that is private to us, and postgres runs as another user
    base = Path(tempfile.mkdtemp(prefix="atsd-pg-"))
    cluster = PgCluster(base).init().start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request):
    """Config keys for a test that runs on both stores: none (a SQLite file), or a fresh
    PostgreSQL database as ``state``."""
    if request.param == "sqlite":
        return {}
    return {"state": request.getfixturevalue("pg_url")}


@pytest.fixture
def pg_url(pg_cluster):
    """A new, empty database for this test."""
    return pg_cluster.create_database(f"atsd_{next(_databases)}")


_databases = itertools.count(1)
