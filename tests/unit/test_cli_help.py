"""Each command's help lists only the settings it reads, and every option explains itself."""

from __future__ import annotations

import argparse
from typing import Iterator

import pytest

from netmeta.cli.main import build_parser
from netmeta.cli.options import SETTINGS, child_argv
from netmeta.config import Config


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))
    if path:
        yield " ".join(path), parser


COMMANDS = dict(_commands(build_parser()))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_option_of_every_command_has_a_help_line() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in COMMANDS.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert not missing, missing


def test_every_setting_is_a_config_field() -> None:
    fields = set(Config.__dataclass_fields__)
    assert {s.dest for s in SETTINGS} <= fields


@pytest.mark.parametrize(
    ("command", "has", "lacks"),
    [
        ("server", {"--db", "--bind", "--state-dir", "--change-log-retention"},
         {"--fabric-namespace", "--imds-tokens", "--dhcp-lease-duration", "--force-metadata"}),
        ("agent", {"--fabric-namespace", "--dhcp-lease-duration", "--bind", "--force-metadata"},
         {"--db", "--imds-tokens"}),
        ("metadata", {"--imds-tokens", "--bind", "--metadata-port"}, {"--db", "--dhcp-lease-duration"}),
        ("down", {"--fabric-namespace", "--state-dir", "--purge"}, {"--db", "--bind", "--imds-tokens"}),
        ("vm boot", {"--bind", "--fabric-namespace", "--network"}, {"--db", "--imds-tokens", "--force-metadata"}),
        ("vm list", {"--state-dir"}, {"--db", "--imds-tokens"}),
        ("up", {"--db", "--imds-tokens", "--fabric-namespace"}, set()),
    ],
)
def test_a_command_lists_the_settings_it_reads(command: str, has: set[str], lacks: set[str]) -> None:
    flags = _flags(COMMANDS[command])
    assert has <= flags
    assert not lacks & flags


def test_up_forwards_to_each_child_only_what_it_takes() -> None:
    args = build_parser().parse_args(
        ["up", "--config", "/x.ini", "--db", "sqlite:////y", "--imds-tokens", "required",
         "--no-force-metadata", "--fabric-namespace", "", "--bind", "127.0.0.1:1", "-v"]
    )
    server = child_argv(args, "server")
    agent = child_argv(args, "agent")
    metadata = child_argv(args, "metadata")
    assert server == ["--config", "/x.ini", "--bind", "127.0.0.1:1", "--db", "sqlite:////y", "--verbose"]
    assert agent == ["--config", "/x.ini", "--bind", "127.0.0.1:1", "--no-force-metadata",
                     "--fabric-namespace", "", "--verbose"]
    assert metadata == ["--config", "/x.ini", "--bind", "127.0.0.1:1", "--no-force-metadata",
                        "--imds-tokens", "required", "--verbose"]
    # what each child is given, it accepts
    for role, argv in (("server", server), ("agent", agent), ("metadata", metadata)):
        build_parser().parse_args([role, *argv])
