"""The spec reader must accept and refuse exactly what CTest does.

Every rule CMake's tests check is covered by the project's own cases (``OWN_CASES`` and the
per-rule tests), which run in a plain clone. The conformance part also runs over CMake's own
test files when they are copied to ../shared/ctest-specs/ (beside the clone in CI), and is
skipped without them. The verdicts below are the table of index.md there, which comes
from Tests/CMakeLib/testCTestResourceSpec.cxx; the remaining tests check each parser rule
on small files of our own, and canary's YAML.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atsd.resource_spec import (Spec, SpecError, SpecInstance, load_spec, parse_spec_json,
                                parse_spec_yaml)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "ctest-specs"

# index.md: file -> valid?
INDEX = {
    "testCTestResourceSpec_data/spec1.json": True,
    "testCTestResourceSpec_data/spec2.json": True,
    "testCTestResourceSpec_data/spec3.json": False,
    "testCTestResourceSpec_data/spec4.json": False,
    "testCTestResourceSpec_data/spec5.json": False,
    "testCTestResourceSpec_data/spec6.json": False,
    "testCTestResourceSpec_data/spec7.json": False,
    "testCTestResourceSpec_data/spec8.json": False,
    "testCTestResourceSpec_data/spec9.json": False,
    "testCTestResourceSpec_data/spec10.json": False,
    "testCTestResourceSpec_data/spec11.json": False,
    "testCTestResourceSpec_data/spec12.json": False,
    "testCTestResourceSpec_data/spec13.json": False,
    "testCTestResourceSpec_data/spec14.json": True,
    "testCTestResourceSpec_data/spec15.json": True,
    "testCTestResourceSpec_data/spec16.json": True,
    "testCTestResourceSpec_data/spec17.json": False,
    "testCTestResourceSpec_data/spec18.json": False,
    "testCTestResourceSpec_data/spec19.json": False,
    "testCTestResourceSpec_data/spec20.json": True,
    "testCTestResourceSpec_data/spec21.json": False,
    "testCTestResourceSpec_data/spec22.json": False,
    "testCTestResourceSpec_data/spec23.json": False,
    "testCTestResourceSpec_data/spec24.json": False,
    "testCTestResourceSpec_data/spec25.json": False,
    "testCTestResourceSpec_data/spec26.json": False,
    "testCTestResourceSpec_data/spec27.json": False,
    "testCTestResourceSpec_data/spec28.json": False,
    "testCTestResourceSpec_data/spec29.json": False,
    "testCTestResourceSpec_data/spec30.json": False,
    "testCTestResourceSpec_data/spec31.json": False,
    "testCTestResourceSpec_data/spec32.json": False,
    "testCTestResourceSpec_data/spec33.json": False,
    "testCTestResourceSpec_data/spec34.json": False,
    "testCTestResourceSpec_data/spec35.json": False,
    "testCTestResourceSpec_data/spec36.json": False,
    "testCTestResourceSpec_data/noexist.json": False,  # absent on purpose
    "RunCMake_CTestResourceAllocation/resspec.json": True,
    "RunCMake_CTestResourceAllocation/dynamic-resspec.json": True,
    "RunCMake_CTestResourceAllocation/invalid.json": False,
    "RunCMake_CTestResourceAllocation/noexist.json": False,  # absent on purpose
    "doc_example_ctest1.json": True,
}
EMPTY = Spec((), ())


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        if os.environ.get("ATSD_REQUIRE_SHARED") == "1":
            pytest.fail(f"{SHARED} is missing and ATSD_REQUIRE_SHARED=1")
        pytest.skip(f"{SHARED} is not here")
    return SHARED


def inst(rtype, rid, slots=1):
    return SpecInstance(rtype, rid, slots)


# --- CMake's own files ----------------------------------------------------------------

@pytest.mark.parametrize("name, valid", sorted(INDEX.items()))
def test_index_verdict(shared, name, valid):
    if valid:
        assert isinstance(load_spec(shared / name), Spec)
    else:
        with pytest.raises(SpecError):
            load_spec(shared / name)


def test_index_covers_every_file(shared):
    """A file added to the shared folder must get a verdict here too."""
    on_disk = {p.relative_to(shared).as_posix() for p in shared.rglob("*.json")}
    assert on_disk == {n for n in INDEX if not n.endswith("noexist.json")}


def test_every_file_except_spec1_parses_empty_in_testctestresourcespec(shared):
    for name, valid in INDEX.items():
        if valid and name.startswith("testCTestResourceSpec_data/") and "spec1." not in name:
            assert load_spec(shared / name) == EMPTY, name


def test_spec1_exact(shared):
    spec = load_spec(shared / "testCTestResourceSpec_data/spec1.json")
    # ".reserved" fails the type-name rule and is dropped; "threads" is kept, empty.
    assert spec == Spec(("gpus", "threads"), (inst("gpus", "2", 4), inst("gpus", "e", 1)))


def test_runcmake_resspec_exact(shared):
    spec = load_spec(shared / "RunCMake_CTestResourceAllocation/resspec.json")
    widgets = [("0", 4), ("1", 2), ("2", 4), ("3", 8), ("4", 1), ("5", 1), ("6", 1), ("7", 1)]
    assert spec == Spec(
        ("widgets", "transmogrifiers", "fluxcapacitors"),
        tuple(inst("widgets", i, n) for i, n in widgets)
        + (inst("transmogrifiers", "calvin", 2), inst("transmogrifiers", "hobbes", 2),
           inst("fluxcapacitors", "outatime", 121)))


def test_runcmake_dynamic_resspec_exact(shared):
    spec = load_spec(shared / "RunCMake_CTestResourceAllocation/dynamic-resspec.json")
    assert spec == Spec(("widgets",), (inst("widgets", "0", 1),))


def test_doc_example_exact(shared):
    spec = load_spec(shared / "doc_example_ctest1.json")
    assert spec == Spec(("gpus", "crypto_chips"), (
        inst("gpus", "0", 2), inst("gpus", "1", 4), inst("gpus", "2", 2), inst("gpus", "3", 1),
        inst("crypto_chips", "card0", 4)))


def test_error_names_the_file(shared):
    path = shared / "testCTestResourceSpec_data/noexist.json"
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(e.value) == f"{path}: file not found"
    assert e.value.path == str(path) and e.value.reason == "file not found"


# --- every rule CMake's files test, as the project's own cases (run in a plain clone) ---

# (case, document, the instances it parses to, or None when CTest refuses it); one case per
# rule that testCTestResourceSpec.cxx and RunCMake's CTestResourceAllocation check
OWN_CASES = [
    ("types kept in order, bad type name dropped, empty type kept",
     '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": "2", "slots": 4}, '
     '{"id": "e"}], ".hidden": [{"id": "a", "slots": 3}], "threads": []}]}',
     [("gpus", "2", 4), ("gpus", "e", 1)]),
    ("empty local", '{"version": {"major": 1, "minor": 0}, "local": []}', []),
    ("two local entries", '{"version": {"major": 1, "minor": 0}, "local": [{}, {}]}', None),
    ("local an object", '{"version": {"major": 1, "minor": 0}, "local": {}}', None),
    ("no local", '{"version": {"major": 1, "minor": 0}}', None),
    ("local entry a list", '{"version": {"major": 1, "minor": 0}, "local": [[]]}', None),
    ("type an object", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": {}}]}', None),
    ("instance a list", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [[]]}]}',
     None),
    ("instance without id", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{}]}]}',
     None),
    ("id a number", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": 4}]}]}',
     None),
    ("slots a word", '{"version": {"major": 1, "minor": 0}, '
     '"local": [{"gpus": [{"id": "4", "slots": "lots"}]}]}', None),
    ("root a list", "[]", None),
    ("not JSON", "not json at all", None),
    ("type name starting with a digit is dropped",
     '{"version": {"major": 1, "minor": 0}, "local": [{"7": []}]}', []),
    ("type name '-' is dropped", '{"version": {"major": 1, "minor": 0}, "local": [{"-": []}]}',
     []),
    ("upper-case type name is dropped",
     '{"version": {"major": 1, "minor": 0}, "local": [{"B": []}]}', []),
    ("upper-case id", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": "B"}]}]}',
     None),
    ("id '-'", '{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": "-"}]}]}', None),
    ("several types, slots default to 1",
     '{"version": {"major": 1, "minor": 0}, "local": [{"widgets": [{"id": "0", "slots": 4}, '
     '{"id": "7"}], "fluxes": [{"id": "outatime", "slots": 121}]}]}',
     [("widgets", "0", 4), ("widgets", "7", 1), ("fluxes", "outatime", 121)]),
    ("no version", '{"local": []}', None),
] + [(f"version {v}", f'{{"version": {v}, "local": []}}', None) for v in (
    "1", "2", '"1"', "[1, 0]", "[1, 0, 0]", "[1]", "[1, 1]", "[2, 0]", '["1", 0]', '[1, "0"]',
    '{"major": 1}', '{"minor": 0}', '{"major": 1, "minor": 1}', '{"major": 2, "minor": 0}',
    '{"major": "1", "minor": 0}', '{"major": 1, "minor": "0"}')]


@pytest.mark.parametrize("case, text, want", OWN_CASES, ids=[c[0] for c in OWN_CASES])
def test_own_case(case, text, want):
    if want is None:
        bad(text)
    else:
        assert ok(text).instances == tuple(inst(*i) for i in want)


# --- each rule on its own -------------------------------------------------------------

V = {"major": 1, "minor": 0}


def doc(local, version=V, **extra):
    d = {"version": version, "local": local, **extra}
    return json.dumps(d)


def ok(text):
    return parse_spec_json(text, "t.json")


def bad(text):
    with pytest.raises(SpecError) as e:
        parse_spec_json(text, "t.json")
    assert str(e.value).startswith("t.json: ")
    return e.value.reason


def test_minimal_and_empty_local():
    assert ok(doc([])) == EMPTY
    assert ok(doc([{}])) == EMPTY


@pytest.mark.parametrize("text", ["", "   ", "not json", "{", '{"version": 1}}', "[]", "1",
                                  '"x"', "null"])
def test_root_must_be_a_json_object(text):
    bad(text)


def test_bom_is_dropped():
    assert ok("\ufeff" + doc([])) == EMPTY


def test_strict_json_extras_are_errors():
    assert "duplicate" in bad('{"version": {"major": 1, "minor": 0}, "local": [], "local": []}')
    bad('{"version": {"major": 1, "minor": 0}, "local": [{"gpus": [{"id": "0", "slots": NaN}]}]}')
    bad('{"version": {"major": 1, "minor": 0}, "local": []} // comment')
    bad('{"version": {"major": 1, "minor": 0}, "local": [],}')


@pytest.mark.parametrize("version", [None, 1, "1", [1, 0], {}, {"major": 1}, {"minor": 0},
                                     {"major": "1", "minor": 0}, {"major": 1, "minor": "0"},
                                     {"major": True, "minor": 0}, {"major": 1, "minor": False},
                                     {"major": 1.5, "minor": 0}, {"major": 1, "minor": 1},
                                     {"major": 2, "minor": 0}, {"major": 0, "minor": 0}])
def test_version_rule(version):
    bad(doc([], version=version))


def test_version_missing():
    assert bad(json.dumps({"local": []})) == "no version specified"


def test_version_extra_keys_and_integral_floats_pass():
    """jsoncpp's isInt accepts 1.0; the version object allows extra keys."""
    assert ok(doc([], version={"major": 1.0, "minor": 0, "patch": 7})) == EMPTY


def test_root_extra_keys_pass():
    assert ok(doc([], comment="hi")) == EMPTY


@pytest.mark.parametrize("local", [None, {}, "x", 1, [[]], ["x"], [None], [{}, {}],
                                   [{"gpus": []}, {}]])
def test_local_rule(local):
    bad(doc(local))


def test_local_missing():
    bad(json.dumps({"version": V}))


@pytest.mark.parametrize("key", ["0", "-", "A", "Gpus", "gpus!", ".reserved", "g-1", "", "é",
                                 "gpus\n", " gpus"])
def test_bad_type_names_are_skipped_silently(key):
    assert ok(doc([{key: [{"id": "0"}], "ok": []}])) == Spec(("ok",), ())


def test_bad_type_name_skipped_even_with_a_bad_value():
    """CTest's filter runs before the value is looked at."""
    assert ok(doc([{"A": "not a list", "_x": [{"id": "_"}]}])) == Spec(("_x",), (inst("_x", "_"),))


@pytest.mark.parametrize("key", ["a", "_", "gpus", "crypto_chips", "a0_9", "_0"])
def test_good_type_names(key):
    assert ok(doc([{key: []}])) == Spec((key,), ())


@pytest.mark.parametrize("value", [None, {}, "x", 1, {"id": "0"}])
def test_type_value_must_be_a_list(value):
    bad(doc([{"gpus": value}]))


@pytest.mark.parametrize("item", [None, [], "0", 0, {}, {"slots": 1}, {"id": None},
                                  {"id": 4}, {"id": True}, {"id": ["0"]}, {"id": ""},
                                  {"id": "A"}, {"id": "-"}, {"id": "a b"}, {"id": "0\n"},
                                  {"id": "gpu.0"}])
def test_instance_rule(item):
    bad(doc([{"gpus": [item]}]))


@pytest.mark.parametrize("rid", ["0", "a", "_", "card0", "gpu_10", "007"])
def test_good_ids(rid):
    assert ok(doc([{"gpus": [{"id": rid}]}])).instances == (inst("gpus", rid),)


@pytest.mark.parametrize("slots", [None, "2", "giraffe", -1, 1.5, True, False, [2], {},
                                   2**32])
def test_slots_rule(slots):
    bad(doc([{"gpus": [{"id": "0", "slots": slots}]}]))


@pytest.mark.parametrize("slots, want", [(0, 0), (1, 1), (7, 7), (2.0, 2), (2**32 - 1, 2**32 - 1)])
def test_good_slots(slots, want):
    spec = ok(doc([{"gpus": [{"id": "0", "slots": slots}]}]))
    assert spec.instances == (inst("gpus", "0", want),)


def test_slots_default_to_one_and_extra_keys_pass():
    spec = ok(doc([{"gpus": [{"id": "0", "note": "x"}, {"id": "1", "slots": 3, "x": [1]}]}]))
    assert spec.instances == (inst("gpus", "0", 1), inst("gpus", "1", 3))


def test_file_order_is_kept_and_duplicates_ids_are_not_checked():
    spec = ok(doc([{"zeta": [{"id": "b"}, {"id": "a"}], "alpha": [{"id": "x"}, {"id": "x"}]}]))
    assert spec.types == ("zeta", "alpha")
    assert [i.id for i in spec.instances] == ["b", "a", "x", "x"]


def test_one_bad_instance_spoils_the_file():
    bad(doc([{"gpus": [{"id": "0"}, {"id": "A"}]}]))
    bad(doc([{"gpus": [{"id": "0"}], "cpus": [{}]}]))


def test_load_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.json")
    with pytest.raises(SpecError):
        load_spec(tmp_path)  # a directory
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(tmp_path / "bin.json")


def test_load_spec_json_any_suffix(tmp_path):
    for name in ("spec.json", "spec.txt", "spec"):
        (tmp_path / name).write_text(doc([{"gpus": [{"id": "0", "slots": 2}]}]))
        assert load_spec(tmp_path / name).instances == (inst("gpus", "0", 2),)


# --- canary YAML ----------------------------------------------------------------------

CANARY = """\
resource_pool:
  additional_properties: {site: lab}
  resources:
    gpus:
    - {id: 0, slots: 2}
    - {id: "1", slots: 2}
    - id: card_a
    cpus: []
"""


def test_canary_yaml(tmp_path):
    for name in ("pool.yaml", "pool.yml", "POOL.YAML"):
        (tmp_path / name).write_text(CANARY)
        assert load_spec(tmp_path / name) == Spec(("gpus", "cpus"), (
            inst("gpus", "0", 2), inst("gpus", "1", 2), inst("gpus", "card_a", 1)),
            {"site": "lab"})


def test_canary_yaml_without_wrapper():
    text = "resources:\n  gpus:\n  - {id: 3}\n"
    assert parse_spec_yaml(text, "p.yaml") == Spec(("gpus",), (inst("gpus", "3"),))


def test_canary_yaml_skips_bad_type_names():
    text = "resources:\n  GPUs: [{id: 0}]\n  7: [{id: 0}]\n  ok: [{id: 0}]\n"
    assert parse_spec_yaml(text) == Spec(("ok",), (inst("ok", "0"),))


@pytest.mark.parametrize("text", [
    "",
    "[]",
    "resource_pool: 3",
    "resource_pool: {resources: {}}\nother: 1",
    "additional_properties: {}",
    "resources: []",
    "resources: {gpus: {id: 0}}",
    "resources: {gpus: [3]}",
    "resources: {gpus: [{slots: 1}]}",
    "resources: {gpus: [{id: -1}]}",
    "resources: {gpus: [{id: true}]}",
    "resources: {gpus: [{id: 1.5}]}",
    "resources: {gpus: [{id: A}]}",
    "resources: {gpus: [{id: 0, slots: -1}]}",
    "resources: {gpus: [{id: 0, slots: two}]}",
    "resources: {gpus: [{id: 0, slots: yes}]}",
    "resources: {gpus: [{id: 0, slots: 1.5}]}",
    "resources: {gpus: [{id: 0}]}\ncpus: 4",
    "resources: {gpus: [{id: 0}]}\nadditional_properties: [1]",
    "resources: {gpus: [{id: 0}\n",
])
def test_canary_yaml_invalid(text):
    with pytest.raises(SpecError) as e:
        parse_spec_yaml(text, "p.yaml")
    assert str(e.value).startswith("p.yaml: ")


def test_spec_error_is_an_exception_with_path_and_reason():
    e = SpecError(Path("/x/y.json"), "bad")
    assert isinstance(e, Exception) and str(e) == "/x/y.json: bad"
