"""canary's ResourcePool, as canary constructs and calls it: in this process with no daemon
(``ResourcePool(pool)``), and served by a real daemon (``ResourcePool(client=...)``).

canary's document (its ResourcePool docstring and methods): the pool is
``{additional_properties, resources: {type: [{id, slots}]}}`` (``TYPE: count`` shorthands
allowed); ``accommodates(request)`` gives an ``Outcome``; ``checkout(request)`` gives
``{type: [{id, slots}]}`` and ``checkin`` takes it back; ``EmptyResourcePoolError`` when
the pool is empty; ``ResourceUnavailable`` when a type is unknown to ``count``.
"""

import copy
import io
import os

import pytest
import yaml

from atsclient import Conflict
from atsclient.pool import EmptyResourcePoolError, Outcome, ResourcePool, ResourceUnavailable
from daemon import wait_for

# canary's docstring example: a machine with 8 CPUs and 4 GPUs (gpus given in full, with a
# 2-slot one so that placement matters)
CANARY_POOL = {"additional_properties": {"nodes": {"count": 1}},
               "resources": {"gpus": [{"id": "01", "slots": 2}, {"id": "02", "slots": 1},
                                      {"id": "03", "slots": 1}, {"id": "04", "slots": 1}]},
               "cpus": 8}
REQUESTS = [
    [{"type": "gpus", "slots": 2}, {"type": "cpus", "slots": 1}],
    [{"type": "gpus", "slots": 1}, {"type": "gpus", "slots": 1}],
    [{"type": "gpus", "slots": 2}],                  # 2 free, but not on one instance
    [{"type": "gpus", "slots": 1}, {"type": "cpus", "slots": 7}],
    [{"type": "fpgas", "slots": 1}],
    [{"type": "cpus", "slots": 1}],
]


def test_in_process_pool_has_canarys_surface_with_no_daemon():
    pool = ResourcePool(CANARY_POOL)
    assert pool.types == ["cpus", "gpus"] and "gpus" in pool and not pool.empty()
    assert pool.count("gpu") == 4 and pool.count("cpus") == 8 and pool.count("nodes") == 1
    with pytest.raises(ResourceUnavailable):
        pool.count("fpga")
    assert pool.slots_per_resource_type == {"cpus": 8, "gpus": 5}
    assert pool.additional_properties == {"nodes": {"count": 1}}
    assert pool.resources["cpus"][3] == {"id": "3", "slots": 1}
    state = pool.getstate()
    out = io.StringIO()
    pool.dump(out)
    assert yaml.safe_load(out.getvalue()) == {"resource_pool": state}

    ok = pool.accommodates([{"type": "gpus", "slots": 2}])
    assert isinstance(ok, Outcome) and ok and ok.reason is None
    # CTest's packer (atsd's): the largest requirement first, on the freest instance
    got = pool.checkout([{"type": "gpus", "slots": 1}, {"type": "gpus", "slots": 2}])
    assert got == {"gpus": [{"id": "02", "slots": 1}, {"id": "01", "slots": 2}]}
    assert pool.slots_per_resource_type["gpus"] == 2
    no = pool.accommodates([{"type": "gpus", "slots": 1}] * 3)
    assert not no and no.reason == "gpus: requested 3 slots, 2 available"
    with pytest.raises(ResourceUnavailable, match="2 available"):
        pool.checkout([{"type": "gpus", "slots": 1}] * 3)
    pool.checkin(copy.deepcopy(got))
    assert pool.getstate() == state
    with pytest.raises(ValueError, match="more slots"):
        pool.checkin(got)                       # given back twice
    with pytest.raises(ValueError, match="unknown"):
        pool.checkin({"gpus": [{"id": "09", "slots": 1}]})

    assert pool.pop("cpus") == state["resources"]["cpus"] and pool.types == ["gpus"]
    pool.populate(gpus=2)
    assert pool.count("gpus") == 2 and pool.count("cpus") == (os.cpu_count() or 1)
    pool.clear()
    assert pool.empty()
    with pytest.raises(EmptyResourcePoolError):
        pool.accommodates([{"type": "gpus", "slots": 1}])
    with pytest.raises(EmptyResourcePoolError):
        pool.checkout([{"type": "gpus", "slots": 1}])
    assert ResourcePool().empty()


def test_bad_pools_and_requests_are_refused_saying_why():
    with pytest.raises(ValueError, match="slots"):
        ResourcePool({"resources": {"gpus": [{"id": 0, "slots": -1}]}})
    with pytest.raises(ValueError, match="count"):
        ResourcePool({"gpus": "four"})
    pool = ResourcePool({"gpus": 2})
    with pytest.raises(TypeError, match="slots"):
        pool.checkout([{"type": "gpus", "slots": 0}])
    with pytest.raises(TypeError, match="served"):
        pool.checkout([{"type": "gpus", "slots": 1}], lease_s=10)


@pytest.fixture
def served(daemon_factory, tmp_path):
    """A daemon whose inventory is the in-process pool's own dump: the same pool twice."""
    (tmp_path / "atsd").mkdir()
    with open(tmp_path / "atsd" / "pool.yaml", "w") as f:
        ResourcePool(CANARY_POOL).dump(f)
    d = daemon_factory({"resource_spec": "pool.yaml", "default_lease_s": 60,
                        "resources": [{"name": "scope-1", "type": "scope"}]})
    with d.client("alice") as alice:
        yield d, alice


def test_served_and_in_process_pools_give_the_same_answers(served):
    _, alice = served
    local, remote = ResourcePool(CANARY_POOL), ResourcePool(client=alice)
    assert remote.types == local.types and remote.count("gpu") == 4
    assert remote.slots_per_resource_type == local.slots_per_resource_type
    held = []
    for request in REQUESTS:
        a, b = local.accommodates(request), remote.accommodates(request)
        assert (a.ok, a.reason) == (b.ok, b.reason), request
        if a.ok:
            got = local.checkout(request)
            assert remote.checkout(request) == got
            held.append(got)
        else:
            with pytest.raises(ResourceUnavailable):
                remote.checkout(request)
    assert sorted(map(str, local.resources.items())) == sorted(map(str, remote.resources.items()))
    for got in held:
        local.checkin(got)
        remote.checkin(copy.deepcopy(got))
    assert remote.getstate()["resources"] == {
        t: sorted(insts, key=lambda i: i["id"]) for t, insts in local.resources.items()}


def test_served_pool_has_canarys_surface_and_keeps_its_inventory(served):
    _, alice = served
    pool = ResourcePool(client=alice)
    assert pool.additional_properties == {"nodes": {"count": 1}} and pool.count("nodes") == 1
    out = io.StringIO()
    pool.dump(out)
    assert yaml.safe_load(out.getvalue())["resource_pool"]["resources"]["gpus"][0] == {
        "id": "01", "slots": 2}
    for change in (lambda: pool.fill({"gpus": 1}), lambda: pool.populate(gpus=1),
                   lambda: pool.pop("gpus"), pool.clear):
        with pytest.raises(ValueError, match="config"):
            change()
    with pytest.raises(TypeError, match="client="):
        ResourcePool(alice)


def test_checkin_of_an_equal_copy_gives_back_the_live_allocation(served):
    _, alice = served
    pool = ResourcePool(client=alice)
    request = [{"type": "gpus", "slots": 2}]
    first = pool.checkout(request, lease_s=0.3)
    first_id = pool.allocation_id(first)
    wait_for(lambda: pool.slots_per_resource_type["gpus"] == 5, 10, what="the lease to end")
    second = pool.checkout(request)
    assert second == first                          # equal, and the first one is stale
    pool.checkin(copy.deepcopy(second))
    assert pool.slots_per_resource_type["gpus"] == 5          # the live one was given back
    reasons = {e["reservation_id"]: e["reason"]
               for e in alice.get_events(0, ["reservation.status"])["events"]
               if e["reservation_status"] == "RESERVATION_ENDED"}
    assert reasons[first_id] == "expired" and "released" in reasons.values()
    with pytest.raises(Conflict):                   # the stale one: its lease ended, said
        pool.checkin(first)
    with pytest.raises(ValueError, match="not checked out"):
        pool.checkin(first)                         # nothing of it is held any more
