"""The engine's typed events carry on the wire exactly the keys atsclient.wire names for
their topic, in that order, so the encoded events stay byte for byte what clients (the
published kissats among them) read."""

from dataclasses import fields

import msgpack
import pytest

from atsclient.wire import TOPICS
from atsd.engine.events import Event, ReservationStatus
from atsd.eventlog import EventLog


def test_each_topic_has_one_event_type_with_the_wire_keys_in_order():
    types = {t.topic: t for t in Event.__subclasses__()}
    assert sorted(types) == sorted(TOPICS)
    for topic, event_type in types.items():
        names = [f.name for f in fields(event_type) if f.name != "clock_jump_s"]
        assert names == [k for k in TOPICS[topic] if k != "_"], topic


def test_numbered_event_is_encoded_as_before():
    event = ReservationStatus("r1", "RESERVATION_ENDED", "RESERVATION_ACTIVE", "released",
                              "alice", ["dut"], "claimed", 10.0, 20.0)
    [numbered] = EventLog(10, 0, []).number([event], 30.0)
    expected = {"reservation_id": "r1", "reservation_status": "RESERVATION_ENDED",
                "previous": "RESERVATION_ACTIVE", "reason": "released", "owner": "alice",
                "resources": ["dut"], "kind": "claimed", "start_time": 10.0,
                "end_time": 20.0, "topic": "reservation.status", "seq": 1, "ts": 30.0}
    assert msgpack.packb(numbered) == msgpack.packb(expected)


def test_a_clock_jump_is_sent_after_the_event_keys():
    event = ReservationStatus("r1", "RESERVATION_ENDED", "RESERVATION_ACTIVE", "expired",
                              "alice", ["dut"], "claimed", 10.0, 20.0)
    event.clock_jump_s = 3600.0
    assert list(event.payload)[-1] == "clock_jump_s"
    assert "clock_jump_s" not in ReservationStatus(*[None] * 9).payload
    with pytest.raises(TypeError):          # the payload is a view: set the field instead
        event.payload["clock_jump_s"] = 1.0
