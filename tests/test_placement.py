"""The packer must give CTest's answers: its test cases, its documented example, and the
same ids as a line-by-line port of cmCTestBinPacker.cxx on random input; and it must be
complete (compared with brute force) and never over-use an instance."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atsd.engine.placement import MAX_STEPS, explain, pack, place

# Tests/CMakeLib/testCTestBinPacker.cxx: (slots needed, {id: free}, round-robin ids or None)
CMAKE_CASES = [
    ([2, 2, 2, 2], {"0": 4, "1": 4, "2": 4, "3": 4}, ["0", "1", "2", "3"]),
    ([2, 3, 2], {"0": 5, "1": 2}, ["0", "0", "1"]),
    ([1, 2, 3], {"0": 1, "1": 2, "2": 2}, None),
    ([48, 21, 31, 10, 40], {"0": 81, "1": 68, "2": 20, "3": 13}, ["0", "1", "0", "2", "1"]),
    ([30, 31, 39, 67], {"0": 16, "1": 81, "2": 97}, ["2", "1", "1", "2"]),
    ([63, 47, 1, 9], {"0": 18, "1": 29, "2": 9, "3": 52}, None),
    ([22, 29, 46, 85], {"0": 65, "1": 85, "2": 65, "3": 78}, ["2", "0", "3", "1"]),
    ([66, 11, 34, 21], {"0": 24, "1": 57, "2": 61, "3": 51}, None),
    ([72, 65, 67, 45], {"0": 29, "1": 77, "2": 98, "3": 58}, None),
    ([1000, 999, 998, 997, 996, 995, 994, 993, 992, 991, 10],
     {str(i): 1000 for i in range(10)}, None),
    ([1000, 999, 998, 997, 996, 995, 994, 993, 992, 991, 9],
     {str(i): 1000 for i in range(10)}, [str(i) for i in range(10)] + ["9"]),
]


@pytest.mark.parametrize("needs, free, want", CMAKE_CASES)
def test_cmake_cases(needs, free, want):
    assert pack(needs, free) == want


def test_cmake_disabled_attack_case_is_answered_quickly():
    """CTest disabled this case: its search takes n! steps. Here it is cut off by MAX_STEPS
    (and the answer, None, is also the right one)."""
    needs = [1000, 999, 998, 997, 996, 995, 994, 993, 992, 991, 19]
    free = {str(i): 1000 + i for i in range(10)}
    t = time.perf_counter()
    assert pack(needs, free) is None
    assert time.perf_counter() - t < 2
    # Where a larger budget is allowed the search proves it: 19 fits nowhere in the end.
    assert pack(needs[:4] + [19], {str(i): 1000 + i for i in range(4)},
                max_steps=10**6) is None


# ctest.1.rst, "Resource Specification File" and "Environment Variables": RESOURCE_GROUPS
# "2,gpus:2;gpus:4,gpus:1,crypto_chips:2" on doc_example_ctest1.json gives group 0 GPU 0
# (2 slots), group 1 GPU 2 (2 slots), group 2 GPU 1 (4 slots) and GPU 3 (1 slot) and
# card0 (2 slots).
DOC_FREE = {"gpus": {"0": 2, "1": 4, "2": 2, "3": 1}, "crypto_chips": {"card0": 4}}
DOC_REQUEST = [("gpus", 2), ("gpus", 2), ("gpus", 4), ("gpus", 1), ("crypto_chips", 2)]


def test_ctest_documented_example():
    assert place(DOC_REQUEST, DOC_FREE) == {"gpus": ["0", "2", "1", "3"],
                                            "crypto_chips": ["card0"]}


def test_runcmake_resspec_shapes():
    """widgets of resspec.json: 0:4 1:2 2:4 3:8 4..7:1."""
    widgets = {"0": 4, "1": 2, "2": 4, "3": 8, "4": 1, "5": 1, "6": 1, "7": 1}
    assert pack([8], widgets) == ["3"]
    assert pack([1, 1], widgets) == ["3", "3"]  # 3 still has the most free slots (7)
    assert pack([4, 4, 4], widgets) == ["3", "3", "0"]  # 3 keeps its place among equals
    assert pack([9], widgets) is None
    assert pack([8, 4, 4, 2, 1, 1, 1, 1], widgets) is not None  # exactly full
    assert pack([8, 4, 4, 2, 1, 1, 1, 1, 1], widgets) is None


# --- a line-by-line port of cmCTestBinPacker.cxx, round-robin strategy -----------------

def ctest_reference(needs, free):
    allocations = [{"slots": n, "id": ""} for n in needs]
    ptrs = sorted(allocations, key=lambda a: -a["slots"])  # stable_sort on rbegin/rend
    res = dict(free)
    order = sorted(res)  # std::map order
    order = [x for x in sorted(order, key=lambda i: -res[i])]  # InitialSort (stable)

    def incremental_sort(res2, order2, last):
        tmp = order2[last]
        i = last
        while i < len(order2) - 1 and res2[order2[i + 1]] > res2[tmp]:
            order2[i] = order2[i + 1]
            i += 1
        order2[i] = tmp

    def allocate(res, order, k):
        ri = 0
        while ri < len(order):
            if res[order[ri]] >= ptrs[k]["slots"]:
                ptrs[k]["id"] = order[ri]
                if k + 1 >= len(ptrs):
                    return True
                res2, order2 = dict(res), list(order)
                res2[order2[ri]] -= ptrs[k]["slots"]
                incremental_sort(res2, order2, ri)
                if allocate(res2, order2, k + 1):
                    return True
            ptrs[k]["id"] = ""
            free_slots = res[order[ri]]
            ri += 1
            while ri < len(order) and res[order[ri]] == free_slots:
                ri += 1
        return False

    if not needs:
        return []
    return [a["id"] for a in allocations] if allocate(res, order, 0) else None


def test_reference_port_agrees_with_cmake_cases():
    for needs, free, want in CMAKE_CASES:
        assert ctest_reference(needs, free) == want


def brute_force_fits(needs, free):
    ids = list(free)
    for choice in itertools.product(ids, repeat=len(needs)):
        used = Counter()
        for rid, n in zip(choice, needs, strict=True):
            used[rid] += n
        if all(used[r] <= free[r] for r in ids):
            return True
    return False


small_ids = st.sampled_from("abcdefgh") | st.from_regex(r"[0-9]{1,2}", fullmatch=True)
small_free = st.dictionaries(small_ids, st.integers(0, 9), max_size=5)
small_needs = st.lists(st.integers(0, 9), max_size=6)


@settings(max_examples=400, deadline=None)
@given(small_needs, small_free)
def test_same_ids_as_ctest(needs, free):
    assert pack(needs, free) == ctest_reference(needs, free)


@settings(max_examples=400, deadline=None)
@given(small_needs, small_free)
def test_complete_compared_with_brute_force(needs, free):
    """CTest's skip of equally free instances loses nothing: it fails only if nothing fits."""
    got = pack(needs, free)
    assert (got is not None) == (not needs or brute_force_fits(needs, free))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=25),
       st.dictionaries(st.from_regex(r"[a-z0-9_]{1,4}", fullmatch=True), st.integers(0, 60),
                       max_size=30))
def test_never_over_uses_an_instance(needs, free):
    got = pack(needs, free)
    if got is None:
        return
    assert len(got) == len(needs)
    used = Counter()
    for rid, n in zip(got, needs, strict=True):
        assert rid in free
        used[rid] += n
    assert all(used[r] <= free[r] for r in used)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=40), st.integers(1, 40),
       st.integers(1, 8))
def test_alike_instances_are_fast_and_exact(needs, m, size):
    """The usual lab: many instances of one size. One try per requirement suffices."""
    free = {f"g{i}": size for i in range(m)}
    got = pack(needs, free, max_steps=len(needs) * 4 + 10)
    want = ctest_reference(needs, free)
    assert got == want


def test_input_is_not_changed():
    needs, free = [3, 1, 2], {"a": 3, "b": 3}
    pack(needs, free)
    assert needs == [3, 1, 2] and free == {"a": 3, "b": 3}


@pytest.mark.parametrize("needs, free", [([-1], {"a": 1}), ([1.5], {"a": 2}), ([True], {"a": 1}),
                                         ([1], {"a": -1}), ([1], {"a": "2"})])
def test_bad_input(needs, free):
    with pytest.raises(ValueError):
        pack(needs, free)


def test_edges():
    assert pack([], {}) == []
    assert pack([], {"a": 0}) == []
    assert pack([0], {}) is None  # no instance at all
    assert pack([0], {"a": 0}) == ["a"]
    assert pack([1], {"b": 1, "a": 1}) == ["a"]  # ties: string order of id
    assert pack([1], {"10": 1, "9": 1}) == ["10"]  # string order, not numeric


def test_round_robin_spreads_over_alike_instances():
    # a used: a moves behind b and c. b used: behind c, but ahead of a (equal free). c
    # used: it stays first among the equals, so it takes the next one too.
    assert pack([1, 1, 1, 1, 1], {"a": 2, "b": 2, "c": 2}) == ["a", "b", "c", "c", "b"]
    assert ctest_reference([1, 1, 1, 1, 1], {"a": 2, "b": 2, "c": 2}) == ["a", "b", "c", "c", "b"]


def test_result_is_in_request_order():
    assert pack([1, 4, 2], {"x": 4, "y": 2, "z": 1}) == ["z", "x", "y"]


# --- place and explain ----------------------------------------------------------------

def test_place_all_or_nothing():
    free = {"gpus": {"0": 2}, "cpus": {"0": 4}}
    assert place([("cpus", 1), ("gpus", 2), ("cpus", 3)], free) == {"cpus": ["0", "0"],
                                                                  "gpus": ["0"]}
    assert place([("cpus", 1), ("gpus", 3)], free) is None
    assert place([("cpus", 1), ("fpgas", 1)], free) is None
    assert place([], free) == {}
    assert place([("gpus", 1)], {"gpus": {}}) is None


def test_place_packs_each_type_on_its_own():
    free = {"a": {"0": 1, "1": 1}, "b": {"0": 1, "1": 1}}
    assert place([("a", 1), ("b", 1), ("a", 1), ("b", 1)], free) == {"a": ["0", "1"],
                                                                   "b": ["0", "1"]}


def test_explain_fits():
    assert explain(DOC_REQUEST, DOC_FREE, DOC_FREE) == ""


def test_explain_missing_types():
    assert explain([("x", 1), ("gpus", 1), ("y", 2)], DOC_FREE, DOC_FREE) == "missing types: x, y"


def test_explain_short_now():
    total = {"gpus": {"0": 4, "1": 4}}
    free = {"gpus": {"0": 2, "1": 2}}
    assert explain([("gpus", 3), ("gpus", 3)], free, total) == \
        "gpus: requested 6 slots, 4 available"


def test_explain_short_ever():
    total = {"gpus": {"0": 2, "1": 2}}
    assert explain([("gpus", 3), ("gpus", 3)], total, total) == \
        "gpus: requested 6 slots, only 4 exist"


def test_explain_never_fits_one_per_instance():
    total = {"gpus": {"0": 2, "1": 2}}
    assert explain([("gpus", 4)], total, total) == \
        "gpus: requests [4] never fit one per instance of [2, 2]"


def test_explain_fragmented_now():
    total = {"gpus": {"0": 4, "1": 4}}
    free = {"gpus": {"0": 2, "1": 2}}
    assert explain([("gpus", 3), ("gpus", 1)], free, total) == \
        "gpus: 4 free slots do not fit requests [3, 1] one per instance (free: 0=2, 1=2)"


def test_explain_several_reasons():
    total = {"gpus": {"0": 4, "1": 4}, "cpus": {"0": 2}}
    free = {"gpus": {"0": 2, "1": 2}, "cpus": {"0": 2}}
    got = explain([("fpga", 1), ("gpus", 3), ("gpus", 3), ("cpus", 3)], free, total)
    assert got == ("missing types: fpga; gpus: requested 6 slots, 4 available; "
                   "cpus: requested 3 slots, only 2 exist")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), max_size=6),
       st.dictionaries(st.sampled_from(["a", "b"]),
                       st.dictionaries(st.sampled_from(["0", "1", "2"]), st.integers(0, 6),
                                       max_size=3), max_size=2))
def test_explain_is_empty_exactly_when_place_fits(request, total):
    assert (explain(request, total, total) == "") == (place(request, total) is not None)


def test_max_steps_is_a_sane_default():
    assert 1_000 <= MAX_STEPS <= 1_000_000
