"""RESOURCE_GROUPS must parse as CTest's lexer does (every case of CMake's
Tests/CMakeLib/testCTestResourceGroups.cxx), and the environment must be the one
ctest.1.rst documents for its example."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atsclient.resource_groups import (allocation_by_group, ctest_environment, flatten_groups,
                                       parse_resource_groups)
from atsd.engine.placement import place

# testCTestResourceGroups.cxx: text -> groups (None: CTest refuses it)
CMAKE_CASES = [
    ("threads:2", [[("threads", 2)]]),
    ("3,threads:2", [[("threads", 2)]] * 3),
    ("3,threads:2,gpus:4", [[("threads", 2), ("gpus", 4)]] * 3),
    ("2,threads:2;gpus:4", [[("threads", 2)], [("threads", 2)], [("gpus", 4)]]),
    ("threads:2;2,gpus:4", [[("threads", 2)], [("gpus", 4)], [("gpus", 4)]]),
    ("threads:2;gpus:4", [[("threads", 2)], [("gpus", 4)]]),
    ("1,threads:2;0,gpus:4", [[("threads", 2)]]),
    ("1,_:1", [[("_", 1)]]),
    ("1,a:1", [[("a", 1)]]),
    ("2", [[], []]),
    ("1;2,threads:1", [[], [("threads", 1)], [("threads", 1)]]),
    ("1,,threads:1", [[("threads", 1)]]),
    (";1,threads:1", [[("threads", 1)]]),
    ("1,threads:1;", [[("threads", 1)]]),
    ("1,threads:1,", [[("threads", 1)]]),
    ("threads:1,threads:1", [[("threads", 1), ("threads", 1)]]),
    ("threads:1;;threads:2", [[("threads", 1)], [("threads", 2)]]),
    ("1,", [[]]),
    (";", []),
    ("", []),
    (",", None),
    ("1,0:1", None),
    ("1,A:1", None),
    ("1,a-b:1", None),
    ("invalid", None),
    (",1,invalid:1", None),
    ("1,1", None),
    ("-1,invalid:1", None),
    ("1,invalid:*", None),
    ("1,invalid:-1", None),
    ("1,invalid:-", None),
    ("1,invalid:ab2", None),
    ("1,invalid :2", None),
    ("1, invalid:2", None),
    ("1,invalid:ab", None),
]


@pytest.mark.parametrize("text, want", CMAKE_CASES)
def test_cmake_cases(text, want):
    if want is None:
        with pytest.raises(ValueError, match="bad RESOURCE_GROUPS"):
            parse_resource_groups(text)
    else:
        assert parse_resource_groups(text) == want


@pytest.mark.parametrize("text, want", [
    # Read off the lexer's states: ';' right after ',' does not end the group.
    ("1,;threads:1", [[("threads", 1)]]),
    ("2,a:1,;b:1", [[("a", 1), ("b", 1)]] * 2),
    ("2,;a:1", [[("a", 1)]] * 2),
    # ';' right after a count or a requirement does end it.
    ("2;a:1", [[], [], [("a", 1)]]),
    ("a:1,,,b:2;;;c:3", [[("a", 1), ("b", 2)], [("c", 3)]]),
    ("0", []),
    ("0,a:1", []),
    ("a:0", [[("a", 0)]]),
    ("a:007", [[("a", 7)]]),
    ("02,a:1", [[("a", 1)]] * 2),
    (";;", []),
])
def test_lexer_corners(text, want):
    assert parse_resource_groups(text) == want


@pytest.mark.parametrize("text", ["a:", "a", "a:1:", "a:1 ", " a:1", "a:1\n", "2a:1", "a:1,2",
                                  "2,3,a:1", "a:+1", "a:1.5", "\u00e9:1", "a:1;b", "1:a",
                                  "a:99999999999"])
def test_refused(text):
    with pytest.raises(ValueError):
        parse_resource_groups(text)


def test_error_message_says_where_and_what():
    with pytest.raises(ValueError) as e:
        parse_resource_groups("2,gpus:2;gpus:x")
    assert str(e.value) == ("bad RESOURCE_GROUPS '2,gpus:2;gpus:x' at position 14: "
                            "unexpected 'x', expected a number of slots")


def test_groups_are_separate_lists():
    groups = parse_resource_groups("2,a:1")
    groups[0].append(("b", 1))
    assert groups[1] == [("a", 1)]


names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
group_lists = st.lists(st.lists(st.tuples(names, st.integers(0, 99)), min_size=1, max_size=4),
                       max_size=5)


@given(group_lists)
def test_round_trip(groups):
    text = ";".join(",".join(f"{t}:{n}" for t, n in g) for g in groups)
    assert parse_resource_groups(text) == groups


# --- the documented example -----------------------------------------------------------

DOC_GROUPS = "2,gpus:2;gpus:4,gpus:1,crypto_chips:2"
DOC_FREE = {"gpus": {"0": 2, "1": 4, "2": 2, "3": 1}, "crypto_chips": {"card0": 4}}
DOC_ENV = {  # ctest.1.rst, "Environment Variables"
    "CTEST_RESOURCE_GROUP_COUNT": "3",
    "CTEST_RESOURCE_GROUP_0": "gpus",
    "CTEST_RESOURCE_GROUP_1": "gpus",
    "CTEST_RESOURCE_GROUP_2": "crypto_chips,gpus",
    "CTEST_RESOURCE_GROUP_0_GPUS": "id:0,slots:2",
    "CTEST_RESOURCE_GROUP_1_GPUS": "id:2,slots:2",
    "CTEST_RESOURCE_GROUP_2_GPUS": "id:1,slots:4;id:3,slots:1",
    "CTEST_RESOURCE_GROUP_2_CRYPTO_CHIPS": "id:card0,slots:2",
}


def test_documented_environment():
    groups = parse_resource_groups(DOC_GROUPS)
    assert groups == [[("gpus", 2)], [("gpus", 2)], [("gpus", 4), ("gpus", 1), ("crypto_chips", 2)]]
    allocation = [{"gpus": [("0", 2)]}, {"gpus": [("2", 2)]},
                  {"gpus": [("1", 4), ("3", 1)], "crypto_chips": [("card0", 2)]}]
    assert ctest_environment(groups, allocation) == DOC_ENV


def test_documented_environment_end_to_end():
    """Parse, place with the packer, split into groups, and get the documented variables."""
    groups = parse_resource_groups(DOC_GROUPS)
    placed = place(flatten_groups(groups), DOC_FREE)
    assert ctest_environment(groups, allocation_by_group(groups, placed)) == DOC_ENV


def test_empty_groups_and_no_groups():
    assert ctest_environment([], []) == {"CTEST_RESOURCE_GROUP_COUNT": "0"}
    assert ctest_environment([[], [("a", 1)]], [{}, {"a": [("x", 1)]}]) == {
        "CTEST_RESOURCE_GROUP_COUNT": "2",
        "CTEST_RESOURCE_GROUP_0": "",
        "CTEST_RESOURCE_GROUP_1": "a",
        "CTEST_RESOURCE_GROUP_1_A": "id:x,slots:1",
    }


def test_type_names_are_uppercased_and_listed_in_string_order():
    groups = [[("zeta_2", 1), ("alpha", 3), ("_x", 1)]]
    env = ctest_environment(groups, [{"zeta_2": [("0", 1)], "alpha": [("a", 3)],
                                      "_x": [("q", 1)]}])
    assert env["CTEST_RESOURCE_GROUP_0"] == "_x,alpha,zeta_2"
    assert env["CTEST_RESOURCE_GROUP_0_ZETA_2"] == "id:0,slots:1"
    assert env["CTEST_RESOURCE_GROUP_0__X"] == "id:q,slots:1"


@pytest.mark.parametrize("allocation", [
    [],                                             # wrong number of groups
    [{"a": [("x", 1)]}, {}],
    [{}],                                           # requirement not served
    [{"a": [("x", 2)]}],                            # wrong slots
    [{"a": [("x", 1), ("y", 1)]}],                  # too many
    [{"a": [("x", 1)], "b": []}],                   # a type not asked for
])
def test_allocation_must_match_groups(allocation):
    with pytest.raises(ValueError):
        ctest_environment([[("a", 1)]], allocation)


def test_allocation_by_group_checks_counts():
    groups = [[("a", 1)], [("a", 2), ("b", 1)]]
    assert allocation_by_group(groups, {"a": ["x", "y"], "b": ["z"]}) == [
        {"a": [("x", 1)]}, {"a": [("y", 2)], "b": [("z", 1)]}]
    with pytest.raises(ValueError):
        allocation_by_group(groups, {"a": ["x"], "b": ["z"]})
    with pytest.raises(ValueError):
        allocation_by_group(groups, {"a": ["x", "y", "w"], "b": ["z"]})
    with pytest.raises(ValueError):
        allocation_by_group(groups, {"a": ["x", "y"]})
