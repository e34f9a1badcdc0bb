"""The lesson notebooks: structure, nbval with stored outputs, student versions, Binder, `seqlab lab`.

Nothing here depends on kernelspecs installed on the machine: each test installs the seqlab
kernelspec into a temporary prefix (or a temporary virtual environment) and points Jupyter at it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from seqlab.grading.release import release_notebook

ROOT = Path(__file__).resolve().parents[1]
LESSON_DIR = ROOT / "lessons"  # the sources; the package ships their student versions
LESSONS = sorted(LESSON_DIR.glob("*.ipynb"))
EXPECTED = [
    "00-welcome",
    "01-sequencer",
    "02-barrier",
    "03-convoy",
    "04-sequence-barriers",
    "05-capstone",
]
GRADING_HELPERS = {"check", "check_equal", "check_raises", "check_explore"}


def _visible(outputs: list) -> list[tuple[str, str | None]]:
    """What a reader sees of a cell's outputs: consecutive stream texts joined, rich outputs'
    plain text."""
    shown: list[tuple[str, str | None]] = []
    for o in outputs:
        if o.get("output_type") == "stream" and shown and shown[-1][0] == "stream:" + o.name:
            shown[-1] = (shown[-1][0], (shown[-1][1] or "") + o.text)
        elif o.get("output_type") == "stream":
            shown.append(("stream:" + o.name, o.text))
        else:
            shown.append((o.get("output_type", ""), o.get("data", {}).get("text/plain")))
    return shown


def nbgrader(cell: nbformat.NotebookNode) -> dict:
    return dict(cell.metadata.get("nbgrader", {}))


def graded_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if nbgrader(c).get("grade")]


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose Jupyter finds only a fresh seqlab kernelspec (this interpreter)."""
    from seqlab.notebook.kernel import install_kernel

    base = tmp_path_factory.mktemp("jupyter")
    install_kernel(prefix=str(base / "prefix"))
    env = dict(os.environ)
    env["JUPYTER_PATH"] = str(base / "prefix" / "share" / "jupyter")
    env["JUPYTER_DATA_DIR"] = str(base / "data")
    env["JUPYTER_CONFIG_DIR"] = str(base / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(base / "runtime")
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def execute(nb: nbformat.NotebookNode, env: dict[str, str], cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook through the seqlab kernel in a subprocess (so `env` applies); keep errors."""
    source = cwd / "in.ipynb"
    nbformat.write(nb, str(source))
    code = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, kernel_name='seqlab', timeout=120, allow_errors=True,\n"
        "               resources={'metadata': {'path': sys.argv[3]}}).execute()\n"
        "nbformat.write(nb, sys.argv[2])\n"
    )
    target = cwd / "out.ipynb"
    subprocess.run(
        [sys.executable, "-c", code, str(source), str(target), str(cwd)],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return nbformat.read(str(target), as_version=4)


def errors(cell: nbformat.NotebookNode) -> list[str]:
    return [o.ename for o in cell.get("outputs", []) if o.output_type == "error"]


# ------------------------------------------------------------------------------- structure


def test_the_six_lessons_are_there_and_the_package_ships_their_student_versions() -> None:
    assert [p.stem for p in LESSONS] == EXPECTED
    assert not LESSON_DIR.is_symlink()
    shipped = ROOT / "seqlab" / "lessons"
    assert sorted(p.stem for p in shipped.glob("*.ipynb")) == EXPECTED
    for path in LESSONS:
        student = release_notebook(nbformat.read(str(path), as_version=4))
        student.metadata.setdefault("seqlab", {})["lesson"] = path.stem
        packaged = nbformat.read(str(shipped / path.name), as_version=4)
        assert packaged == student, (
            f"seqlab/lessons/{path.name} is out of step with lessons/{path.name}: run "
            "seqlab release lessons/*.ipynb --out seqlab/lessons"
        )


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_structure(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "seqlab"
    assert nb.metadata.kernelspec.display_name == "Python 3 (seqlab)"
    assert nb.cells[0].cell_type == "markdown"
    assert "By the end of this lesson" in nb.cells[0].source or "Learning goals" in "".join(
        c.source for c in nb.cells if c.cell_type == "markdown"
    )

    ids = [nbgrader(c)["grade_id"] for c in nb.cells if nbgrader(c)]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    tests = graded_cells(nb)
    assert len(tests) >= 3, "at least three graded exercises"
    solutions = [c for c in nb.cells if nbgrader(c).get("solution")]
    assert len(solutions) >= 3
    for cell in tests:
        meta = nbgrader(cell)
        assert meta["locked"] is True and meta["solution"] is False
        assert meta["schema_version"] == 3 and meta["points"] > 0
        # Self-contained: imports the grading helpers it calls, calls nothing else from grading.
        used = set(re.findall(r"\b(check(?:_equal|_raises|_explore)?)\(", cell.source))
        assert used and used <= GRADING_HELPERS
        assert "from seqlab.grading import" in cell.source
        if "### BEGIN HIDDEN TESTS" in cell.source:
            assert cell.source.count("### END HIDDEN TESTS") == 1
    for cell in solutions:
        meta = nbgrader(cell)
        assert meta["grade"] is False and meta["locked"] is False
        assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION")
        assert "### BEGIN SOLUTION" in cell.source

    # Code the checks rely on (imports, given helpers) is read-only, so a grader can restore it.
    given = [
        c
        for c in nb.cells
        if nbgrader(c) and not (c.metadata.nbgrader.grade or c.metadata.nbgrader.solution)
    ]
    assert given and all(nbgrader(c)["locked"] for c in given)
    assert "import seqlab" in given[0].source

    # Stored outputs are what nbval compares: plain text, no errors, nothing run-specific.
    assert "widgets" not in nb.metadata, "strip widget state from the notebook metadata"
    for cell in nb.cells:
        # nbclient records wall-clock timestamps here when re-executing; they are noise in diffs.
        assert "execution" not in cell.metadata, "strip metadata.execution after re-executing"
        for out in cell.get("outputs", []):
            assert out.output_type in ("stream", "execute_result", "display_data")
            assert out.get("name", "stdout") == "stdout"
            text = out.get("text", "") + json.dumps(out.get("data", {}))
            assert not re.search(r"0x[0-9a-f]{6,}", text), "no memory addresses in outputs"
            assert "application/vnd.jupyter.widget" not in text


# ----------------------------------------------------------------------------------- nbval


def test_nbval_strict_passes_on_every_lesson(kernel_env: dict[str, str]) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "lessons/", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT,
        env=kernel_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout)
    assert "failed" not in proc.stdout.splitlines()[-1]
    print(f"nbval over {len(LESSONS)} lessons: {elapsed:.1f} s")


# ------------------------------------------------------------------------ student versions


def test_student_versions_fail_their_checks_until_the_exercises_are_done(
    kernel_env: dict[str, str], tmp_path: Path
) -> None:
    # All six student versions run in one kernel (one start instead of six); the lessons share
    # no names, so a check cannot pass thanks to another lesson's definitions.
    merged = nbformat.v4.new_notebook()
    merged.metadata["kernelspec"] = {"name": "seqlab", "display_name": "Python 3 (seqlab)"}
    origin = []
    for path in LESSONS:
        student = release_notebook(nbformat.read(str(path), as_version=4))
        for cell in student.cells:
            assert "### BEGIN SOLUTION" not in cell.source
            assert "### BEGIN HIDDEN TESTS" not in cell.source
            assert not cell.get("outputs")
            if cell.cell_type == "code":
                merged.cells.append(cell)
                origin.append(path.stem)
    nb = execute(merged, kernel_env, tmp_path)
    graded = 0
    for lesson, cell in zip(origin, nb.cells):
        meta = nbgrader(cell)
        if meta.get("grade"):
            graded += 1
            assert errors(cell), f"{lesson} {meta['grade_id']} passed without a solution"
        else:
            # Demonstrations and the exercise skeletons still run in the student version.
            assert not errors(cell), f"{lesson}: {cell.source[:80]!r} -> {errors(cell)}"
    assert graded >= 3 * len(LESSONS)


# Plausible wrong answers whose bug only some schedules (or sizes) show. Each must fail the
# *visible* check, so a learner's self-check catches it before the grader does.
RACY_TELLER = """
async def careful_teller(account, amount, warmup):
    for _ in range(warmup):
        await trio.lowlevel.checkpoint()
    seen = account.read()
    await trio.lowlevel.checkpoint()
    account.write(seen + amount)
"""
UNGATED_RING = """
async def squares(count, size):
    ring = RingBuffer(size, name="squares")
    reader_seq = Sequence(name="reader")
    received = []

    async def reader():
        barrier = ring.new_barrier()
        next_seq = 0
        while next_seq < count:
            available = await barrier.wait_for(next_seq)
            received.extend(ring[seq] for seq in range(next_seq, available + 1))
            reader_seq.set(available)
            next_seq = available + 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(count):
            seq = await ring.next()
            ring[seq] = i * i
            ring.publish(seq)
    return received
"""


@pytest.mark.parametrize(
    ("stem", "exercise", "wrong", "check_id"),
    [
        ("00-welcome", "ex0-careful", RACY_TELLER, "ex0-careful-check"),
        ("04-sequence-barriers", "ex4-ring", UNGATED_RING, "ex4-ring-check"),
    ],
    ids=["racy-teller", "ungated-ring"],
)
def test_visible_checks_catch_racy_solutions(
    stem: str, exercise: str, wrong: str, check_id: str
) -> None:
    from seqlab.grading import CheckFailed
    from seqlab.grading.lesson import BEGIN_HIDDEN, END_HIDDEN, strip_region

    nb = nbformat.read(str(LESSON_DIR / f"{stem}.ipynb"), as_version=4)
    namespace: dict[str, object] = {}
    for cell in nb.cells:
        gid = nbgrader(cell).get("grade_id")
        if cell.cell_type != "code" or (nbgrader(cell).get("grade") and gid != check_id):
            continue
        if cell.source.startswith("%%"):
            continue  # a cell magic (lesson 00's stepper level) is for the notebook only
        if gid == check_id:
            with pytest.raises(
                CheckFailed,
                match=r"failed on \d+ of \d+ schedules\. In the simplest failing schedule found",
            ):
                exec(strip_region(cell.source, BEGIN_HIDDEN, END_HIDDEN), namespace)
            return
        exec(cell.source, namespace)
        if gid == exercise:
            exec(wrong, namespace)  # the wrong definition replaces the model answer's
    pytest.fail(f"no check cell {check_id} in {stem}")


# ---------------------------------------------------------------------------------- binder


def _copy_repo(target: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.pyc"
    )
    shutil.copytree(ROOT, target, symlinks=True, ignore=ignore)


def test_binder_build_in_a_fresh_venv_runs_lesson_00(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _copy_repo(repo)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    env.update(
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        JUPYTER_DATA_DIR=str(tmp_path / "home-data"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "home-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # What repo2docker does with binder/: pip install -r binder/requirements.txt, then postBuild,
    # both from the repository root.
    assert (repo / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    build = subprocess.run(
        ["bash", "binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert sorted(p.stem for p in (repo / "my-lessons").glob("*.ipynb")) == EXPECTED

    # The wheel ships the lessons: the installed package (not the checkout) lists all six.
    shipped = subprocess.run(
        [str(python), "-c", "from seqlab.lessons import lesson_sources as s; print(*s().values())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [Path(p).stem for p in shipped] == EXPECTED
    assert all(Path(p).is_relative_to(venv) for p in shipped)

    spec = json.loads(
        (venv / "share" / "jupyter" / "kernels" / "seqlab" / "kernel.json").read_text()
    )
    assert spec["display_name"] == "Python 3 (seqlab)"
    assert Path(spec["argv"][0]).parent == bindir

    # Execute lesson 00 (source version) through the installed kernel, from a neutral folder, so
    # the seqlab it imports is the one installed in the venv.
    nb = nbformat.read(str(repo / "lessons" / "00-welcome.ipynb"), as_version=4)
    expected = [c.outputs for c in nb.cells if c.cell_type == "code"]
    nb.cells.append(
        nbformat.v4.new_code_cell("import sys, seqlab\nprint(sys.prefix)\nprint(seqlab.__file__)")
    )
    work = tmp_path / "work"
    work.mkdir()
    source, target = work / "in.ipynb", work / "out.ipynb"
    nbformat.write(nb, str(source))
    code = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, kernel_name='seqlab', timeout=120).execute()\n"
        "nbformat.write(nb, sys.argv[2])\n"
    )
    run = subprocess.run(
        [str(python), "-c", code, str(source), str(target)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    done = nbformat.read(str(target), as_version=4)
    code_cells = [c for c in done.cells if c.cell_type == "code"]
    prefix, module = code_cells[-1].outputs[0].text.split()
    assert Path(prefix) == venv
    assert Path(module).is_relative_to(venv)
    for cell, stored in zip(code_cells[:-1], expected):
        # Streams are compared coalesced, as nbval does: how printed text is split into
        # outputs depends on when the kernel flushed it.
        assert _visible(cell.outputs) == _visible(stored), cell.source[:80]


# ------------------------------------------------------------------------------- seqlab lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def test_seqlab_lab_serves_the_student_copies(kernel_env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    env = dict(kernel_env, JUPYTER_TOKEN="seqlab-test-token")
    workdir = tmp_path / "my lessons"
    command = [sys.executable, "-m", "seqlab", "lab", str(workdir), "--no-browser"]
    command += ["--port", str(port)]
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/contents"
    try:
        listing = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                listing = _get_json(f"{base}?token=seqlab-test-token")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        assert listing is not None, (tmp_path / "lab.log").read_text()[-3000:]
        assert isinstance(listing, dict)
        names = sorted(item["name"] for item in listing["content"])
        assert names == [f"{name}.ipynb" for name in EXPECTED]
        served = _get_json(f"{base}/00-welcome.ipynb?token=seqlab-test-token")
        assert isinstance(served, dict)
        text = json.dumps(served["content"])
        assert "NotImplementedError" in text
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert served["content"]["metadata"]["kernelspec"]["name"] == "seqlab"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}?token=wrong", timeout=5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # The installed lessons are untouched: only the copies are student versions.
    assert "### BEGIN SOLUTION" in (LESSON_DIR / "00-welcome.ipynb").read_text()


def test_seqlab_lab_keeps_existing_copies_and_installs_a_missing_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from seqlab import cli

    for key in ("JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    installed: list[dict[str, object]] = []

    def fake_install(**kwargs: object) -> str:
        installed.append(kwargs)
        return str(tmp_path / "kernels" / "seqlab")

    class Started(Exception):
        pass

    def fake_exec(path: str, argv: list[str]) -> None:
        raise Started(argv)

    def no_kernelspec(self: object, name: str) -> None:
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", no_kernelspec)
    monkeypatch.setattr("seqlab.notebook.kernel.install_kernel", fake_install)
    monkeypatch.setattr(os, "execv", fake_exec)
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "course"
    workdir.mkdir()
    mine = workdir / "00-welcome.ipynb"
    mine.write_text("my own work")

    with pytest.raises(Started) as started:
        cli.main(["lab", str(workdir), "--no-browser", "--port", "9999"])
    argv = started.value.args[0]
    assert argv[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={workdir}" in argv
    assert "--no-browser" in argv and "--port=9999" in argv
    assert mine.read_text() == "my own work"
    assert sorted(p.stem for p in workdir.glob("*.ipynb")) == EXPECTED
    assert len(installed) == 1  # no seqlab kernelspec was found, so one was installed


def test_seqlab_lab_rejects_a_file_as_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seqlab import cli

    target = tmp_path / "file"
    target.write_text("x")
    assert cli.main(["lab", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err
