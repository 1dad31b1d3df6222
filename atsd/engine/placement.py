"""Which instances serve a request: CTest's bin packer, round-robin strategy.

This reproduces ``cmAllocateCTestResourcesRoundRobin`` (CMake
``Source/CTest/cmCTestBinPacker.cxx``) so that a test gets from atsd the same instances
that ``ctest --resource-spec-file`` would give it. The rule, in plain words:

- Each resource type is packed on its own, and a request is granted all or nothing.
- A requirement of N slots is served by one instance with at least N free slots; an
  instance may serve several requirements if it has room for all of them.
- Requirements are placed largest first; equal ones keep the order they were asked in.
- Instances are tried most free slots first; equal ones in string order of their id.
  After an instance takes a requirement it moves down the list past every instance that
  now has more free slots than it (it stays ahead of those with the same number), which
  spreads requirements round-robin over equally free instances.
- When a requirement cannot be placed, the search backs up and tries the previous
  requirement on the next instance, skipping instances with the same free slots as one
  already tried at that step (they would lead to the same dead end). It gives up only
  when every distinct choice has failed, so it finds a placement whenever one exists.

The result is the instance id for each requirement, in the order the requirements were
asked. Two additions leave CTest's answers unchanged: a request whose slots exceed the free
total is refused without a search, and a state that was searched without success (the
step and the free slots left) is not searched again. One addition can differ: the search
stops after MAX_STEPS tries and answers None, which is wrong only when a placement exists
but is very hard to find (see MAX_STEPS).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import clip

__all__ = ["MAX_STEPS", "explain", "pack", "place"]

# Bin packing is NP-hard and CTest's search is exponential on contrived input (many
# instances of distinct sizes, needs that nearly fill each one: CTest disabled that test
# because it takes n! steps). A daemon must answer every request, so the search gives up
# after this many tries (a few hundredths of a second) and says "does not fit". Requests
# that fit usually take one or two tries per requirement.
MAX_STEPS = 20_000


def pack(requirements: Sequence[int], free: Mapping[str, int], *,
         max_steps: int = MAX_STEPS) -> list[str] | None:
    """Place requirements (slots each) of one type on instances ``{id: free slots}``.

    Returns the instance id for each requirement in the order given, or None when they
    do not fit. No requirements always fit (CTest never asks that question). After
    ``max_steps`` tries the search gives up and answers None (see MAX_STEPS).
    """
    _check(requirements, free)
    if not requirements:
        return []
    if sum(requirements) > sum(free.values()):
        return None  # cannot fit; saves a search that would end the same way
    # Largest first; sorted() is stable, so equal requirements keep their order.
    order = sorted(range(len(requirements)), key=lambda i: -requirements[i])
    chosen = _search([requirements[i] for i in order], free, max_steps)
    if chosen is None:
        return None
    result = [""] * len(requirements)
    for pos, idx in enumerate(order):
        result[idx] = chosen[pos]
    return result


def _check(requirements: Sequence[int], free: Mapping[str, int]) -> None:
    for n in requirements:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"slots needed must be a non-negative int, not {n!r}")
    for ident, f in free.items():
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"free slots of {ident!r} must be a non-negative int, not {f!r}")


def _search(needs: list[int], free: Mapping[str, int], max_steps: int) -> list[str] | None:
    """Depth-first over instances for ``needs`` (largest first): the instance id for each,
    or None when they do not fit or ``max_steps`` tries ran out."""
    start = tuple(sorted(free.items(), key=lambda kv: (-kv[1], kv[0])))
    chosen: list[str] = [""] * len(needs)
    dead: set[tuple[int, tuple[int, ...]]] = set()
    # One frame per requirement placed so far: (instances in try order, next position).
    frames: list[tuple[tuple[tuple[str, int], ...], int]] = [(start, 0)]
    while frames and max_steps > 0:
        max_steps -= 1
        k = len(frames) - 1
        state, i = frames[-1]
        if i < len(state) and state[i][1] >= needs[k]:
            ident, f = state[i]
            j = i + 1
            while j < len(state) and state[j][1] == f:
                j += 1  # same free slots as this one: same outcome, skip them
            frames[-1] = (state, j)
            chosen[k] = ident
            if k + 1 == len(needs):
                return chosen
            child = _take(state, i, needs[k])
            if (k + 1, tuple(s for _, s in child)) not in dead:
                frames.append((child, 0))
        else:
            # The list is sorted by free slots, so nothing further along fits either.
            dead.add((k, tuple(s for _, s in state)))
            frames.pop()
    return None


def _take(state, i: int, n: int):
    """Take n slots from state[i], move it down past those now freer (CTest's IncrementalSort)."""
    items = list(state)
    ident, f = items.pop(i)
    f -= n
    while i < len(items) and items[i][1] > f:
        i += 1
    items.insert(i, (ident, f))
    return tuple(items)


def place(request: Sequence[tuple[str, int]],
          free: Mapping[str, Mapping[str, int]]) -> dict[str, list[str]] | None:
    """Place ``[(type, slots), ...]`` on ``{type: {id: free slots}}``, all or nothing.

    Returns ``{type: [id, ...]}`` with one id per requirement of that type, in request
    order, or None if any type is missing or does not fit.
    """
    by_type = _by_type(request)
    result: dict[str, list[str]] = {}
    for rtype, needs in by_type.items():
        if rtype not in free:
            return None
        ids = pack(needs, free[rtype])
        if ids is None:
            return None
        result[rtype] = ids
    return result


def explain(request: Sequence[tuple[str, int]],
            free: Mapping[str, Mapping[str, int]],
            total: Mapping[str, Mapping[str, int]]) -> str:
    """Say why a request does not fit now (``free``) or ever (``total``); "" if it fits.

    Reasons, joined with "; ": ``missing types: a, b``; ``gpus: requested 6 slots, only 4
    exist``; ``gpus: requests [4] never fit one per instance of [2, 2]``; ``gpus: requested
    6 slots, 4 available``; ``gpus: 4 free slots do not fit requests [3, 1] one per
    instance (free: 0=2, 1=2)``.
    """
    by_type = _by_type(request)
    missing = [t for t in by_type if t not in total]
    reasons = [f"missing types: {clip(', '.join(missing), 120)}"] if missing else []
    for rtype, needs in by_type.items():
        if rtype in missing:
            continue
        want = sum(needs)
        have_total = total[rtype]
        have_free = free.get(rtype, {})
        if want > sum(have_total.values()):
            reasons.append(f"{rtype}: requested {want} slots, only "
                           f"{sum(have_total.values())} exist")
        elif pack(needs, have_total) is None:
            sizes = sorted(have_total.values(), reverse=True)
            reasons.append(f"{rtype}: requests {clip(str(needs))} never fit one per instance "
                           f"of {sizes}")
        elif want > sum(have_free.values()):
            reasons.append(f"{rtype}: requested {want} slots, "
                           f"{sum(have_free.values())} available")
        elif pack(needs, have_free) is None:
            shown = ", ".join(f"{i}={have_free[i]}" for i in sorted(have_free))
            reasons.append(f"{rtype}: {sum(have_free.values())} free slots do not fit "
                           f"requests {clip(str(needs))} one per instance (free: {shown})")
    return "; ".join(reasons)


def _by_type(request: Sequence[tuple[str, int]]) -> dict[str, list[int]]:
    """Group a request's slot counts by type, keeping request order within each type."""
    by_type: dict[str, list[int]] = {}
    for rtype, slots in request:
        by_type.setdefault(rtype, []).append(slots)
    return by_type
