"""elasticslice's client endpoint, as its document states it, against a real daemon.

The document: the server calls the holder's endpoint with ``NotifyDeletePending(params)``
and ``NotifyDeleteComplete(params)`` (``params = {"nodelist": [...]}``, entries with
``node_id``, ``client_id`` and their own ``max_wait_time``), ``SetResourceValues(params)``
and ``GetVersion(params)``; the endpoint answers plain success, or the input list with
``max_wait_time`` set to 0 on the nodes that may go now.
"""

import logging
import threading

import pytest

from atsclient import BadRequest
from atsclient.events import ElasticEndpoint
from daemon import BASE_CONFIG, wait_for

FAST = dict(BASE_CONFIG, countdown_interval_s=0.2)


def hold(client, name):
    pre, _, _ = client.request_reservation(name, reservation_duration=600)
    return client.claim_reservation(pre)["reservation_id"]


def live(client, rid):
    return any(r["id"] == rid for r in client.list_reservations())


class Running:
    """An endpoint's run() in a thread, stopped (and joined) on exit."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.thread = threading.Thread(target=endpoint.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.endpoint.subscriber is not None
                 and self.endpoint.subscriber._sub is not None, what="the endpoint to subscribe")
        return self.endpoint

    def __exit__(self, *exc):
        self.endpoint.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_delete_pending_entries_carry_node_client_and_their_own_countdown(daemon_factory):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        rid = hold(alice, "dut-2")
        since = admin.get_events(0, limit=1)["last_seq"]
        admin.revoke(["dut-2", "scope-1"], 1.0)
        wait_for(lambda: any(e["final"] for e in admin.get_events(
            since, ["resource.delete_complete"])["events"]), what="the final delete_complete")
        pending = admin.get_events(since, ["resource.delete_pending"])["events"]
        assert len(pending) >= 3
        for notice in pending:
            held, free = notice["nodelist"]
            # client_id is a string, the holder's reservation id; the owner has its own key
            assert held == {"node_id": "dut-2", "client_id": rid, "owner": "alice",
                            "max_wait_time": notice["max_wait_time"]}
            assert free["node_id"] == "scope-1" and free["client_id"] is None
        waits = [n["nodelist"][0]["max_wait_time"] for n in pending]
        assert waits == sorted(waits, reverse=True) and waits[0] > waits[-1]
        [done] = admin.get_events(since, ["resource.delete_complete"])["events"]
        assert {(e["node_id"], e["client_id"], e["max_wait_time"])
                for e in done["nodelist"]} == {("dut-2", rid, 0), ("scope-1", None, 0)}


class DocumentEndpoint(ElasticEndpoint):
    """Written to elasticslice's document only: CamelCase methods taking params."""

    def __init__(self, *args, let_go, **kw):
        super().__init__(*args, **kw)
        self.let_go = let_go
        self.calls = []

    def GetVersion(self, params):  # noqa: N802
        self.calls.append(("GetVersion", params))
        return {"version": 1}

    def NotifyDeletePending(self, params):  # noqa: N802
        self.calls.append(("NotifyDeletePending", params))
        return [dict(e, max_wait_time=0) if e["node_id"] == self.let_go else e
                for e in params["nodelist"]]

    def NotifyDeleteComplete(self, params):  # noqa: N802
        self.calls.append(("NotifyDeleteComplete", params))
        return True

    def SetResourceValues(self, params):  # noqa: N802
        self.calls.append(("SetResourceValues", params))

    def named(self, name):
        return [p for n, p in self.calls if n == name]


def test_a_document_endpoint_lets_a_node_go_by_answering_max_wait_time_zero(daemon_factory):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        ids = {n: hold(alice, n) for n in ("dut-1", "dut-2")}
        endpoint = DocumentEndpoint(daemon.listen, daemon.events, "alice", let_go="dut-1",
                                    idle_check_s=0.2)
        with Running(endpoint):
            assert endpoint.named("GetVersion") == [{}]
            admin.set_resource_values({"dut-1": 0.25})
            wait_for(lambda: endpoint.named("SetResourceValues"), what="SetResourceValues")
            assert endpoint.named("SetResourceValues")[0]["nodelist"] == [
                {"node_id": "dut-1", "value": 0.25}]
            deadline = admin.call("revoke", nodelist=[{"node_id": "dut-1"}, {"node_id": "dut-2"}],
                                  max_wait_time=30)["deadline"]
            # dut-1 goes at once, long before the deadline; dut-2 is kept
            wait_for(lambda: not live(alice, ids["dut-1"]), 10, what="dut-1 to go")
            assert live(alice, ids["dut-2"])
            [first, *_] = endpoint.named("NotifyDeletePending")
            assert {(e["node_id"], e["client_id"]) for e in first["nodelist"]} == {
                ("dut-1", ids["dut-1"]), ("dut-2", ids["dut-2"])}
            assert all(0 < e["max_wait_time"] <= 30 and e["deadline"] == deadline
                       for e in first["nodelist"])
            wait_for(lambda: endpoint.named("NotifyDeleteComplete"), what="delete_complete")
            [gone] = endpoint.named("NotifyDeleteComplete")[0]["nodelist"]
            assert (gone["node_id"], gone["client_id"], gone["max_wait_time"]) == (
                "dut-1", ids["dut-1"], 0)
        assert live(alice, ids["dut-2"])


class Failing(ElasticEndpoint):
    """Raises on the first notice; lets every node go on the next ones."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.notices = 0

    def on_delete_pending(self, nodelist):
        self.notices += 1
        if self.notices == 1:
            raise RuntimeError("holder bug")
        return [e["node_id"] for e in nodelist]


def test_a_hook_that_raises_is_logged_and_the_endpoint_keeps_running(daemon_factory, caplog):
    daemon = daemon_factory(FAST)
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        rid = hold(alice, "dut-2")
        endpoint = Failing(daemon.listen, daemon.events, "alice", idle_check_s=0.2)
        with caplog.at_level(logging.ERROR, "atsclient.events"), Running(endpoint):
            admin.revoke(["dut-2"], 30)
            # the next notice (0.2 s later) is answered: the node goes long before 30 s
            wait_for(lambda: not live(alice, rid), 10, what="the second notice's answer")
            assert endpoint.notices >= 2
        assert any("holder bug" in (r.exc_text or "") or
                   (r.exc_info and "holder bug" in str(r.exc_info[1])) for r in caplog.records)


def test_nodelist_entries_may_carry_the_documents_extra_keys(daemon):
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        rid = hold(alice, "dut-2")
        urn = "urn:publicid:IDN+lab+node+dut-2"
        assert admin.call("set_resource_values", nodelist=[
            {"node_id": "dut-2", "value": 0.5, "client_id": rid, "component_urn": urn,
             "max_wait_time": 0}])["updated"] == ["dut-2"]
        # max_wait_time inside the entries instead of beside them
        admin.call("revoke", nodelist=[{"node_id": "dut-2", "client_id": rid,
                                        "component_urn": urn, "max_wait_time": 60}])
        # the document's answer: the whole list back; an entry above 0 stays
        kept = alice.ack_delete_pending([{"node_id": "dut-2", "client_id": rid,
                                          "component_urn": urn, "max_wait_time": 12}])
        assert kept == [] and live(alice, rid)
        gone = alice.ack_delete_pending([{"node_id": "dut-2", "client_id": rid,
                                          "component_urn": urn, "max_wait_time": 0}])
        assert gone == ["dut-2"] and not live(alice, rid)
        with pytest.raises(BadRequest, match="max_wait_time"):
            admin.call("revoke", nodelist=[{"node_id": "dut-1", "max_wait_time": 5},
                                           {"node_id": "scope-1", "max_wait_time": 6}])
        with pytest.raises(BadRequest, match="max_wait_time"):
            admin.call("revoke", nodelist=[{"node_id": "dut-1"}])


def test_ack_with_a_client_id_lets_only_that_reservation_go(daemon):
    with daemon.client("alice") as alice, daemon.client("labadmin") as admin:
        first = alice.call("request_reservation", resource="build-1", reservation_mode="shared",
                           reservation_duration=600)["pre_reservation_id"]
        second = alice.call("request_reservation", resource="build-1", reservation_mode="shared",
                            reservation_duration=600)["pre_reservation_id"]
        admin.revoke(["build-1"], 60)
        assert alice.ack_delete_pending([{"node_id": "build-1", "client_id": first}]) == [
            "build-1"]
        assert not live(alice, first) and live(alice, second)
