"""The published kissats 1.0.0a5 client, unchanged, against a real atsd.

kissats is a test dependency (setup.cfg's ``test`` extra), but its package ``__init__`` does
not import on Python 3 (task.py is Python 2), so its ``ats_client.py`` and ``exceptions.py``
are loaded directly from where it is installed.
"""

import importlib.metadata
import importlib.util
import sys
import time
import types
from pathlib import Path

import msgpack
import pytest
import zmq

from atsclient import ATSClient
from atsclient.kissats import ATS_Client


def _installed() -> Path:
    spec = importlib.util.find_spec("kissats")      # finds the package, runs no __init__
    assert spec is not None, "kissats is not installed: pip install -e '.[test]'"
    assert importlib.metadata.version("kissats") == "1.0.0a5"
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def kissats():
    root = _installed()
    package = types.ModuleType("kissats")
    package.__path__ = [str(root)]
    saved = {k: sys.modules.get(k) for k in ("kissats", "kissats.exceptions", "kissats.ats_client")}
    sys.modules["kissats"] = package
    try:
        for name in ("exceptions", "ats_client"):
            spec = importlib.util.spec_from_file_location(f"kissats.{name}", root / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"kissats.{name}"] = module
            spec.loader.exec_module(module)
            setattr(package, name, module)
        yield package
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def transport_client(kissats, server):
    """A BaseATSClient whose only addition is the transport: msgpack over REQ."""

    class ReqClient(kissats.ats_client.BaseATSClient):
        def __init__(self):
            super().__init__()
            self.ats_server = server
            self.sock = None

        def _connect_server(self):
            self.sock = zmq.Context.instance().socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.ats_server)
            self._connected = True
            return True

        def _disconnect_server(self):
            self.sock.close()
            self._connected = False
            return True

        def _send_server_command(self, command, extra_data):
            if not self._connected:
                self._connect_server()
            self.sock.send(msgpack.packb({"command": command, **extra_data}))
            return "request"

        def _get_server_reply(self, request_id):
            assert self.sock.poll(5000), "no reply"
            return msgpack.unpackb(self.sock.recv(), raw=False)

    return ReqClient()


def test_every_base_client_method(kissats, daemon):
    c = transport_client(kissats, daemon.listen)
    assert set(c.get_all_resources()) == {"dut-1", "dut-2", "scope-1", "build-1"}
    assert "dut-2" in c.get_available_resources()
    avail = c.get_resource_availablity("dut-2")
    assert avail["available"] is True and avail["avail_end"] > avail["avail_start"]
    assert c.get_resource_config("dut-1")["config"] == {"firmware": "v1"}

    pre, time_available, expire = c.request_reservation("dut-2", reservation_duration=60)
    assert time_available <= time.time() + 1 and expire > time_available
    claim = c.claim_reservation(pre)
    assert claim["reservation_ID"] == pre and claim["resource_config"] == {"firmware": "v1"}
    assert "dut-2" not in c.get_available_resources()
    assert c.get_resource_availablity("dut-2")["available"] is False
    assert c.release_resource(pre) is True
    assert c.release_resource(pre) is False

    # busy and not next_available: kissats raises its own ResourceUnavailable
    held, _, _ = c.request_reservation("scope-1")
    with pytest.raises(kissats.exceptions.ResourceUnavailable):
        c.request_reservation("scope-1", next_available=False)
    later, t2, _ = c.request_reservation("scope-1")       # next window, after the first
    assert t2 >= time_available + 3600 - 1
    reply = c.server_communicate({"command": "get_version"})
    assert reply["protocol"] == 1
    with pytest.raises(kissats.exceptions.ResourceUnavailable):
        c.claim_reservation("no-such-id")


def test_kissats_reads_a_late_claims_fresh_offer(kissats, daemon_factory):
    d = daemon_factory({"resources": [{"name": "r1"}], "claim_window_s": 0.2})
    c = transport_client(kissats, d.listen)
    pre, _, expire = c.request_reservation("r1", reservation_duration=30)
    with ATSClient(d.listen) as probe:
        from daemon import wait_for
        wait_for(lambda: not probe.list_reservations(), what="the lapse")
    reply = c.claim_reservation(pre)          # kissats returns the offer instead of raising
    assert reply["pre_reservation_id"] != pre and reply["new_expire"] > reply["new_avail"]


def test_task_packs_load_ats_client_by_module(daemon):
    import importlib
    module = importlib.import_module("atsclient.kissats")
    client = module.ATS_Client(server=daemon.listen, timeout=2)
    assert client is not None and isinstance(client, ATS_Client)
    assert client.get_all_resources()
    client.close()
