"""What the fuzz test (tests/test_fuzz.py, hypothesis) and the long fuzz run
(bench/fuzz_long.py, plain random) share: the hostile values, the command schemas, how to
see the daemon's state, and how to put it back to empty between frames."""

from __future__ import annotations

import msgpack
import zmq

from atsclient import ATSClient
from atsd.commands import load_all
from atsd.config import Config
from daemon import BASE_CONFIG, JOB_USER

OBSERVER = "observer"       # the admin that looks at the state and cleans up; fuzz never is it

FUZZ_CONFIG = {
    **BASE_CONFIG,
    "resources": BASE_CONFIG["resources"] + [{"name": "gpus/0", "type": "gpus", "slots": 4}],
    "queues": {"debug": {"backend": "local", "hosts": ["h1", "h2"]}},
    "jobs": {"run_as": JOB_USER},
    "security": {"admins": [OBSERVER, "fuzzadmin"]},
}

MB_STRING = "x" * 1_000_000     # fits in a 1 MiB frame; over the 64 KiB string limit
MAX_FRAME = Config().max_frame_bytes

HOSTILE = [
    float("nan"), float("inf"), float("-inf"), -1, -1.5, -1e308, 1e308, 0, 0.0, -0.0, 1e-300,
    2**63 - 1, -2**63, 2**64 - 1, True, False, None,
    "", " ", "\x00", "\u202e", "dut-1", "gpus/0", "gpus", "../../etc/passwd", "x" * 257,
    MB_STRING, b"", b"\xff" * 16, [], {}, [None], [{}], {"": None}, [0] * 10_000,
    [{"type": "gpus", "slots": 1}], [{"type": "gpus", "slots": 2**40}],
    [{"node_id": "dut-1"}], [{"node_id": "dut-1", "value": float("nan")}],
    {"firmware": "v2"}, ["reservation.status"],
]

# waiting checkouts are answered when their wait ends: only instant answers here
BAD_WAITS = [float("nan"), float("inf"), -1, 1e308, "1", None, [], 0, 0.0]


def plausible(now: float) -> dict[str, list]:
    """Values that pass each argument's checks (by key name), so that a request with one
    hostile value among them gets past the others to where that one is looked at, and
    some requests succeed."""
    ids = ["AAAAAAAAAAAAAAAA", "nope"]
    return {
        "resource": ["dut-1", "scope-1", "build-1", "gpus/0", "nope"],
        "resources": [["dut-1", "scope-1"], ["dut-2"], ["dut-1", "dut-1"]],
        "start_time": [now, now + 60, now + 3600], "end_time": [now + 120, now + 7200],
        "time_needed": [now, now + 60, now + 3600], "deadline_time": [now + 7200],
        "reservation_mode": ["exclusive", "shared"], "slots": [1, 2, 4],
        "reservation_duration": [1, 60, 3600], "extra_s": [1, 60], "lease_s": [1, 60, 3600],
        "wall_time": [60], "max_wait_time": [0, 60], "host_count": [1, 2],
        "resource_config": [{"firmware": "v2"}], "configuration": [{"firmware": "v1"}],
        "next_available": [True, False], "maintenance": [True, False], "claim": [True, False],
        "request_id": ids,
        "pre_reservation_id": ids, "reservation_id": ids, "allocation_id": ids, "job_id": ids,
        "owner": ["alice"], "type": ["dut", "gpus"], "tags": [{"board": "imx8"}, {}],
        "since_seq": [0, 1, 2**62], "topics": [["reservation.status"]], "limit": [1, 10_000],
        "request": [[{"type": "gpus", "slots": 1}], [{"type": "gpus", "slots": 2}] * 2,
                    [{"type": "dut", "slots": 1}]],
        "wait_s": [0], "priority": [0, 5, -5],
        "nodelist": [[{"node_id": "dut-1"}], [{"node_id": "scope-1", "value": 0.5}]],
        "reason": ["maintenance"], "queue_id": ["debug"], "job_script": ["/bin/true"],
        "submit_args": [[["-N", "1"]]],
    }


def deep(n: int, opener: bytes) -> bytes:
    """``{"command": "list_resources", "tags": <n levels of opener> nil}``, raw, since
    msgpack itself refuses to pack that deep."""
    return (b"\x82" + msgpack.packb("command") + msgpack.packb("list_resources")
            + msgpack.packb("tags") + opener * n + b"\xc0")


def schemas() -> dict[str, dict[str, bool]]:
    """Every command with its argument keys and whether each is required."""
    return {name: {key: arg.required for key, arg in sorted(cmd.args.items())}
            for name, cmd in sorted(load_all().items())}


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


def oversize(endpoint: str, frames: list[bytes]) -> None:
    """A frame over max_frame_bytes makes the daemon cut the connection it came on, and
    with it whatever else was in flight there: send it on a connection of its own. It is
    never answered."""
    sock = dealer(endpoint)
    sock.send_multipart(frames)
    assert sock.poll(100) == 0, "an oversized frame was answered"
    sock.close()


def recv(sock: zmq.Socket, timeout_s: float = 10.0) -> tuple[list[bytes], dict] | None:
    if not sock.poll(timeout_s * 1000):
        return None
    frames = sock.recv_multipart()
    return frames, msgpack.unpackb(frames[-1], raw=False)


def check_reply(reply: dict) -> None:
    """A reply is a map with ok; a refusal has a known code and a message; a crash inside a
    command (``internal``) is a bug the fuzzer found."""
    from atsd.protocol import ERROR_CODES
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in ERROR_CODES and isinstance(error["message"], str), reply
        assert error["code"] != "internal", reply


def fingerprint(observer: ATSClient) -> tuple:
    """What a refused request must leave as it was."""
    resources = [{k: r[k] for k in ("name", "type", "slots", "config", "tags", "value")}
                 | {"in_service": r["state"] != "out_of_service"}
                 for r in observer.list_resources()]
    return (observer.list_reservations(), resources,
            observer.get_events(0, limit=1)["last_seq"])


def clean(observer: ATSClient) -> None:
    """End every live reservation, so that nothing is left that changes by itself as time
    passes (a pre-reservation lapsing, a lease ending)."""
    for rid in {row["id"] for row in observer.list_reservations()}:
        # it may have ended on its own since the list was made: any answer will do
        observer.server_communicate({"command": "release_reservation", "reservation_id": rid})
