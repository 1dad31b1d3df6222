"""CTest's RESOURCE_GROUPS property and the environment CTest gives a test for it.

A test that already runs under ``ctest --resource-spec-file`` reads its resources from
``CTEST_RESOURCE_GROUP_*`` variables; producing the same variables from an atsd allocation
lets it run unchanged. The grammar is CTest's lexer (CMake
``Source/LexerParser/cmCTestResourceGroupsLexer.in.l``), checked against the cases of
``Tests/CMakeLib/testCTestResourceGroups.cxx``:

- the text is a ``;``-separated list of group descriptions; each description is an optional
  group count N followed by ``,``-separated requirements ``type:slots`` (type matches
  ``[a-z_][a-z0-9_]*``, slots is digits); the description stands for N copies of the group
  (default 1, and 0 is allowed: no group);
- runs of ``;`` or ``,`` count as one, and empty descriptions are ignored, so ``""``,
  ``";"`` and ``"a:1;;b:2"`` are valid; a bare count is that many empty groups (``"2"``);
- no spaces, signs or other characters anywhere.

One quirk is kept on purpose, because CTest has it: a ``;`` that comes straight after a
``,`` does not end the group, so ``"2,a:1,;b:1"`` is two copies of one group ``[a:1, b:1]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["allocation_by_group", "ctest_environment", "flatten_groups",
           "parse_resource_groups"]

_TOKEN = re.compile(r"(?P<req>[a-z_][a-z0-9_]*):|(?P<num>[0-9]+)|(?P<comma>,+)|(?P<semi>;+)")
_LIMIT = 2**31 - 1  # CTest keeps slots in an int

# Lexer states, named as in CTest's lexer.
_INITIAL, _GROUPS_START, _GROUPS_END, _RES_START, _RES_COUNT, _RES_END = range(6)
_ALLOWED = {  # token kinds each state accepts
    _INITIAL: ("req", "num", "semi"),
    _GROUPS_START: ("req", "num", "semi"),
    _GROUPS_END: ("comma", "semi"),
    _RES_START: ("req", "semi"),
    _RES_COUNT: ("num",),
    _RES_END: ("comma", "semi"),
}
_EXPECTED = {
    _INITIAL: "a group count or type:slots",
    _GROUPS_START: "a group count or type:slots",
    _GROUPS_END: "',' or ';' after the group count",
    _RES_START: "type:slots (a type is [a-z_][a-z0-9_]*; a count only starts a group)",
    _RES_COUNT: "a number of slots",
    _RES_END: "',' or ';' after the slots",
}


def parse_resource_groups(text: str) -> list[list[tuple[str, int]]]:
    """Parse a RESOURCE_GROUPS value into groups of ``(type, slots)`` requirements.

    ``"2,gpus:2;gpus:4,crypto_chips:2"`` gives
    ``[[("gpus", 2)], [("gpus", 2)], [("gpus", 4), ("crypto_chips", 2)]]``.
    Raises ValueError, naming the position, when CTest would refuse the text.
    """
    groups: list[list[tuple[str, int]]] = []
    state, count, rtype = _INITIAL, 1, ""
    current: list[tuple[str, int]] = []
    pos = 0

    def fail(why: str):
        return ValueError(f"bad RESOURCE_GROUPS {text!r} at position {pos}: {why}")

    while pos < len(text):
        m = _TOKEN.match(text, pos)
        kind = m.lastgroup if m else None
        if kind not in _ALLOWED[state]:
            raise fail(f"unexpected {text[pos]!r}, expected {_EXPECTED[state]}")
        value = m.group(kind)
        if kind == "req":
            rtype, state = m.group("req"), _RES_COUNT
        elif kind == "num":
            if int(value) > _LIMIT:
                raise fail(f"{value} is too large")
            if state == _RES_COUNT:
                current.append((rtype, int(value)))
                state = _RES_END
            else:
                count, state = int(value), _GROUPS_END
        elif kind == "comma":
            state = _RES_START
        else:  # semi
            if state in (_GROUPS_END, _RES_END):
                groups.extend(list(current) for _ in range(count))
                current, count = [], 1
            state = _GROUPS_START
        pos = m.end()
    if state == _RES_COUNT:
        raise fail(f"expected {_EXPECTED[state]} at the end")
    if state in (_RES_START, _GROUPS_END, _RES_END):
        groups.extend(list(current) for _ in range(count))
    return groups


def flatten_groups(groups: Sequence[Sequence[tuple[str, int]]]) -> list[tuple[str, int]]:
    """All requirements in group order: the request CTest packs, and atsd's checkout takes."""
    return [req for group in groups for req in group]


def allocation_by_group(groups: Sequence[Sequence[tuple[str, int]]],
                        ids_by_type: Mapping[str, Sequence[str]]
                        ) -> list[dict[str, list[tuple[str, int]]]]:
    """Split a per-type placement of ``flatten_groups(groups)`` back into its groups.

    ``ids_by_type`` is ``{type: [id, ...]}`` with one id per requirement of that type in
    request order (what ``atsd.engine.placement.place`` and checkout return).
    """
    taken = {rtype: 0 for rtype in ids_by_type}
    result: list[dict[str, list[tuple[str, int]]]] = []
    for group in groups:
        alloc: dict[str, list[tuple[str, int]]] = {}
        for rtype, slots in group:
            ids = ids_by_type.get(rtype, ())
            n = taken.get(rtype, 0)
            if n >= len(ids):
                raise ValueError(f"the placement has too few {rtype!r} ids for the groups")
            alloc.setdefault(rtype, []).append((ids[n], slots))
            taken[rtype] = n + 1
        result.append(alloc)
    for rtype, n in taken.items():
        if n != len(ids_by_type[rtype]):
            raise ValueError(f"the placement has more {rtype!r} ids than the groups ask for")
    return result


def ctest_environment(groups: Sequence[Sequence[tuple[str, int]]],
                      allocation: Sequence[Mapping[str, Sequence[tuple[str, int]]]]
                      ) -> dict[str, str]:
    """The ``CTEST_RESOURCE_GROUP_*`` variables CTest would set for this allocation.

    ``allocation[i]`` is ``{type: [(id, slots), ...]}`` for group i, in requirement order.
    As in CTest (cmCTestRunTest::SetupResourcesEnvironment): ``CTEST_RESOURCE_GROUP_COUNT``
    is the number of groups; ``CTEST_RESOURCE_GROUP_<i>`` lists the group's types in string
    order, comma-separated (empty for a group with no requirements); and
    ``CTEST_RESOURCE_GROUP_<i>_<TYPE>`` is ``id:X,slots:N;id:Y,slots:M``. The allocation
    must match the groups requirement for requirement, or ValueError is raised.
    """
    if len(allocation) != len(groups):
        raise ValueError(f"{len(groups)} groups but an allocation for {len(allocation)}")
    env = {"CTEST_RESOURCE_GROUP_COUNT": str(len(groups))}
    for i, (group, alloc) in enumerate(zip(groups, allocation, strict=True)):
        wanted: dict[str, list[int]] = {}
        for rtype, slots in group:
            wanted.setdefault(rtype, []).append(slots)
        got = {rtype: [slots for _, slots in items] for rtype, items in alloc.items()}
        if got != wanted:
            raise ValueError(f"group {i} asks for {wanted} but was given {got}")
        env[f"CTEST_RESOURCE_GROUP_{i}"] = ",".join(sorted(alloc))
        for rtype, items in alloc.items():
            env[f"CTEST_RESOURCE_GROUP_{i}_{rtype.upper()}"] = ";".join(
                f"id:{rid},slots:{slots}" for rid, slots in items)
    return env
