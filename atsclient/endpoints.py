"""Server addresses that list several endpoints, and how a client moves along them.

An address is one ZeroMQ endpoint or several separated by commas
(``tcp://a:5555,tcp://b:5555``): atsd daemons on one PostgreSQL database, one leading and
the others standing by. A client talks to one of them at a time, the one that answered
last. A try that gets no reply within the timeout, or a ``standby`` reply, moves it to the
next endpoint, with the same request (and request_id: a request the old leader committed
is answered from the reply cache by the new one, never applied twice). A standby names
the leader (``leader``) when it knows it; the client goes there next only when the user
listed that endpoint, written the same way: it never connects anywhere it was not told.

A standby answers at once, and the standbys of a lost leader answer so until one of them
has taken the lead (seconds). So that a request outlives the election instead of running
through its tries in milliseconds, the client waits one timeout (its plain one, not a long
wait's) after each round in which every endpoint failed and one of them is a standby. A
request gives up after ``retries`` rounds: pick them to outlast an election.
"""

from __future__ import annotations

import re

from .errors import ATSError, Standby, Unreachable

TRANSPORTS = ("tcp", "ipc", "inproc")
_TCP = re.compile(r"tcp://(\S+):(\d{1,5})")
_OTHER = re.compile(r"(ipc|inproc)://\S+")
MAX_ENDPOINT = 256


class BadAddress(ValueError):
    """An address that is not a list of ZeroMQ endpoints; the message says which part."""


def parse(address) -> tuple[str, ...]:
    """The endpoints of ``address``: a string (endpoints separated by commas) or a list of
    endpoints. Anything else is refused, naming the part that is wrong."""
    items = address.split(",") if isinstance(address, str) else list(address)
    if not items or items == [""]:
        raise BadAddress("no endpoint given (write tcp://HOST:PORT)")
    for n, item in enumerate(items, 1):
        if not isinstance(item, str) or not item:
            raise BadAddress(f"endpoint {n} of {str(address)[:120]!r} is empty (separate "
                             "endpoints by one comma: tcp://a:5555,tcp://b:5555)")
        problem = _problem(item)
        if problem:
            raise BadAddress(f"{item!r} is not a ZeroMQ endpoint: {problem}")
    if len(set(items)) != len(items):
        twice = next(item for n, item in enumerate(items) if item in items[:n])
        raise BadAddress(f"the address lists an endpoint twice ({twice!r})")
    return tuple(items)


def joined(address) -> str:
    """``address`` checked (see ``parse``), as one string."""
    return ",".join(parse(address))


def _problem(endpoint: str) -> str | None:
    if len(endpoint) > MAX_ENDPOINT:
        return f"longer than {MAX_ENDPOINT} characters"
    if endpoint != endpoint.strip():
        return "it has spaces around it; leave them out"
    tcp = _TCP.fullmatch(endpoint)
    if tcp:
        return None if 0 < int(tcp.group(2)) < 65536 else "the port must be 1 to 65535"
    if _OTHER.fullmatch(endpoint):
        return None
    return "write tcp://HOST:PORT, ipc://PATH or inproc://NAME"


def is_standby(reply: dict) -> bool:
    return reply.get("ok") is False and (reply.get("error") or {}).get("code") == "standby"


class Failover:
    """A client's endpoints and the one it uses now, shared by all its requests (those of
    an AsyncATSClient in flight together too): the first to find the current endpoint
    failing moves everyone on."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self.current = endpoints[0]

    def failed(self, endpoint: str, leader: str | None = None) -> None:
        if endpoint != self.current:        # another request moved on already
            return
        if leader in self.endpoints and leader != endpoint:
            self.current = leader
        else:
            i = self.endpoints.index(endpoint)
            self.current = self.endpoints[(i + 1) % len(self.endpoints)]


class Tries:
    """One request's tries: ``retries`` per endpoint, each going to the client's current
    endpoint (iterate to get it). ``failed`` records how a try failed and says how long to
    wait before the next; ``error()`` is what to raise when none is left, naming every
    endpoint and what it did."""

    def __init__(self, failover: Failover, retries: int, wait: float, pause: float,
                 on_retry=None) -> None:
        self.failover = failover
        self.total = retries * len(failover.endpoints)
        self.wait = wait            # how long a try waits for its reply
        self.pause = pause          # how long to wait when no endpoint leads
        self.on_retry = on_retry
        self.done = 0
        self.outcome: dict[str, str] = {}          # endpoint -> how its last try ended
        self.round: set[str] = set()               # endpoints failed since the last round

    def __iter__(self):
        while self.done < self.total:
            self.done += 1
            yield self.failover.current

    def failed(self, endpoint: str, standby_reply: dict | None = None) -> float:
        """``endpoint`` gave no reply (``standby_reply`` None) or answered standby.
        Returns the seconds to wait before the next try: ``pause`` when every endpoint has
        failed since the last round and one of them is a standby (no leader now), else 0."""
        leader = None
        if standby_reply is None:
            self.outcome[endpoint] = "no reply"
        else:
            leader = standby_reply.get("leader")
            leader = leader if isinstance(leader, str) and not _problem(leader) else None
            listed = leader is None or leader in self.failover.endpoints
            self.outcome[endpoint] = ("standby" if leader is None else
                                      f"standby, leader {leader}{'' if listed else ', not listed'}")
        self.failover.failed(endpoint, leader)
        self.round.add(endpoint)
        if self.done >= self.total:
            return 0.0
        pause = 0.0
        if len(self.round) == len(self.failover.endpoints):
            if any(self.outcome[e] != "no reply" for e in self.round):
                pause = self.pause
            self.round.clear()
        said = [f"no reply from atsd at {endpoint} within {self.wait:g}s"] \
            if standby_reply is None else []
        if pause:
            said.append("no listed atsd leads now")
        if said:
            nxt = self.failover.current
            said.append(("trying again" if nxt == endpoint else f"trying {nxt}") +
                        (f" in {pause:g}s" if pause else ""))
            self._say("; ".join(said))
        return pause

    def _say(self, message: str) -> None:
        if self.on_retry is not None:
            self.on_retry(f"{message} ({self.done + 1} of {self.total})")

    def error(self) -> ATSError:
        endpoints = self.failover.endpoints
        tries = f"after {self.total} tries of {self.wait:g}s"
        if all(self.outcome.get(e) == "no reply" for e in endpoints):
            return Unreachable(f"no reply from atsd at {', '.join(endpoints)} {tries}")
        said = ", ".join(f"{e} ({self.outcome.get(e, 'not tried')})" for e in endpoints)
        if all(self.outcome.get(e, "").startswith("standby") for e in endpoints):
            return Standby(f"no listed atsd leads: {said} {tries}")
        return Unreachable(f"no leading atsd at {said} {tries}")
