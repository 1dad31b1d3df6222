"""Wire protocol v1: msgpack maps in, msgpack maps out, and the checks between.

This module knows the shape of requests and replies and nothing of what commands do. Each
command declares its arguments with the ``Arg`` kinds below; ``validate`` applies them, so
that every refusal of bad input is a ``bad_request`` that names the key and the reason, and
no command body ever sees a NaN, a negative duration or a key it did not declare.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
from atsclient.wire import ERROR_CODES as WIRE_ERROR_CODES

from .engine.errors import BadRequest, EngineError, clip, shown

PROTOCOL_VERSION = 1

# every error code a reply may carry, defined once in atsclient.wire (the fuzz tests hold
# replies to it)
ERROR_CODES = tuple(WIRE_ERROR_CODES)

# Largest time and duration accepted: far enough for any lab (year 5138, ~31 years) and
# small enough that adding them never overflows or loses all precision.
MAX_TIME = 1e11
MAX_DURATION = 1e9

MAX_MESSAGE = 300           # characters of an error message


@dataclass(frozen=True, slots=True)
class Limits:
    """msgpack limits applied while decoding, before any object is built."""

    max_str_len: int = 64 * 1024
    max_bin_len: int = 64 * 1024
    max_array_len: int = 10_000
    max_map_len: int = 1_000
    max_depth: int = 8


def decode(data: bytes, limits: Limits) -> dict:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True,
                              max_str_len=limits.max_str_len, max_bin_len=limits.max_bin_len,
                              max_array_len=limits.max_array_len,
                              max_map_len=limits.max_map_len, max_ext_len=0)
    except ValueError as exc:  # msgpack's own words, e.g. "70000 exceeds max_str_len(65536)"
        raise BadRequest(f"request is not valid msgpack within atsd's limits: "
                         f"{clip(str(exc), 80)}") from None
    except Exception as exc:  # msgpack raises many types for many kinds of garbage
        raise BadRequest(f"request is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"request must be a msgpack map, not {type(obj).__name__}")
    if too_deep(obj, limits.max_depth):
        raise BadRequest(f"request nests deeper than {limits.max_depth} levels")
    return obj


def too_deep(obj: Any, levels: int) -> bool:
    """Whether maps and lists nest more than ``levels`` deep. Stops at the limit, so a
    request nested a thousand deep (msgpack allows 1024) never exhausts Python's stack."""
    if isinstance(obj, dict):
        obj = obj.values()
    elif not isinstance(obj, list):
        return False
    if levels == 0:
        return True
    return any(too_deep(v, levels - 1) for v in obj if isinstance(v, (dict, list)))


def encode(reply: dict) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)


def ok_reply(result: dict, request_id: str | None) -> dict:
    reply = {"ok": True, **result}
    if request_id is not None:
        reply["request_id"] = request_id
    return reply


def error_reply(code: str, message: str, request_id: str | None = None, **extra) -> dict:
    """Refusals quote request values through ``shown``; the cut at MAX_MESSAGE is the
    backstop for text that is not ours (an exception's, a backend's), so no error reply
    (sent, or kept for retries) is ever long."""
    reply = {"ok": False, "error": {"code": code, "message": clip(message, MAX_MESSAGE)},
             **extra}
    if request_id is not None:
        reply["request_id"] = request_id
    return reply


def reply_for(exc: EngineError, request_id: str | None) -> dict:
    """The one place an engine refusal becomes a wire error."""
    return error_reply(exc.code, exc.message, request_id, **exc.extra)


# --- argument kinds: each checks one value and returns it, normalised ---

def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{key} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise BadRequest(f"{key} must be finite, not {value}")
    return value


def TIME(value: Any, key: str) -> float:
    value = _number(value, key)
    if not 0 <= value <= MAX_TIME:
        raise BadRequest(f"{key} must be an epoch time in seconds, not {value}")
    return value


def DURATION(value: Any, key: str) -> float:
    value = _number(value, key)
    if value < 0 or value > MAX_DURATION:
        raise BadRequest(f"{key} must be a duration from 0 to {MAX_DURATION:g} s, not {value}")
    return value


def POSITIVE_DURATION(value: Any, key: str) -> float:
    value = DURATION(value, key)
    if value == 0:
        raise BadRequest(f"{key} must be more than 0 s")
    return value


def FRACTION(value: Any, key: str) -> float:
    value = _number(value, key)
    if not 0 <= value <= 1:
        raise BadRequest(f"{key} must be in [0, 1], not {value}")
    return value


def BOOL(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, not {type(value).__name__}")
    return value


def count(lo: int, hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{key} must be an integer, not {type(value).__name__}")
        if not lo <= value <= hi:
            raise BadRequest(f"{key} must be from {lo} to {hi}, not {value}")
        return value
    check.described = f"integer {lo}..{hi}"
    return check


def TEXT(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, not {type(value).__name__}")
    if not value or len(value) > 256:
        raise BadRequest(f"{key} must be 1 to 256 characters")
    return value


def one_of(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if value not in choices:
            raise BadRequest(f"{key} must be one of {', '.join(choices)}, not {shown(value)}")
        return value
    check.described = " or ".join(f'"{c}"' for c in choices)
    return check


MAX_CONFIG_BYTES = 4096     # a resource config is kept with the reservation: a short map


def CONFIG(value: Any, key: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{key} must be a map, not {type(value).__name__}")
    size = len(encode(value))
    if size > MAX_CONFIG_BYTES:
        raise BadRequest(f"{key} must encode to at most {MAX_CONFIG_BYTES} bytes, not {size}")
    return value


def list_of(item: Callable[[Any, str], Any], max_len: int = 1000) -> Callable[[Any, str], list]:
    def check(value: Any, key: str) -> list:
        if not isinstance(value, list):
            raise BadRequest(f"{key} must be a list, not {type(value).__name__}")
        if len(value) > max_len:
            raise BadRequest(f"{key} may hold at most {max_len} items")
        return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]
    check.described = f"list of at most {max_len} × {describe(item)}"
    return check


def map_of(**fields: Arg) -> Callable[[Any, str], dict]:
    """A nested map with declared keys (items of ``nodelist``, ``request`` ...)."""
    def check(value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise BadRequest(f"{key} must be a map, not {type(value).__name__}")
        return validate_args(value, fields, prefix=f"{key}.")
    check.described = "map {" + ", ".join(
        f"{k}{'' if a.required else '?'}: {describe(a.kind)}" for k, a in fields.items()) + "}"
    return check


def describe(kind) -> str:
    """An argument kind in words, for docs/protocol.md."""
    return getattr(kind, "described", None) or KIND_NAMES.get(kind) or kind.__name__.strip("_")


@dataclass(frozen=True, slots=True)
class Arg:
    kind: Callable[[Any, str], Any]
    required: bool = False
    default: Any = None
    nullable: bool = False    # null accepted and taken as "not given" (kissats sends nulls)


def required(kind) -> Arg:
    return Arg(kind, required=True)


def optional(kind, default: Any = None) -> Arg:
    return Arg(kind, default=default, nullable=True)


KIND_NAMES = {TIME: "time (epoch seconds)", DURATION: "duration (seconds, 0 or more)",
              POSITIVE_DURATION: "duration (seconds, more than 0)", FRACTION: "number 0..1",
              BOOL: "boolean", TEXT: "string (1..256 characters)", CONFIG: "map"}

ENVELOPE = ("command", "request_id", "user")


def validate_args(request: dict, args: dict[str, Arg], prefix: str = "") -> dict:
    unknown = [k for k in request if k not in args and (prefix or k not in ENVELOPE)]
    if unknown:
        raise BadRequest(f"unknown key {prefix}{clip(sorted(map(str, unknown))[0])}")
    out = {}
    for key, arg in args.items():
        value = request.get(key)
        if value is None:
            if key in request and not arg.nullable:
                raise BadRequest(f"{prefix}{key} must not be null")
            if arg.required:
                raise BadRequest(f"missing key {prefix}{key}")
            out[key] = arg.default
        else:
            out[key] = arg.kind(value, prefix + key)
    return out


def request_id(request: dict) -> str | None:
    """The request_id of a decoded request, to echo even when the rest of it is refused;
    None when it has none or one ``envelope`` refuses."""
    rid = request.get("request_id")
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None


def envelope(request: dict) -> tuple[str, str | None]:
    """The command name and self-declared user of a decoded request, once its request_id,
    command and user are of the kinds they must be."""
    command = request.get("command")
    user = request.get("user")
    if request.get("request_id") is not None and request_id(request) is None:
        raise BadRequest("request_id must be a string of 1 to 128 characters")
    if not isinstance(command, str):
        raise BadRequest("missing key command" if command is None else "command must be a string")
    if user is not None and (not isinstance(user, str) or not 0 < len(user) <= 64):
        raise BadRequest("user must be a string of 1 to 64 characters")
    if user is not None and not user.isprintable():
        raise BadRequest("user must not hold control, format or separator characters (NUL, "
                         "newline, direction marks ...); a space is fine")
    return command, user


def digest(request: dict) -> bytes:
    """What a request asks, apart from who asks and its request_id: the command and every
    argument, keys in sorted order, so a retry matches its first send and any other
    request does not."""
    body = _canonical({k: v for k, v in request.items() if k not in ("request_id", "user")})
    return hashlib.blake2b(msgpack.packb(body, use_bin_type=True), digest_size=16).digest()


def _canonical(value: Any) -> Any:
    """Maps as lists of pairs in key order (keys are str or bytes: strict_map_key)."""
    if isinstance(value, dict):
        return [[k, _canonical(v)] for k, v in
                sorted(value.items(), key=lambda kv: (isinstance(kv[0], bytes), kv[0]))]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value
