"""The names the wire shares between atsd and its clients, defined once: event topics with
what each event carries, and error codes with what each means. atsd imports them from here;
docs/protocol.md is generated from them and from atsd's command table (tests hold it so).
"""

from __future__ import annotations

RESERVATION_STATUS = "reservation.status"
RESERVATION_EXPIRING = "reservation.expiring"
DELETE_PENDING = "resource.delete_pending"
DELETE_COMPLETE = "resource.delete_complete"
RESOURCE_VALUES = "resource.values"
JOB_STATUS = "job.status"
RESOURCE_STATE = "resource.state"
RESERVATION_DEGRADED = "reservation.degraded"
RESERVATION_REPLACED = "reservation.replaced"

# Every event also carries ``topic``, ``seq`` (one more than the event before, across
# restarts) and ``ts`` (when it was published, epoch seconds).
TOPICS: dict[str, dict[str, str]] = {
    RESERVATION_STATUS: {
        "_": "A reservation (of any kind) changed state.",
        "reservation_id": "the reservation",
        "reservation_status": "its state now (RESERVATION_GRANTED, _ACTIVE, _ENDED ...)",
        "previous": "its state before, null when it is new",
        "reason": "why: requested, claimed, released, expired, revoked, cancelled, "
                  "extended, moved (a lease, by a jump of the clock) ...",
        "owner": "who holds it",
        "resources": "the resources (or hosts) it books",
        "kind": "calendar, allocation (a pool checkout) or batch",
        "start_time": "its start, epoch seconds",
        "end_time": "its end, epoch seconds",
    },
    RESERVATION_EXPIRING: {
        "_": "A reservation ends soon (expiring_notice_s before its end).",
        "reservation_id": "the reservation",
        "owner": "who holds it",
        "resources": "the resources it books",
        "end_time": "its end, epoch seconds",
        "remaining": "seconds left",
    },
    DELETE_PENDING: {
        "_": "A revocation counts down: at once and every countdown_interval_s.",
        "revocation_id": "the revocation",
        "reason": "what the admin gave, or null",
        "max_wait_time": "seconds left until the deadline",
        "deadline": "when the nodes go, epoch seconds",
        "nodelist": "one entry per node and holder: node_id, client_id (the reservation "
                    "id), owner, max_wait_time",
    },
    DELETE_COMPLETE: {
        "_": "Revoked nodes went (acknowledged or at the deadline).",
        "revocation_id": "the revocation",
        "reason": "what the admin gave, or null",
        "final": "true once the whole revocation is done",
        "nodelist": "the nodes that went, as in delete_pending",
    },
    RESOURCE_VALUES: {
        "_": "An admin set node values.",
        "nodelist": "entries of node_id and value (0 to 1)",
    },
    JOB_STATUS: {
        "_": "A batch job changed state.",
        "job_id": "the job",
        "reservation_id": "the batch reservation it runs in",
        "state": "PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT or CANCELLED",
        "previous": "its state before, null when it is new",
        "exit_code": "its exit code once it ended, else null",
        "owner": "who submitted it",
    },
    RESOURCE_STATE: {
        "_": "A resource went down or came back up (an admin's set_resource_state, or its "
             "health check).",
        "resource": "the resource",
        "service": "up or down",
        "reason": "why it is down (or was brought up)",
        "by": "admin or health",
    },
    RESERVATION_DEGRADED: {
        "_": "A resource a live reservation books went down.",
        "reservation_id": "the reservation",
        "resource": "the resource that went down",
        "reason": "why it is down",
        "owner": "who holds the reservation",
    },
    RESERVATION_REPLACED: {
        "_": "A reservation made by selector got another matching resource for one that "
             "went down.",
        "reservation_id": "the reservation",
        "old": "the resource that went down",
        "new": "the resource that replaces it",
        "owner": "who holds the reservation",
        "start_time": "from when the new resource is booked, epoch seconds",
        "end_time": "until when, epoch seconds",
    },
}

# Every error code a reply may carry, and what it means to the caller.
ERROR_CODES: dict[str, str] = {
    "bad_request": "the request is malformed or an argument is out of range; the message "
                   "names the key and the reason",
    "not_found": "no such resource, reservation, job, queue or node",
    "unavailable": "what was asked for cannot be had (then, or at all); extend adds "
                   "max_extension",
    "conflict": "the reservation is in a state that does not allow this (ended, active ...)",
    "too_early": "claimed before time_available (the reply carries time_available)",
    "claim_late": "claimed after expire_time; the reply may carry a fresh offer",
    "forbidden": "someone else's reservation, an admin command, or over a per-user limit "
                 "(limits.*; the message names it)",
    "unauthenticated": "the request carries no identity the daemon accepts",
    "overloaded": "too many requests in flight on this connection; try again",
    "backend_error": "the batch backend (Slurm) failed; the message says how",
    "standby": "this atsd is a standby: another one leads (the reply's `leader` is its "
               "endpoint, when known) or none does yet; clients move on to the next "
               "endpoint of their address",
    "internal": "the daemon failed (for example its state file could not be written); "
                "nothing was changed",
}
