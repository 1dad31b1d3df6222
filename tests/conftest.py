import pytest

from daemon import BASE_CONFIG, Daemon


@pytest.fixture
def daemon_factory(tmp_path):
    """Start daemons with a given config; every one is stopped (by PID) after the test."""
    started = []

    def start(config=None, name="atsd", **kw):
        d = Daemon(tmp_path / name, config or BASE_CONFIG, **kw)
        started.append(d)
        return d.start()

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
