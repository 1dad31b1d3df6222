"""Read a lab inventory from a CTest resource spec file (JSON) or a canary resource pool (YAML).

The JSON reader follows CTest's own (CMake ``Source/CTest/cmCTestResourceSpec.cxx`` with the
helpers of ``cmJSONHelpers.h`` and jsoncpp's strict mode), so a file that ``ctest
--resource-spec-file`` accepts is accepted here and a file it refuses is refused here:

- the document is JSON in jsoncpp's strict mode (a leading UTF-8 BOM is dropped; duplicate
  keys, comments, ``NaN`` and trailing data are errors) and its root is an object;
- ``version`` is required: an object with integer ``major`` and ``minor`` (both required,
  extra keys allowed); only 1.0 is accepted;
- ``local`` is required: a list of at most one object; an empty list is an empty spec;
- each key of ``local[0]`` names a resource type; a key that does not match
  ``^[a-z_][a-z0-9_]*$`` is silently skipped, as CTest does;
- each type's value is a list (possibly empty: the type is kept, with no instances) of
  objects, each with ``id`` (a string matching ``^[a-z0-9_]+$``) and optional ``slots`` (an
  unsigned 32-bit integer, default 1); extra keys are allowed; duplicate ids are not checked.

"Integer" means what jsoncpp's ``isInt``/``isUInt`` mean: a JSON number with an integral
value in range, so ``2`` and ``2.0`` pass and ``true``, ``"2"`` and ``2.5`` do not.

canary's YAML pool (a path ending ``.yaml``/``.yml``) is
``resource_pool: {additional_properties: {...}, resources: {type: [{id, slots}, ...]}}``,
with or without the ``resource_pool:`` wrapper. The same type, id and slots rules apply,
except that an integer id is turned into a string, as canary does (``id: 0`` is ``"0"``).

Only ``load_spec`` touches the file system; the ``parse_*`` functions work on text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

__all__ = ["Spec", "SpecError", "SpecInstance", "load_spec", "parse_spec_json", "parse_spec_yaml"]

_TYPE_RE = re.compile(r"[a-z_][a-z0-9_]*")
_ID_RE = re.compile(r"[a-z0-9_]+")
_INT_RANGE = (-(2**31), 2**31 - 1)  # jsoncpp isInt
_UINT_RANGE = (0, 2**32 - 1)  # jsoncpp isUInt


class SpecError(Exception):
    """A spec file that cannot be used; the message names the file, so a log line is enough."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class SpecInstance:
    """One instance of a resource type, with its number of slots."""

    type: str
    id: str
    slots: int


@dataclass(frozen=True)
class Spec:
    """The inventory: every type named (a type may have no instances) and every instance;
    a canary pool's ``additional_properties`` too (served back by ``get_pool``)."""

    types: tuple[str, ...]
    instances: tuple[SpecInstance, ...]
    additional_properties: dict = field(default_factory=dict)


def load_spec(path) -> Spec:
    """Read and check a spec file; YAML when its name ends .yaml or .yml, else CTest JSON."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, "file not found") from None
    except OSError as e:
        raise SpecError(path, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        return parse_spec_yaml(text, path)
    return parse_spec_json(text, path)


def _is_int(value, lo: int, hi: int) -> bool:
    """jsoncpp's isInt/isUInt: an integral number in range; a bool is not a number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return lo <= value <= hi
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer() and lo <= value <= hi
    return False


def _no_duplicates(pairs):
    """jsoncpp's strict mode rejects a repeated key; Python's json would keep the last."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_spec_json(text: str, path="<string>") -> Spec:
    """Parse the text of a CTest resource spec file; ``path`` only names it in errors."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        raise SpecError(path, "a JSON document cannot be empty")
    try:
        root = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          strict=False)  # jsoncpp allows raw control characters in strings
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise SpecError(path, f"not valid JSON: {e}") from None
    if not isinstance(root, dict):
        raise SpecError(path, "the root must be a JSON object")
    if "version" not in root:
        raise SpecError(path, "no version specified")
    version = root["version"]
    if not isinstance(version, dict):
        raise SpecError(path, "version must be an object with major and minor")
    for key in ("major", "minor"):
        if key not in version:
            raise SpecError(path, f"version.{key} is missing")
        if not _is_int(version[key], *_INT_RANGE):
            raise SpecError(path, f"version.{key} must be an integer")
    if (version["major"], version["minor"]) != (1, 0):
        raise SpecError(path, f"unsupported version {version['major']}.{version['minor']}"
                              " (only 1.0 is supported)")
    if "local" not in root:
        raise SpecError(path, "local is missing")
    local = root["local"]
    if not isinstance(local, list):
        raise SpecError(path, "local must be a list")
    for socket in local:
        if not isinstance(socket, dict):
            raise SpecError(path, "each element of local must be an object")
    if len(local) > 1:
        raise SpecError(path, f"local has {len(local)} elements; at most 1 is supported")
    return _build(local[0] if local else {}, path, "local[0]", int_ids=False)


def parse_spec_yaml(text: str, path="<string>") -> Spec:
    """Parse canary's resource_pool YAML; ``path`` only names it in errors."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(path, f"not valid YAML: {e}") from None
    where = ""
    if isinstance(doc, dict) and "resource_pool" in doc:
        if len(doc) != 1:
            extra = sorted(str(k) for k in doc if k != "resource_pool")
            raise SpecError(path, f"unexpected keys beside resource_pool: {', '.join(extra)}")
        doc, where = doc["resource_pool"], "resource_pool."
    if not isinstance(doc, dict):
        raise SpecError(path, f"{where or 'the document'} must be a mapping with resources")
    extra = sorted(str(k) for k in doc if k not in ("additional_properties", "resources"))
    if extra:
        raise SpecError(path, f"unexpected keys in {where or 'the document'}: {', '.join(extra)}")
    if "additional_properties" in doc and not isinstance(
            doc["additional_properties"], (dict, type(None))):
        raise SpecError(path, f"{where}additional_properties must be a mapping")
    if "resources" not in doc:
        raise SpecError(path, f"{where}resources is missing")
    if not isinstance(doc["resources"], dict):
        raise SpecError(path, f"{where}resources must be a mapping of type to a list")
    spec = _build(doc["resources"], path, f"{where}resources", int_ids=True)
    return replace(spec, additional_properties=dict(doc.get("additional_properties") or {}))


def _build(socket: dict, path, where: str, int_ids: bool) -> Spec:
    """Apply CTest's type, id and slots rules to one ``{type: [instance, ...]}`` mapping."""
    types: list[str] = []
    instances: list[SpecInstance] = []
    for rtype, items in socket.items():
        if not isinstance(rtype, str) or not _TYPE_RE.fullmatch(rtype):
            continue  # CTest's MapFilter skips such keys without a word
        if not isinstance(items, list):
            raise SpecError(path, f"{where}.{rtype} must be a list of instances")
        types.append(rtype)
        for n, item in enumerate(items):
            at = f"{where}.{rtype}[{n}]"
            if not isinstance(item, dict):
                raise SpecError(path, f"{at} must be an object with an id")
            if "id" not in item:
                raise SpecError(path, f"{at} has no id")
            rid = item["id"]
            if int_ids and isinstance(rid, int) and not isinstance(rid, bool):
                rid = str(rid)
            if not isinstance(rid, str):
                raise SpecError(path, f"{at}.id must be a string")
            if not _ID_RE.fullmatch(rid):
                raise SpecError(path, f"{at}.id {rid!r} must match [a-z0-9_]+")
            slots = item.get("slots", 1)
            if not _is_int(slots, *_UINT_RANGE):
                raise SpecError(path, f"{at}.slots must be an unsigned integer, not {slots!r}")
            instances.append(SpecInstance(rtype, rid, int(slots)))
    return Spec(tuple(types), tuple(instances))
