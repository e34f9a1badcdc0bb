"""Fixtures for tests that drive real Jupyter kernels.

``seqlab_kernelspec`` installs the seqlab kernelspec into a temporary prefix with the real
command (``seqlab install-kernel --prefix DIR``) and points ``JUPYTER_PATH`` at it; kernels
started afterwards (through jupyter_client, nbclient or nbval) find it there.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class CellResult:
    """What one ``execute_request`` produced."""

    status: str
    stdout: str = ""
    stderr: str = ""
    results: list[str] = field(default_factory=list)
    ename: str | None = None
    evalue: str | None = None


class Kernel:
    """A running kernel and a blocking client with a small ``run(code)`` helper."""

    def __init__(self, name: str) -> None:
        from jupyter_client.manager import start_new_kernel

        self.name = name
        self.manager, self.client = start_new_kernel(kernel_name=name, startup_timeout=60)

    def run(self, code: str, timeout: float = 30) -> CellResult:
        msg_id = self.client.execute(code)
        return self.collect(msg_id, timeout)

    def collect(self, msg_id: str, timeout: float = 30) -> CellResult:
        """Wait for the reply to ``msg_id`` and gather its outputs until the kernel is idle."""
        deadline = time.monotonic() + timeout
        result = CellResult(status="?")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no idle status for {msg_id} within {timeout} s")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("execute_result", "display_data"):
                result.results.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                result.ename, result.evalue = content["ename"], content["evalue"]
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:
            reply = self.client.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
            if reply["parent_header"].get("msg_id") == msg_id:
                result.status = reply["content"]["status"]
                return result

    def wait_started(self, msg_id: str, timeout: float = 10) -> None:
        """Block until the kernel has started executing ``msg_id`` (saw its execute_input)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=deadline - time.monotonic())
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
                return
        raise TimeoutError("the cell did not start")

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@pytest.fixture(scope="session")
def seqlab_kernelspec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """Install the seqlab kernelspec into a temporary prefix; yield its directory."""
    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    done = subprocess.run(
        [sys.executable, "-m", "seqlab", "install-kernel", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data_dir = prefix / "share" / "jupyter"
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(data_dir), old]))
    try:
        yield data_dir / "kernels" / "seqlab"
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def _start(name: str) -> Kernel:
    return Kernel(name)


@pytest.fixture
def start_kernel(seqlab_kernelspec: Any) -> Iterator[Any]:
    """``start_kernel(name)`` starts a kernel (seqlab or python3) that ends with the test."""
    started: list[Kernel] = []

    def start(name: str) -> Kernel:
        started.append(_start(name))
        return started[-1]

    try:
        yield start
    finally:
        for kernel in started:
            if kernel.manager.is_alive():
                kernel.shutdown()
            else:
                kernel.client.stop_channels()


@pytest.fixture(scope="module")
def seqlab_kernel(seqlab_kernelspec: Any) -> Iterator[Kernel]:
    """One seqlab kernel shared by the tests of a module (their cells must not clash)."""
    kernel = _start("seqlab")
    try:
        yield kernel
    finally:
        kernel.shutdown()


@pytest.fixture
def fresh_seqlab_kernel(seqlab_kernelspec: Any) -> Iterator[Kernel]:
    """A seqlab kernel of the test's own, for tests that end or disturb it."""
    kernel = _start("seqlab")
    try:
        yield kernel
    finally:
        if kernel.manager.is_alive():
            kernel.shutdown()
        else:
            kernel.client.stop_channels()
