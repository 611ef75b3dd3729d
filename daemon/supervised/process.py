"""A supervised child process: its own process group, a parent-death signal, a pidfile in
the state folder, and its output in a size-capped log with the last lines kept in memory.

- The child starts through a two-line wrapper that sets PR_SET_PDEATHSIG (SIGKILL) and then
  execs the real command, so a musad killed with -9 takes its children with it. Linux sends
  that signal when the *thread* that forked exits, so every child is forked by one spawner
  thread that lives as long as musad.
- `start_new_session`: the child leads a process group; stopping it signals the whole group
  (vLLM's engine-core and tensor-parallel workers included): SIGTERM, then SIGKILL.
- The pidfile (`<state>/engines/<name>.pid`, JSON: pid, pgid, token) lets a restarted musad
  find a group that outlived it (`reap_leftovers`); the token, also set in the child's
  environment as MUSAD_SUPERVISOR_TOKEN, proves that a process with that group id is ours
  and not a later process that reused the number.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import pathlib
import queue
import secrets
import signal
import socket
import subprocess
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

TOKEN_ENV = "MUSAD_SUPERVISOR_TOKEN"
TAIL_LINES = 200
# argv: [python, -c, this, parent pid, program, args...]; exits at once if the parent is gone
_PDEATHSIG_EXEC = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(70)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Spawner:
    """One long-lived thread that forks every child (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="musad-spawner", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)


_SPAWNER = _Spawner()


class CappedLog:
    """Appends lines to `path`; past `max_bytes` the file moves to `path.1` (one backup)."""

    def __init__(self, path: pathlib.Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "ab")
        self._size = self._f.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size:
            self._f.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._f = open(self.path, "ab")
            self._size = 0
        self._f.write(data)
        self._f.flush()
        self._size += len(data)

    def close(self) -> None:
        self._f.close()


class ChildProcess:
    """One running child. `on_line(text)` is called for each output line and `on_exit(code)`
    once when it has exited (both on the reader thread)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: pathlib.Path, pidfile: pathlib.Path,
                 log_max_bytes: int, on_line: Callable[[str], None] = lambda s: None,
                 on_exit: Callable[[int], None] = lambda c: None) -> None:
        self.pidfile = pidfile
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._on_line, self._on_exit = on_line, on_exit
        self._log = CappedLog(log_path, log_max_bytes)
        self._log.write(f"--- musad starts: {' '.join(argv)}\n".encode())
        token = secrets.token_hex(8)
        env = {**env, TOKEN_ENV: token}
        cmd = [argv[0], "-c", _PDEATHSIG_EXEC, str(os.getpid()), *argv]
        self.proc = _SPAWNER.run(lambda: subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True))
        self.pid = self.proc.pid
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = pidfile.with_name(pidfile.name + ".tmp")
        tmp.write_text(json.dumps({"pid": self.pid, "pgid": self.pid, "token": token, "started": time.time()}))
        os.replace(tmp, pidfile)
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"musad-child-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                self._log.write(raw)
                line = raw.decode("utf-8", "replace").rstrip()
                self.tail.append(line)
                try:
                    self._on_line(line)
                except Exception:  # noqa: BLE001 - a parser bug must not stop the log
                    log.exception("parsing a child's log line failed")
        finally:
            code = self.proc.wait()
            self.exit_code = code
            self._log.write(f"--- exited with status {code}\n".encode())
            self._log.close()
            self.exited.set()
            self._on_exit(code)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def last_lines(self, n: int = 20) -> str:
        lines = [s for s in self.tail if s.strip()]
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout_s`; blocks until it is gone and
        its pidfile removed (safe to call more than once)."""
        if _signal_group(self.pid, signal.SIGTERM):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and group_members(self.pid):
                if self.exited.wait(0.05) and not group_members(self.pid):
                    break
        _signal_group(self.pid, signal.SIGKILL)
        for _ in range(200):  # the kernel reaps a killed group within milliseconds
            if not group_members(self.pid):
                break
            time.sleep(0.01)
        self.exited.wait(10)
        self._reader.join(10)
        self.pidfile.unlink(missing_ok=True)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) whose process group is `pgid` (from /proc)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = pathlib.Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _has_token(pid: int, token: str) -> bool:
    try:
        env = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in env.split(b"\0")


def reap_leftovers(folder: pathlib.Path) -> list[int]:
    """Kills process groups that an earlier musad started and left behind (its pidfiles in
    `folder`); returns the pids killed. Called once at start-up, before any Deploy."""
    killed: list[int] = []
    for pidfile in sorted(folder.glob("*.pid")) if folder.is_dir() else ():
        try:
            rec = json.loads(pidfile.read_text())
            pgid, token = int(rec["pgid"]), str(rec["token"])
        except (OSError, ValueError, KeyError, TypeError):
            pidfile.unlink(missing_ok=True)
            continue
        ours = [p for p in group_members(pgid) if _has_token(p, token)]
        if ours:
            log.warning("stopping %d process(es) of a vLLM child that was not stopped (%s, group %d)", len(ours), pidfile.name, pgid)
            for p in ours:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed += ours
            for _ in range(200):
                if not [p for p in group_members(pgid) if _has_token(p, token)]:
                    break
                time.sleep(0.01)
        pidfile.unlink(missing_ok=True)
    return killed
