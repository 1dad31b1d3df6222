"""The command table is the one schema: every command has a doc, declared reply keys, a client
method and a command-line path whose help is its doc's summary, and docs/protocol.md and the
CLI's help are exactly what the table writes."""

import asyncio
import re
from pathlib import Path

import pytest

from atsclient.cli import build_parser, cli_paths
from atsclient.cli.summaries import HELP
from atsclient.errors import BY_CODE
from atsclient.wire import ERROR_CODES, TOPICS
from atsd.commands import EVERY_COMMAND_ERRORS, load_all
from atsd.engine.events import TOPICS as ENGINE_TOPICS
from atsd.protocol_doc import render, render_cli_help

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = load_all()


def test_protocol_md_is_what_the_table_writes():
    assert (ROOT / "docs" / "protocol.md").read_text() == render(), \
        "docs/protocol.md is stale: python -m atsd.protocol_doc > docs/protocol.md"


def test_the_cli_help_is_what_the_table_writes():
    assert (ROOT / "atsclient" / "cli" / "summaries.py").read_text() == render_cli_help(), \
        ("atsclient/cli/summaries.py is stale: "
         "python -m atsd.protocol_doc --cli-help > atsclient/cli/summaries.py")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_doc_replies_errors_client_method_and_cli_path(name):
    cmd = COMMANDS[name]
    assert cmd.doc, f"{name} has no docstring"
    lines = cmd.doc.splitlines()
    assert len(lines) == 1 or not lines[1].strip(), \
        f"{name}'s doc does not start with a summary line (the CLI's help) and a blank line"
    assert cmd.replies, f"{name} declares no reply keys (@command(..., replies=...))"
    assert "bad_request" in cmd.errors, f"{name} does not declare bad_request (errors=...)"
    assert set(cmd.errors) <= set(ERROR_CODES), f"{name} declares unknown error codes"
    assert len(set(cmd.errors)) == len(cmd.errors), f"{name} declares a code twice"
    assert "forbidden" in cmd.errors or not cmd.admin, f"{name} is admin only: forbidden"
    client = (ROOT / "atsclient" / "client.py").read_text()
    assert f'"command": "{name}"' in client, f"atsclient.client has no method sending {name}"
    path = cli_paths().get(name)
    assert path, f"no atsclient subcommand sends {name} (a feature module's WIRE)"
    parser, summary = _subcommand(path)
    sent_there = {HELP[w] for w, p in cli_paths().items() if _words(p) == _words(path)}
    assert summary in sent_there and parser.description.startswith(summary), \
        f"'atsclient {path}' does not take its help from the command table (add_command)"


def _words(path: str) -> list[str]:
    """The subcommand's words of a CLI path: ``batch create --deadline``: batch, create."""
    return re.findall(r"[a-z][a-z-]*", path.split(" --")[0])


def _subcommand(path: str):
    """The parser ``atsclient <path>`` reaches and its help; fails when a word names no
    subcommand."""
    parser, summary = build_parser(), None
    for word in _words(path):
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            break
        assert word in subs[0].choices, f"'atsclient {path}': no subcommand {word}"
        summary = next(a.help for a in subs[0]._choices_actions if a.dest == word)
        parser = subs[0].choices[word]
    option = re.search(r"(--[a-z-]+)", path)
    if option:
        assert option.group(1) in parser._option_string_actions, f"'atsclient {path}'"
    return parser, summary


def test_topics_and_error_codes_are_defined_once():
    assert ENGINE_TOPICS == tuple(TOPICS)
    assert set(BY_CODE) == set(ERROR_CODES)          # an exception class for every code
    assert set(EVERY_COMMAND_ERRORS) <= set(ERROR_CODES)


def test_every_positional_has_help():
    def walk(parser, prog):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prog} {name}")
            elif not action.option_strings:
                yield prog, action
    missing = [f"{prog}: {a.dest}" for prog, a in walk(build_parser(), "atsclient")
               if not a.help and a.__class__.__name__ != "_SubParsersAction"]
    assert missing == []


def test_readme_links_the_protocol_and_nothing_outside():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/protocol.md)" in readme
    assert "DESIGN.md" not in readme and "shared/" not in readme
    for target in re.findall(r"\]\(([^)#]+)", readme):
        assert not re.match(r"[a-z]+:", target), f"README links outside the repo: {target}"
        assert (ROOT / target).exists(), f"README links a missing file: {target}"


def test_a_refusal_with_an_undeclared_code_fails_under_the_check():
    """What ATSD_CHECK_REPLIES wraps every command in: a declared (or every-command) code
    goes out as it is, another one fails, so the daemon answers internal."""
    from atsd.commands import _checked
    from atsd.engine.errors import BadRequest, NotFound, Unavailable

    def refuse(exc):
        raise exc
    checked = _checked("x", refuse, (), ("bad_request", "not_found"))
    for declared in (NotFound("no such x"), BadRequest("bad x")):
        with pytest.raises(type(declared)):
            checked(declared)
    with pytest.raises(RuntimeError, match="x refused with undeclared code unavailable"):
        checked(Unavailable("none"))

    async def later(exc):
        raise exc
    with pytest.raises(RuntimeError, match="undeclared code unavailable"):
        asyncio.run(_checked("x", later, (), ("bad_request",))(Unavailable("none")))
