"""The help of each ``atsclient`` subcommand that sends a wire command, by
the command: the first line of its doc in atsd's command table (atsd/commands), "(admin)"
added for an admin command. Written by ``python -m atsd.protocol_doc --cli-help``, not by
hand: tests/test_protocol_doc.py fails when this file is not what the table writes."""

HELP = {
    "accommodates": "Whether a checkout would be granted now, and why not",
    "ack_delete_pending": "Let nodes you hold that are being revoked go now",
    "cancel_request": "Stop a request that still waits, and give back what it booked",
    "cancel_reservation": "Cancel a batch reservation that has not started",
    "check_available": "When a resource, or a number of matching ones, is free",
    "checkin": "Give an allocation's slots back now",
    "checkout": "Check out slots of several types now, all or nothing, for a lease",
    "claim_reservation": "Claim a pre-reservation: hold it until its end",
    "create_deadline_reservation":
        "Reserve hosts of a batch queue as early as possible, to end by a deadline",
    "create_reservation": "Reserve hosts of a batch queue from a start time",
    "extend_reservation": "Extend a reservation, or an allocation's lease",
    "get_all_resources": "Names of every resource in the inventory",
    "get_audit": "Who changed what, and who was refused, oldest first",
    "get_available_resources": "Names of the resources in service that nobody holds right now",
    "get_config": "The resource's current config",
    "get_events": "The events since a sequence number, so that a follower misses none",
    "get_job_status": "A batch job's state, exit code and output",
    "get_pool": "Free and total slots per instance, and the checkouts waiting",
    "get_reservation_status": "A batch reservation's state, window, hosts and jobs",
    "get_resource_values": "What each node is worth, from 0 to 1",
    "get_stats": "The daemon's health: connections, requests, reservations, state file (admin)",
    "get_version": "The daemon's version, the wire protocol version it speaks, and its role",
    "list_queues": "The batch queues, where job scripts must lie and where their output goes",
    "list_reservations": "The live reservations",
    "list_resources": "Every resource, its state, and who holds it until when",
    "release_reservation": "End a (pre-)reservation now and free its slots",
    "reload": "Apply the config file again, whole or not at all (admin)",
    "request_reservation": "Reserve one or more resources together, for a window",
    "restore": "Put revoked nodes back in service (admin)",
    "revoke": "Take nodes back: their holders get a countdown (admin)",
    "set_resource_state": "Take a resource down or bring it back up (admin)",
    "set_resource_values": "Say what each node is worth, from 0 to 1 (admin)",
    "submit_job_to_reservation": "Submit a job script into a batch reservation",
    "whoami": "Who the daemon sees you as, and whether you are an admin",
}
