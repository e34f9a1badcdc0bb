"""The grading kernel: the seqlab kernel started under resource limits.

``python -m seqlab.grading._kernel --memory-mb M --cpu-seconds S -f CONNECTION_FILE``
sets, in the kernel process itself before any learner code exists:

- ``RLIMIT_AS`` to ``M`` MiB: an allocation beyond it raises ``MemoryError`` in the cell
  (or, outside Python's allocator, kills the kernel; the grader reports either);
- ``RLIMIT_CPU`` to ``S`` seconds (hard limit a little above): a backstop that ends a kernel
  whose busy loop survives the grader's interrupts and the grader's own kill;
- ``RLIMIT_CORE`` to 0 (a crashing kernel leaves no core file) and ``RLIMIT_FSIZE`` to
  64 MiB (a runaway write stops there).

With ``--run-as USER`` (only when started as root, as on Gradescope) it also hands its
connection file to ``USER`` and drops to that user's uid and gid before the kernel starts, so
learner code cannot write the grader's results, read the grader's memory, or signal it.

Then it runs the seqlab kernel (ipykernel with ``%load_ext seqlab`` and one persistent trio
loop), so cells can ``await`` trio code at top level exactly as in the learner's notebook.
If the seqlab kernel module is unavailable it falls back to plain ipykernel with the seqlab
extension loaded.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["apply_limits", "main"]

_MIB = 1024 * 1024


def apply_limits(memory_mb: int | None, cpu_seconds: int | None) -> None:
    """Apply the grading limits to the current process (POSIX; ignored elsewhere)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return

    def lower(which: int, soft: int, hard: int | None = None) -> None:
        _, cur_hard = resource.getrlimit(which)
        new_hard = cur_hard if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, cur_hard) if new_hard != resource.RLIM_INFINITY else cur_hard
            soft = min(soft, cur_hard)
        try:
            resource.setrlimit(which, (soft, new_hard))
        except (ValueError, OSError):
            pass

    if memory_mb:
        lower(resource.RLIMIT_AS, memory_mb * _MIB, memory_mb * _MIB)
    if cpu_seconds:
        lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 5)
    lower(resource.RLIMIT_CORE, 0, 0)
    lower(resource.RLIMIT_FSIZE, 64 * _MIB, 64 * _MIB)


def drop_privileges(user: str, connection_file: str | None) -> None:
    """Become ``user`` (from root), giving it the connection file and a home of its own."""
    import os
    import pwd
    import tempfile

    if os.geteuid() != 0:
        raise PermissionError(f"--run-as {user} needs the grader to run as root")
    entry = pwd.getpwnam(user)
    if connection_file:
        os.chown(connection_file, entry.pw_uid, entry.pw_gid)
    home = tempfile.mkdtemp(prefix="seqlab-kernel-home-")
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=home, IPYTHONDIR=os.path.join(home, ".ipython"), USER=user, LOGNAME=user)
    os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(home, ".runtime")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqlab.grading._kernel")
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--cpu-seconds", type=int, default=None)
    parser.add_argument("--run-as", default=None)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    apply_limits(args.memory_mb, args.cpu_seconds)
    if args.run_as:
        connection = rest[rest.index("-f") + 1] if "-f" in rest[:-1] else None
        drop_privileges(args.run_as, connection)
    try:
        from seqlab.notebook.kernel import main as kernel_main
    except ImportError:  # pragma: no cover - the seqlab kernel is part of the package
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize(["--ext=seqlab", *rest])
        app.start()
        return
    kernel_main(rest)


if __name__ == "__main__":
    main()
