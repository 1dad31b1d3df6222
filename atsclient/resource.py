"""``ResourceReservation``: hold one resource for a block of code, kissats-style.

    with ResourceReservation("dut-1", client, max_wait=600) as res:
        flash(res.resource_name)

On entry it asks for the resource, waits until the offered ``time_available``, and claims
it; a claim that comes late takes the fresh offer and tries again, up to ``max_retry``
times. With ``claim=True`` (atsd's own, not kissats') the request confirms the booking at
once, so there is no claim to miss: it only waits for the start. It gives up with
``ResourceUnavailable`` when the resource cannot be had within
``max_wait`` seconds, and with ``ResourceRetryExceeded`` after ``max_retry`` failed tries.
On exit, exception or not, it releases what it holds.
"""

from __future__ import annotations

import time

from .errors import ResourceRetryExceeded, ResourceUnavailable, TooEarly


class ResourceReservation:
    def __init__(self, resource_name: str, ats_client, mode: str = "exclusive",
                 max_retry: int = 5, max_wait: float | None = None,
                 duration: float = 3600.0, claim: bool = False) -> None:
        self.resource_name = resource_name
        self.ats_client = ats_client
        self.reservation_mode = mode
        self.max_retry = max_retry
        self.max_wait_time = max_wait
        self.duration = duration
        self.claim = claim
        self.resource_config = None          # the config to ask for, then the one granted
        self.reservation_id: str | None = None
        self.pre_reservation_id: str | None = None
        self.pre_res_expire: float | None = None
        self._start_time: float | None = None
        self._end_time: float | None = None
        self.retry_count = 0
        self.first_request_time: float | None = None

    @property
    def name(self) -> str:
        """kissats' task packs look resources up by ``name``."""
        return self.resource_name

    @property
    def start_time(self) -> float:
        """Start of the reservation; before any request, now (fixed on first read), as kissats."""
        if self._start_time is None:
            self._start_time = time.time()
        return self._start_time

    @start_time.setter
    def start_time(self, value: float | None) -> None:
        self._start_time = value

    @property
    def end_time(self) -> float:
        """End of the reservation; before any request, ``duration`` (3600 s) after start_time."""
        if self._end_time is None:
            self._end_time = self.start_time + self.duration
        return self._end_time

    @end_time.setter
    def end_time(self, value: float | None) -> None:
        self._end_time = value

    def __eq__(self, other) -> bool:
        if isinstance(other, ResourceReservation):
            return self.resource_name == other.resource_name
        return isinstance(other, str) and self.resource_name == other

    __hash__ = None

    def __enter__(self) -> ResourceReservation:
        try:
            self.acquire()
        except BaseException:
            self.release_reservation()      # whatever it held when it gave up
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release_reservation()

    def add_retry_count(self) -> None:
        self.retry_count += 1
        if self.retry_count > self.max_retry:
            raise ResourceRetryExceeded(
                f"{self.resource_name}: gave up after {self.max_retry} retries")

    def request_reservation(self, new_start_time: float | None = None,
                            new_end_time: float | None = None, next_available: bool = True) -> bool:
        """Ask for a pre-reservation; False (and one retry counted) when refused."""
        self.release_reservation()
        start = time.time() if new_start_time is None else new_start_time
        duration = self.duration if new_end_time is None else new_end_time - start
        try:
            rid, self.start_time, expire = self.ats_client.request_reservation(
                self.resource_name, self.resource_config, start, duration, next_available,
                self.reservation_mode, **({"claim": True} if self.claim else {}))
        except ResourceUnavailable:
            self.add_retry_count()
            return False
        if self.claim:
            self.reservation_id = rid
        else:
            self.pre_reservation_id, self.pre_res_expire = rid, expire
        self.end_time = self.start_time + duration
        if self.first_request_time is None:
            self.first_request_time = time.time()
        return True

    def claim_reservation(self) -> bool:
        """Claim the pre-reservation; on a late claim keep the fresh offer and return False."""
        try:
            reply = self.ats_client.claim_reservation(self.pre_reservation_id)
        except TooEarly as exc:          # the daemon's clock is a hair behind ours
            self.start_time = time.time() + exc.reply.get("retry_after", 0.05)
            return False
        if reply.get("reservation_id") is not None:
            self.reservation_id = reply["reservation_id"]
            self.pre_reservation_id = None
            self.pre_res_expire = None
            self.end_time = reply["expire_time"]
            self.resource_config = reply.get("resource_config")
            return True
        self.pre_reservation_id = reply["pre_reservation_id"]     # held: release it if
        self.start_time = reply["new_avail"]                       # we give up below
        self.pre_res_expire = reply["new_expire"]
        self.add_retry_count()
        return False

    def acquire(self) -> None:
        """Request, wait for time_available, claim; within max_wait and max_retry."""
        deadline = None if self.max_wait_time is None else time.time() + self.max_wait_time
        while not self.request_reservation():
            time.sleep(min(1.0, self._left(deadline)))
        while True:
            if deadline is not None and self.start_time > deadline:
                self.release_reservation()
                raise ResourceUnavailable(
                    f"{self.resource_name} is not available within {self.max_wait_time:g}s "
                    f"(next at {self.start_time:.0f})")
            time.sleep(max(0.0, self.start_time - time.time()))
            if self.claim or self.claim_reservation():
                return

    def _left(self, deadline: float | None) -> float:
        if deadline is None:
            return float("inf")
        left = deadline - time.time()
        if left <= 0:
            raise ResourceUnavailable(
                f"{self.resource_name} could not be reserved within {self.max_wait_time:g}s")
        return left

    def release_reservation(self) -> None:
        """Release whatever is held: the pre-reservation or the claimed reservation."""
        held = self.pre_reservation_id or self.reservation_id
        self.pre_reservation_id = self.reservation_id = None
        if held is not None:
            self.ats_client.release_resource(held)

    def get_next_avail_time(self) -> dict:
        return self.ats_client.get_resource_availablity(self.resource_name, self.start_time,
                                                        self.end_time)
