"""The layer rule of docs/architecture.md that matters most: the engine imports no I/O, no
clock and no layer of atsd outside itself, so it stays pure and hypothesis can drive it at
any simulated time."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "atsd" / "engine"
# top-level modules the engine must not import: I/O, the clock, and atsd itself by its
# absolute name (its own modules it imports relatively, the layers outside it not at all)
FORBIDDEN = {"zmq", "asyncio", "sqlite3", "time", "atsd"}


def outside_imports(source: str) -> list[str]:
    """Imports in ``source`` (an engine module, nested ones too) that break the rule."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:                                  # from .. import: outside
                bad.append("." * node.level + (node.module or ""))
            elif node.level == 0 and node.module.split(".")[0] in FORBIDDEN:
                bad.append(node.module)
    return bad


def test_the_engine_imports_no_io_no_clock_and_no_outer_layer():
    modules = sorted(ENGINE.glob("*.py"))
    assert len(modules) > 10
    found = {m.name: outside_imports(m.read_text()) for m in modules}
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_check_sees_each_way_of_breaking_the_rule():
    assert outside_imports("import time\nimport zmq.asyncio\nimport heapq") == [
        "time", "zmq.asyncio"]
    assert outside_imports("from sqlite3 import connect\nfrom . import states") == ["sqlite3"]
    assert outside_imports("from ..protocol import encode\nfrom atsd.store import Store") == [
        "..protocol", "atsd.store"]
    assert outside_imports("def f():\n    import asyncio\n") == ["asyncio"]


def test_loading_the_engine_loads_no_io():
    """What the engine imports from outside (atsclient.wire's names) brings no I/O along."""
    import subprocess
    import sys
    probe = ("import sys, importlib, pkgutil, atsd.engine as e\n"
             "for m in pkgutil.iter_modules(e.__path__):\n"
             "    importlib.import_module('atsd.engine.' + m.name)\n"
             "print(sorted({'zmq', 'asyncio', 'sqlite3'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ENGINE.parent.parent)
    assert out.stdout.strip() == "[]"


COMMANDS = ENGINE.parent / "commands"


def test_commands_read_no_clock_and_reach_no_io_through_app():
    """Commands get the clock and what does I/O in ``Call.io`` (docs/architecture.md), so
    they import no clock, sockets or store, and App holds no backends."""
    modules = sorted(COMMANDS.glob("*.py"))
    assert len(modules) > 5
    found = {}
    for m in modules:
        imported = [name for name in outside_imports(m.read_text())
                    if name.split(".")[0] in {"time", "zmq", "sqlite3"}]
        if imported:
            found[m.name] = imported
    assert found == {}
    app = (ENGINE.parent / "app.py").read_text()
    assert "self.backends" not in app and "self.audit" not in app
