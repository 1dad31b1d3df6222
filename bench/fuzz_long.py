#!/usr/bin/env python3
"""Long fuzz run: 100k hostile frames against one real daemon.

The same kinds of frames as tests/test_fuzz.py (random bytes, random msgpack, every
command with plausible and hostile values, byte-mutated requests, deep nesting, 1 MB
strings), drawn with ``random`` instead of hypothesis so that the daemon, not the
generator, is what is measured. Frames are pipelined on one DEALER, at most ``--window``
unanswered at a time (below the daemon's max_in_flight, so none is refused as overloaded).

Checks that every frame gets exactly one well-formed reply and none is ``internal``, that
the daemon is still up and answering at the end, and reports its RSS (VmRSS from
/proc/PID/status) at the start, every 10k frames and at the end, and frames/s.

Usage::

    python bench/fuzz_long.py [--frames 100000] [--seed N] [--window 32]

Writes ``bench/results/fuzz_long.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from common import save  # noqa: E402
from daemon import Daemon  # noqa: E402
from fuzzing import (BAD_WAITS, FUZZ_CONFIG, HOSTILE, MAX_FRAME, MB_STRING,  # noqa: E402
                     check_reply, dealer, deep, oversize, plausible, schemas)

# ended reservations are forgotten and pre-reservations lapse within seconds, so what the
# run books does not pile up and RSS shows the daemon itself
CONFIG = {**FUZZ_CONFIG, "history_s": 2, "claim_window_s": 1, "default_lease_s": 2}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Frames:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.schemas = schemas()
        self.names = sorted(self.schemas)

    def obj(self, depth: int = 0):
        r = self.rng.random()
        if depth < 3 and r < 0.15:
            return [self.obj(depth + 1) for _ in range(self.rng.randrange(5))]
        if depth < 3 and r < 0.3:
            return {self.text(): self.obj(depth + 1) for _ in range(self.rng.randrange(5))}
        return self.rng.choice([None, True, self.rng.randrange(-2**63, 2**64),
                                self.rng.uniform(-1e308, 1e308), self.text(),
                                self.rng.randbytes(self.rng.randrange(20))])

    def text(self) -> str:
        return "".join(chr(self.rng.randrange(1, 0x3000)) for _ in range(self.rng.randrange(12)))

    def hostile(self):
        return self.rng.choice(HOSTILE) if self.rng.random() < 0.7 else self.obj()

    def request(self) -> dict:
        rng = self.rng
        name = rng.choice(self.names)
        valid = plausible(time.time())
        req = {"command": name, "user": rng.choice(["alice", "bob"]),
               "request_id": f"{rng.random():.17f}"}
        for key, required in self.schemas[name].items():
            if not required and rng.random() < 0.5:
                continue
            if key == "wait_s":
                req[key] = rng.choice(BAD_WAITS)
            elif key in valid and rng.random() < 0.85:
                req[key] = rng.choice(valid[key])
            else:
                req[key] = self.hostile()
        r = rng.random()
        if r < 0.05:
            req[self.text()] = self.hostile()
        elif r < 0.1:
            req[rng.choice(["command", "user", "request_id"])] = self.hostile()
        return req

    def body(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return msgpack.packb(self.request())
        if r < 0.75:
            data = bytearray(msgpack.packb(self.request()))
            for _ in range(rng.randrange(1, 5)):
                i = rng.randrange(len(data) + 1)
                op = rng.randrange(4)
                if op == 0 and i < len(data):
                    data[i] ^= 1 << rng.randrange(8)
                elif op == 1:
                    data[i:i] = rng.randbytes(rng.randrange(1, 9))
                elif op == 2:
                    del data[i:i + rng.randrange(1, 9)]
                elif op == 3:
                    del data[i:]
            return bytes(data)
        if r < 0.85:
            return rng.randbytes(rng.randrange(300))
        if r < 0.95:
            return msgpack.packb(self.obj())
        if r < 0.99:
            return deep(rng.randrange(1, 1100), rng.choice([b"\x91", b"\x81\xa1k"]))
        return msgpack.packb({"command": "get_config", "resource": MB_STRING})


def run(frames: int, seed: int, window: int) -> dict:
    rng = random.Random(seed)
    gen = Frames(rng)
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp) / "atsd", CONFIG).start()
        try:
            pid = daemon.proc.pid
            sock = dealer(daemon.listen)
            rss = [(0, rss_kib(pid))]
            sent = answered = 0
            codes: dict[str, int] = {}
            start = time.monotonic()
            while answered < frames:
                while sent < frames and sent - answered < window:
                    body = gen.body()
                    sent += 1
                    if len(body) > MAX_FRAME:
                        oversize(daemon.listen, [b"", body])
                        answered += 1
                        codes["dropped (over max_frame_bytes)"] = codes.get(
                            "dropped (over max_frame_bytes)", 0) + 1
                        continue
                    sock.send_multipart([b"", body])
                if answered == sent:
                    continue
                if not sock.poll(30_000):
                    raise AssertionError(f"no reply after {answered} of {sent} sent; daemon "
                                         f"{'up' if daemon.proc.poll() is None else 'down'}; "
                                         f"its log ends:\n{daemon.log()}")
                reply = msgpack.unpackb(sock.recv_multipart()[-1])
                check_reply(reply)
                code = "ok" if reply["ok"] else reply["error"]["code"]
                codes[code] = codes.get(code, 0) + 1
                answered += 1
                if answered % 10_000 == 0:
                    rss.append((answered, rss_kib(pid)))
            elapsed = time.monotonic() - start
            if rss[-1][0] != answered:
                rss.append((answered, rss_kib(pid)))
            # exactly once: nothing more arrives before the answer to one last request
            sock.send_multipart([b"", msgpack.packb({"command": "get_version",
                                                     "request_id": "last"})])
            assert sock.poll(10_000), "no reply to the last request"
            last = msgpack.unpackb(sock.recv_multipart()[-1])
            assert last.get("request_id") == "last", f"an extra reply: {last}"
            assert daemon.proc.poll() is None, "the daemon died"
            sock.close()
            return {"frames": frames, "seed": seed, "window": window,
                    "seconds": round(elapsed, 2), "frames_per_s": round(frames / elapsed),
                    "rss_kib_start": rss[0][1], "rss_kib_end": rss[-1][1],
                    "rss_kib_by_frames": rss, "replies_by_code": codes, "still_up": True}
        finally:
            daemon.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=random.randrange(2**32))
    p.add_argument("--window", type=int, default=32)
    args = p.parse_args()
    result = run(args.frames, args.seed, args.window)
    save("fuzz_long", result)
    print(f"{result['frames']} frames in {result['seconds']} s: {result['frames_per_s']} "
          f"frames/s (seed {result['seed']})")
    print(f"daemon RSS {result['rss_kib_start']} KiB at start, {result['rss_kib_end']} KiB "
          f"at the end; by frames: {result['rss_kib_by_frames']}")
    print(f"replies by code: {result['replies_by_code']}; still up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
