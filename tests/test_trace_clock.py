"""trace.clock_reader leans on trio's private SystemClock; pinned here, and guarded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import trio
import trio.testing

import seqlab
from seqlab.trace import clock_reader


def test_system_clock_is_perf_counter_plus_an_offset():
    # What clock_reader relies on: if a trio release changes it, this fails loudly.
    from trio._core._run import SystemClock

    clock = SystemClock()
    before = time.perf_counter()
    now = clock.current_time()
    after = time.perf_counter()
    assert before + clock.offset <= now <= after + clock.offset


def test_clock_reader_reads_trios_clock_up_to_a_constant():
    async def main() -> tuple[object, object]:
        return clock_reader(), trio.current_time() - clock_reader()()

    reader, _ = trio.run(main)
    assert reader is time.perf_counter
    clock = trio.testing.MockClock()
    reader, offset = trio.run(main, clock=clock)
    assert reader == clock.current_time and offset == 0


def test_import_and_tracing_survive_a_trio_without_system_clock():
    code = textwrap.dedent(
        """
        import trio._core._run as run
        saved = run.SystemClock
        del run.SystemClock  # as if a trio release had moved it
        import seqlab, trio
        run.SystemClock = saved  # trio.run itself needs it back
        assert seqlab.trace._SystemClock is None

        async def main():
            await trio.sleep(0.01)

        rec = seqlab.Recorder()
        seqlab.run(main, seed=1, virtual_time=False, recorder=rec)
        print(len(rec), rec.events[-1].time >= 0.01)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "True"]  # spawn, block (the sleep), wake, exit


def test_a_recorder_outside_seqlab_run_uses_the_system_clock():
    rec = seqlab.Recorder()

    async def main() -> None:
        with seqlab.recording(rec):
            seqlab.emit("clock", "start")
            await trio.sleep(0.01)
            seqlab.emit("clock", "stop")

    trio.run(main)
    assert rec.events[-1].time - rec.events[0].time >= 0.01
