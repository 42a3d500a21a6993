import pytest

from avis.cli.main import build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser()
    subactions = [a for a in parser._actions if a.dest == "command"]
    for name in subactions[0].choices:
        assert name in out


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    subactions = [a for a in parser._actions if a.dest == "command"]
    for name in subactions[0].choices:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name


def test_no_command_prints_help(capsys):
    assert main([]) == 2
