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


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536", "http", "80.5"])
def test_lab_refuses_a_bad_port_before_doing_anything(port, tmp_path, capsys):
    workdir = tmp_path / "lessons"
    with pytest.raises(SystemExit) as exit_info:
        main(["lab", str(workdir), "--no-browser", "--port", port])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --port: a port is an int from 1 to 65535, got {port}" in err.replace(
        f"'{port}'", port
    )
    assert not workdir.exists()  # nothing copied, no server started


@pytest.mark.parametrize("port", ["1", "8888", "65535"])
def test_lab_accepts_every_real_port(port):
    from seqlab.cli import build_parser

    assert build_parser().parse_args(["lab", "--port", port]).port == int(port)


def test_seqlab_lab_working_folder_is_ignored_by_git():
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    done = subprocess.run(
        ["git", "check-ignore", "-q", "seqlab-lessons/01-sequencer.ipynb"], cwd=root
    )
    assert done.returncode == 0


def test_explore_finds_shrinks_and_prints_the_schedule(capsys):
    assert main(["explore", "seqlab.examples.races:stale_cache", "--runs", "60"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("explored 60 schedules")
    assert "writer was held back for" in out
    schedule = out.strip().splitlines()[-1].removeprefix("schedule: ")
    with pytest.raises(AssertionError, match="stale cache"):
        from seqlab.examples.races import stale_cache

        seqlab.run(stale_cache, schedule=schedule)


def test_explore_passing_code_exits_0_and_reports_coverage(capsys):
    target = "seqlab.examples.races:stale_cache"
    assert main(["explore", target, "--strategy", "random", "--runs", "20"]) == 0
    out = capsys.readouterr().out
    assert "explored 20 schedules" in out and "all passed" in out
    assert "  random: 20 runs, " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explore", "no_colon"], "expected MODULE:FUNCTION"),
        (["explore", "seqlab.nope:fn"], "cannot find seqlab.nope:fn"),
        (["explore", "seqlab.examples.races:nope"], "cannot find"),
        (["explore", "seqlab.examples.races:stale_cache", "--strategy", "chaos"], "--strategy"),
        (["explore", "seqlab.examples.races:DELAY_RACES"], "async_fn"),
    ],
)
def test_explore_bad_targets_are_named(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
