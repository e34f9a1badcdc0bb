"""Where learner code runs: an operating-system sandbox built with Debian's ``bubblewrap``.

Each submission's runner (:mod:`seqlab.grading._runner`) is started by :func:`launch` as

- its own **PID namespace** (``--unshare-pid``, ``--die-with-parent``): it sees only its
  own processes, and when the runner ends or the grader dies every process it started dies
  with it, daemons included;
- **no network** (``--unshare-net``), its own IPC and host name;
- a **read-only view of what it needs** and nothing else: the system's ``/usr`` and
  libraries, this Python, and the ``seqlab`` package (which ships only student versions of
  the lessons). No other submission, no grader scratch folder, no instructor sources, no
  ``/root`` or ``/home``;
- a **private** ``/tmp`` (a fresh tmpfs) holding its HOME, IPython directory and temp files;
- an **unprivileged user**: started by root, the runner drops to a user id of its own (from
  :data:`SANDBOX_UIDS`, no account needed, leased so that no two sandboxes on the machine
  share one, whichever grader started them) before reading any job; started by anyone else,
  bubblewrap's user namespace makes it ``nobody``;
- **limits covering every process it starts**: a cgroup (v2, else v1) caps the memory and
  the number of processes of the whole sandbox, and each process also gets ``RLIMIT_AS``,
  ``RLIMIT_CPU`` and ``RLIMIT_FSIZE``; the grader kills the sandbox at the wall-time limit.

Where ``bwrap`` is missing (or cannot create namespaces) grading still runs, with a loud
warning naming each protection that is missing, and ``results.json`` records the mode
(:attr:`Sandbox.mode`, :attr:`Sandbox.missing`). ``SEQLAB_SANDBOX=none`` forces that mode.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Sandbox", "detect", "launch", "Cgroup", "NOBODY", "PROTECTIONS"]

NOBODY = 65534
# Started by root, each running sandbox gets a user id of its own from this range (no account
# needed), so per-user limits (RLIMIT_NPROC) of one submission never touch another's.
SANDBOX_UIDS = range(61000, 62000)
# Leases hold an exclusive flock on one file per uid in this root-only folder, so that two
# graders running at once (two batches, two instructors) never hand out the same uid: per-uid
# limits (RLIMIT_NPROC) would couple their submissions. A lease ends with its holder.
UID_LEASES = Path(os.environ.get("SEQLAB_UID_LEASES", "/run/seqlab-sandbox-uids"))
_uids_in_use: dict[int, int] = {}  # uid -> the descriptor holding its lock
_uids_lock = threading.Lock()


def _lease_folder() -> Path:
    UID_LEASES.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = UID_LEASES.lstat()
    if not UID_LEASES.is_dir() or UID_LEASES.is_symlink() or info.st_uid != os.geteuid():
        raise RuntimeError(f"{UID_LEASES} must be a folder of this user's (not a link)")
    return UID_LEASES


def lease_uid() -> int:
    """A sandbox user id that no running sandbox uses, in this process or any other (give it
    back with :func:`release_uid`)."""
    import fcntl

    with _uids_lock:
        folder = _lease_folder()
        for uid in SANDBOX_UIDS:
            if uid in _uids_in_use:
                continue
            fd = os.open(folder / f"{uid}.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another grader holds it
                continue
            _uids_in_use[uid] = fd
            return uid
    raise RuntimeError("more sandboxes at once than sandbox user ids")


def release_uid(uid: int | None) -> None:
    if uid is not None:
        with _uids_lock:
            fd = _uids_in_use.pop(uid, None)
        if fd is not None:
            os.close(fd)  # ends the lock


PROTECTIONS = {
    "pid": "its own PID namespace (no process of it outlives grading; it cannot see or signal "
    "the grader or other submissions)",
    "net": "no network",
    "fs": "a read-only view of only what it needs (no other submissions, no instructor sources)",
    "home": "a private HOME, IPython directory and temp directory (only separate folders)",
    "user": "an unprivileged user",
    "cgroup": "memory and process-count limits covering all of its processes together",
}


@dataclass(frozen=True)
class Sandbox:
    """How submissions are isolated here: ``mode`` ("bubblewrap" or "none") and the
    protections (keys of :data:`PROTECTIONS`) that are missing."""

    mode: str
    missing: tuple[str, ...]
    bwrap: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "missing": [PROTECTIONS[m] for m in self.missing]}

    def warning(self) -> str:
        """The loud warning for the instructor ("" when nothing is missing)."""
        if not self.missing:
            return ""
        lines = [
            "WARNING: grading WITHOUT full isolation"
            + (f" ({self.reason})" if self.reason else "")
            + ". Learner code runs without:"
        ]
        lines += [f"  - {PROTECTIONS[m]}" for m in self.missing]
        if self.mode == "none":
            lines.append("  Install bubblewrap (apt-get install bubblewrap) to grade in a sandbox.")
        return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def detect() -> Sandbox:
    """Probe this machine once: does ``bwrap`` work, can cgroups be used?"""
    cgroup_missing = () if Cgroup.available() else ("cgroup",)
    # Without the sandbox, learner code runs as the grader's own user (this Python may live
    # where another user cannot read it, as under /root), in a folder of its own.
    unsandboxed = ("pid", "net", "fs", "home", "user", *cgroup_missing)
    if os.environ.get("SEQLAB_SANDBOX", "") == "none":
        return Sandbox("none", unsandboxed, None, "SEQLAB_SANDBOX=none")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Sandbox("none", unsandboxed, None, "bubblewrap (bwrap) is not installed")
    # The probe is a real sandbox (same mounts, same user switch) importing seqlab: a machine
    # where bwrap exists but, say, cannot mount /proc in a new PID namespace falls back here.
    candidate = Sandbox("bubblewrap", cgroup_missing, bwrap)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _sandbox_path(), "HOME": "/tmp"}
    probe = _bwrap_argv(candidate, sys.executable, env)[:-2]
    become = "os.setgroups([]); os.setgid(61999); os.setuid(61999); " if os.geteuid() == 0 else ""
    probe += ["-c", f"import os; {become}import seqlab; os.makedirs('/tmp/work'); print('ok')"]
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        ok, why = proc.stdout.strip() == "ok", proc.stderr.strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    if not ok:
        return Sandbox("none", unsandboxed, None, f"bwrap cannot build the sandbox here: {why}")
    return Sandbox("bubblewrap", cgroup_missing, bwrap)


def _namespace_args() -> list[str]:
    args = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        # As root no user namespace is needed; the runner drops to its leased uid itself.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    return args


def _python_roots() -> list[str]:
    roots = {
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    }
    return sorted(
        r for r in roots if r and os.path.isdir(r) and r != "/" and not r.startswith("/usr")
    )


def _bwrap_argv(sandbox: Sandbox, python: str, env: dict[str, str]) -> list[str]:
    import seqlab

    package = str(Path(seqlab.__file__).resolve().parent)
    argv = [sandbox.bwrap or "bwrap", *_namespace_args()]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        argv += ["--ro-bind-try", path, path]
    binds = [(root, root) for root in _python_roots()] + [(package, "/opt/seqlab/seqlab")]
    made: set[str] = {"/"}
    for _, dest in binds:
        parts = Path(dest).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", _source_of(dest, binds), dest]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    argv += ["--chdir", "/tmp", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    # -S: no site module (its .pth processing costs ~80 ms a submission); the package and
    # this Python's site-packages are on PYTHONPATH instead.
    argv += [python, "-S", "-m", "seqlab.grading._runner"]
    return argv


def _sandbox_path() -> str:
    """PYTHONPATH inside the sandbox: the package, then this Python's site-packages."""
    import sysconfig

    paths = ["/opt/seqlab"]
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path and path not in paths:
            paths.append(path)
    return ":".join(paths)


def _source_of(dest: str, binds: list[tuple[str, str]]) -> str:
    return next(src for src, d in binds if d == dest)


class Cgroup:
    """A cgroup capping the memory and process count of everything one sandbox starts."""

    V2 = Path("/sys/fs/cgroup")
    V1 = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/pids"))

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    @staticmethod
    def _v2_ok() -> bool:
        controllers = Cgroup.V2 / "cgroup.controllers"
        try:
            return {"memory", "pids"} <= set(controllers.read_text().split()) and os.access(
                Cgroup.V2, os.W_OK
            )
        except OSError:
            return False

    @staticmethod
    def available() -> bool:
        if os.environ.get("SEQLAB_SANDBOX_CGROUP", "") == "none":
            return False
        if Cgroup._v2_ok():
            return True
        return all(os.access(d, os.W_OK) for d in Cgroup.V1)

    @classmethod
    def create(cls, name: str, memory_mb: int, pids: int) -> Cgroup | None:
        if not cls.available():
            return None
        made: list[Path] = []
        try:
            if cls._v2_ok():
                parent = cls.V2 / "seqlab-grading"
                parent.mkdir(exist_ok=True)
                try:
                    (parent / "cgroup.subtree_control").write_text("+memory +pids")
                    (cls.V2 / "cgroup.subtree_control").write_text("+memory +pids")
                except OSError:
                    pass
                group = parent / name
                group.mkdir()
                made.append(group)
                (group / "memory.max").write_text(str(memory_mb * 1024 * 1024))
                (group / "memory.swap.max").write_text("0") if (
                    group / "memory.swap.max"
                ).exists() else None
                (group / "pids.max").write_text(str(pids))
            else:
                memory, pid_root = cls.V1
                group = memory / f"seqlab-{name}"
                group.mkdir()
                made.append(group)
                (group / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
                group = pid_root / f"seqlab-{name}"
                group.mkdir()
                made.append(group)
                (group / "pids.max").write_text(str(pids))
        except OSError:
            Cgroup(made).remove()
            return None
        return cls(made)

    def join(self) -> None:
        """Move the calling process in (called in the child just before it executes bwrap)."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    def kill(self) -> None:
        for _ in range(50):
            pids: set[int] = set()
            for d in self.dirs:
                try:
                    pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
                except (OSError, ValueError):
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def launch(
    sandbox: Sandbox, scratch: Path, memory_mb: int, pids: int = 64, uid: int | None = None
) -> tuple[subprocess.Popen[bytes], Cgroup | None]:
    """Start the runner for one submission; returns the process and its cgroup (if any).

    ``uid`` is the user the runner becomes when started by root (default ``nobody``)."""
    import seqlab

    python = sys.executable
    cgroup = Cgroup.create(scratch.name, memory_mb + 256, pids)
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    if sandbox.mode == "bubblewrap":
        env.update(HOME="/tmp/home", IPYTHONDIR="/tmp/home/.ipython", TMPDIR="/tmp")
        env["PYTHONPATH"] = _sandbox_path()
        if os.geteuid() == 0:
            env["SEQLAB_SANDBOX_UID"] = str(uid if uid is not None else NOBODY)
        argv = _bwrap_argv(sandbox, python, env)
        run_env = None
        cwd = None
    else:
        home, tmp = scratch / "home", scratch / "tmp"
        for d in (home, tmp):
            d.mkdir(parents=True, exist_ok=True)
        env.update(HOME=str(home), IPYTHONDIR=str(home / ".ipython"), TMPDIR=str(tmp))
        env["PYTHONPATH"] = str(Path(seqlab.__file__).resolve().parent.parent)
        argv = [python, "-m", "seqlab.grading._runner"]
        run_env, cwd = env, str(tmp)

    def prepare() -> None:
        if cgroup is not None:
            cgroup.join()

    options: dict[str, Any] = {
        "stdin": subprocess.PIPE,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.DEVNULL,
        "env": run_env,
        "cwd": cwd,
        "start_new_session": True,
    }
    if cgroup is None:
        return subprocess.Popen(argv, **options), None
    try:
        # prepare() writes the child's pid into its cgroup before bwrap starts.
        return subprocess.Popen(argv, preexec_fn=prepare, **options), cgroup
    except subprocess.SubprocessError:  # the cgroup refused the process: run without it
        cgroup.remove()
        return subprocess.Popen(argv, **options), None
