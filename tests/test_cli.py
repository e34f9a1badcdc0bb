import subprocess
import sys

import pytest

import seqlab
from seqlab.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert seqlab.__version__ in capsys.readouterr().out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


def test_demo_prints_a_deterministic_trace():
    run = [sys.executable, "-m", "seqlab", "demo", "--seed", "2"]
    first = subprocess.run(run, capture_output=True, text=True, check=True)
    second = subprocess.run(run, capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout
    assert "teller-0" in first.stdout and "account" in first.stdout
    assert "final balance" in first.stdout
    assert "seqlab demo --seed 2" in first.stdout


def test_demo_installed_console_script():
    done = subprocess.run(["seqlab", "demo"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "spawn" in done.stdout


def test_demo_rejects_bad_tellers(capsys):
    assert main(["demo", "--tellers", "0"]) == 2
    assert "--tellers" in capsys.readouterr().err


def test_help_shows_every_subcommand_help_verbatim(capsys):
    from seqlab.cli import _COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for cmd in _COMMANDS.values():
        assert " ".join(cmd.help.split()) in out
