import subprocess
import sys

HEAVY = ("IPython", "ipywidgets", "anywidget", "ipykernel", "jupyter_client", "traitlets")


def test_import_seqlab_stays_light():
    code = f"import sys, seqlab; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_primitives_do_not_import_jupyter():
    # The dependency rule: only notebook/ (and grading/) may import Jupyter code.
    import pathlib

    root = pathlib.Path(__file__).parents[1] / "seqlab"
    for path in root.glob("*.py"):
        text = path.read_text()
        for name in HEAVY:
            assert f"import {name}" not in text, f"{path.name} imports {name}"
            assert f"from {name}" not in text, f"{path.name} imports {name}"
