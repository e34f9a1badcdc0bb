"""Grading worker: executes one rebuilt notebook in a fresh, limited kernel.

Run by the grader as ``python -m seqlab.grading._worker``. It reads one JSON job from stdin
(the notebook to run, the limits, and a secret key), starts the grading kernel
(:mod:`seqlab.grading._kernel`) with its stdout and stderr discarded, runs the code cells in
order, and for each one writes a line to stdout describing how the *kernel* answered: its
execute-reply status and, on error, the exception name, message and traceback. Every line is
authenticated with an HMAC of the secret key, which never touches the disk, the command line
or the environment, so code in the kernel cannot forge a line the grader will accept.

It drives the kernel with :mod:`jupyter_client` directly, one request at a time, reading only
the messages that answer that request. (nbclient keeps the output reader of a timed-out cell
running, and it swallows the next cells' messages.) A cell that runs past the per-cell limit
is interrupted; if it does not finish within a few seconds of the interrupt, the run stops. A kernel that dies (``os._exit``, a crash, the memory limit) ends
the run with a ``dead`` line. The grader process decides the scores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["sign", "verify", "main"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRACEBACK_LINES = 20
_PROBE_TIMEOUT = 10


def sign(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True)
    mac = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"mac": mac, "body": text})


def verify(key: bytes, line: str) -> dict[str, Any] | None:
    """The message in ``line`` if it carries a valid MAC for ``key``, else ``None``."""
    try:
        outer = json.loads(line)
        text = outer["body"]
        mac = outer["mac"]
        if not isinstance(text, str) or not isinstance(mac, str):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    good = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good, mac):
        return None
    body = json.loads(text)
    return body if isinstance(body, dict) else None


def _clean(lines: list[str]) -> list[str]:
    return [_ANSI.sub("", line) for line in lines]


def _kernel_dir(root: Path, memory_mb: int, cpu_seconds: int, run_as: str | None) -> Path:
    spec_dir = root / "kernels" / "seqlab-grader"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "seqlab.grading._kernel"]
    argv += ["--memory-mb", str(memory_mb), "--cpu-seconds", str(cpu_seconds)]
    if run_as:
        argv += ["--run-as", run_as]
    spec = {
        "argv": [*argv, "-f", "{connection_file}"],
        "display_name": "seqlab grader",
        "language": "python",
        "env": {"MALLOC_ARENA_MAX": "2", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root / "kernels"


class _KernelDied(Exception):
    pass


def _execute(km: Any, kc: Any, code: str, timeout: float) -> tuple[str, dict[str, Any] | None]:
    """Run ``code``; (status, error). Status is the reply's, or "timeout"."""
    msg_id = kc.execute(code, store_history=True, stop_on_error=False, allow_stdin=False)
    status, error = _collect(km, kc, msg_id, time.monotonic() + timeout)
    if status != "timeout":
        return status, error
    km.interrupt_kernel()
    after, _ = _collect(km, kc, msg_id, time.monotonic() + _PROBE_TIMEOUT)
    return ("timeout" if after != "timeout" else "unresponsive"), None


def _collect(km: Any, kc: Any, msg_id: str, deadline: float) -> tuple[str, dict[str, Any] | None]:
    """Read the kernel's messages for ``msg_id`` until its reply and idle status, or deadline."""
    from queue import Empty

    error: dict[str, Any] | None = None
    idle = False
    reply: dict[str, Any] | None = None
    while not (idle and reply is not None):
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", error
        if not idle:
            try:
                msg = kc.get_iopub_msg(timeout=min(left, 0.2))
            except Empty:
                if not km.is_alive():
                    raise _KernelDied from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error":
                error = {
                    "ename": str(content.get("ename", "")),
                    "evalue": _ANSI.sub("", str(content.get("evalue", ""))),
                    "traceback": _clean("\n".join(content.get("traceback", [])).splitlines())[
                        -_TRACEBACK_LINES:
                    ],
                }
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        else:
            try:
                msg = kc.get_shell_msg(timeout=min(left, 0.2))
            except Empty:
                if not km.is_alive():
                    raise _KernelDied from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                reply = msg["content"]
    assert reply is not None
    status = str(reply.get("status", "missing"))
    if error is not None:
        status = "error"
    elif status == "error":
        error = {
            "ename": str(reply.get("ename", "")),
            "evalue": str(reply.get("evalue", "")),
            "traceback": _clean(list(reply.get("traceback", [])))[-_TRACEBACK_LINES:],
        }
    return status, error


def run_job(job: dict[str, Any], emit: Any) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    cells = [c for c in job["notebook"]["cells"]]
    cell_timeout = float(job["cell_timeout"])
    run_as = job.get("run_as")
    # The grader owns the scratch folder and removes it, even when it has to kill this worker.
    scratch = Path(job["scratch"])
    kernels = _kernel_dir(scratch, int(job["memory_mb"]), int(job["cpu_seconds"]), run_as)
    workdir = scratch / "work"
    workdir.mkdir()
    if run_as:
        import pwd

        entry = pwd.getpwnam(run_as)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    km = KernelManager(
        kernel_name="seqlab-grader",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
    )
    kc = None
    try:
        try:
            km.start_kernel(cwd=str(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
        except Exception as exc:
            emit({"fatal": f"the grading kernel did not start: {type(exc).__name__}: {exc}"})
            return
        emit({"kernel_pid": getattr(km.provisioner, "pid", None)})
        for index, cell in enumerate(cells):
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            if cell.get("cell_type") != "code" or not source.strip():
                continue
            began = time.monotonic()
            try:
                status, error = _execute(km, kc, source, cell_timeout)
            except _KernelDied:
                emit({"dead": index, "seconds": time.monotonic() - began})
                return
            seconds = time.monotonic() - began
            if status == "unresponsive":
                emit({"cell": index, "status": "timeout", "seconds": seconds})
                emit({"stopped": "unresponsive", "cell": index})
                return
            emit({"cell": index, "status": status, "error": error, "seconds": seconds})
    except Exception as exc:
        emit({"fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        if kc is not None:
            kc.stop_channels()
        try:
            km.shutdown_kernel(now=True)
        except Exception:
            pass


def main() -> None:
    job = json.loads(sys.stdin.readline())
    key = bytes.fromhex(job.pop("key"))
    out = sys.stdout

    def emit(body: dict[str, Any]) -> None:
        out.write(sign(key, body) + "\n")
        out.flush()

    try:
        run_job(job, emit)
    finally:
        emit({"done": True})
        out.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
