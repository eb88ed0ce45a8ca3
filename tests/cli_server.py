"""A fork server that runs gan_cli's console scripts for the tests without a new interpreter per run.

`tests/conftest.py` starts one of these per pytest process, on its first `run_cli`, as

    python tests/cli_server.py REQUESTS_FD REPLIES_FD PYTHONPATH

with PYTHONPATH taken out of its environment and given as the third argument instead. It imports
what every console script imports before it does anything (torch, torchvision, Hydra, OmegaConf,
gan_cli's command modules: three to four seconds on a small machine), then serves requests one at a
time. For each request it forks a child that makes itself look like a fresh interpreter started on
the script:

- the signal dispositions this server had when it started (what a new interpreter has);
- the requested working folder and environment (os.environ and the C environment);
- sys.path as `python SCRIPT` would build it: the script's folder, the request's PYTHONPATH entries,
  then the interpreter's own entries;
- stdin from /dev/null, stdout and stderr written to the files the request names;
- sys.argv = [script, *args] and a `__main__` module for the script (for spawned processes), and
  numpy's global random generator seeded afresh (Python's own reseeds itself in a forked child);

then calls the script's entry point (from the installed distribution's console_scripts), and ends
as the interpreter would: SystemExit(None) is 0, an int is that status, anything else is printed to
stderr with status 1; an uncaught exception prints its traceback with status 1; threads are joined,
atexit handlers run and the streams flushed before `os._exit`. The server waits for the child (up to
the request's timeout, then kills it) and replies with its exit status, negative for a signal.

The server runs no torch operation and configures no logging, so that a child does not inherit an
OpenMP thread pool or log handlers. What a child cannot reset is what was read when a library was
loaded here: OMP_NUM_THREADS and the like for the OpenMP runtime, the random hash seed, modules
already imported (a PYTHONPATH that would find another copy of gan_cli or torch does not swap them).
gan_cli itself reads its environment variables when it runs, not when it is imported. Tests that
depend on any of that run a real process (`run_cli(..., fresh=True)`).

Protocol: one JSON object per line each way. A request is {"script", "args", "cwd", "env", "stdout",
"stderr", "timeout"}; the reply is {"status": int, "timed_out": bool}, or {"error": text} when the
request could not be started.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import gc
import importlib
import io
import json
import locale
import multiprocessing.process
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from importlib.metadata import EntryPoint, distribution
from typing import Any, NoReturn

DISTRIBUTION = "gan-cli"

# Imported before serving: what the console scripts import before they do anything (gan_cli.entry
# imports its command inside the call, so the command modules are named here), and torchvision,
# which gan_cli imports when a run reads an image data set (1.5 to 2 seconds).
WARM_MODULES = [
    "torch",
    "torchvision",
    "hydra",
    "omegaconf",
    "gan_cli.cli",
    "gan_cli.commands.sample",
    "gan_cli.commands.evaluate",
    "gan_cli.commands.classifier",
    "gan_cli.commands.sweep_report",
    "gan_cli.commands.export",
]

KEPT: list[Any] = []  # a child's replaced streams and __main__: freed, a stream would close its fd


def console_scripts() -> dict[str, EntryPoint]:
    eps = distribution(DISTRIBUTION).entry_points
    return {ep.name: ep for ep in eps if ep.group == "console_scripts"}


def catchable_signals() -> list[signal.Signals]:
    return [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


def fresh_sys_path(script_dir: str, pythonpath: str, base: list[str]) -> list[str]:
    """sys.path of `python SCRIPT` with this PYTHONPATH, started in the current folder: the script's
    folder, then the PYTHONPATH entries made absolute (empty ones skipped), then the interpreter's
    own entries; later duplicates are dropped, as site.py drops them (before the script's folder is
    put first)."""
    entries = [os.path.abspath(p) for p in pythonpath.split(os.pathsep) if p]
    seen: set[str] = set()
    path = []
    for entry in [*entries, *base]:
        key = os.path.normcase(os.path.abspath(entry))
        if key not in seen:
            seen.add(key)
            path.append(entry)
    return [script_dir, *path]


def exit_status(code: object) -> int:
    """The exit status of `sys.exit(code)`, printing a code that is not an int as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def text_stream(fd: int, env: dict[str, str], like: io.TextIOWrapper) -> io.TextIOWrapper:
    """A standard stream on `fd` (a regular file or /dev/null) as a new interpreter makes it: the
    encoding and errors of this server's stream (the same locale) unless PYTHONIOENCODING says
    otherwise; with PYTHONUNBUFFERED, stdout and stderr unbuffered and all three write-through, else
    buffered with stderr flushed at each line. stdin is always buffered (TextIOWrapper needs read1)."""
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    encoding, errors = encoding or like.encoding, errors or like.errors or "strict"
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    binary: io.RawIOBase | io.BufferedIOBase
    if fd == 0:
        binary = io.BufferedReader(io.FileIO(fd, "r", closefd=False))
    else:
        raw = io.FileIO(fd, "w", closefd=False)
        binary = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        binary,  # type: ignore[arg-type]
        encoding=encoding,
        errors=errors,
        line_buffering=not unbuffered and fd == 2,
        write_through=unbuffered,
    )


def redirect(fd: int, path: str, flags: int) -> None:
    new = os.open(path, flags, 0o666)
    if new != fd:
        os.dup2(new, fd)
        os.close(new)


def become_fresh(request: dict[str, Any], signals: dict[int, Any], base: list[str]) -> None:
    """What a child sets up before it calls the entry point."""
    for sig, handler in signals.items():
        if handler is not None:  # None: set outside Python, left as it is
            signal.signal(sig, handler)
    env, script = request["env"], request["script"]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)  # putenv too: what C libraries and child processes see
    sys.path[:] = fresh_sys_path(os.path.dirname(os.path.realpath(script)), env.get("PYTHONPATH", ""), base)
    importlib.invalidate_caches()
    tempfile.tempdir = None  # found again from TMPDIR and the like, if anything looks it up
    multiprocessing.process.ORIGINAL_DIR = os.path.abspath(os.getcwd())  # type: ignore[attr-defined]

    redirect(0, os.devnull, os.O_RDONLY)
    redirect(1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    redirect(2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    old = [sys.__stdin__, sys.__stdout__, sys.__stderr__]
    KEPT.extend([sys.stdin, sys.stdout, sys.stderr, *old])
    stdin, stdout, stderr = (text_stream(fd, env, like) for fd, like in enumerate(old))  # type: ignore[arg-type]
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdin, stdout, stderr  # type: ignore[misc]

    main = types.ModuleType("__main__")  # the script's: what a spawned process imports as __mp_main__
    main.__file__ = script
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    main.__spec__ = None
    KEPT.append(sys.modules["__main__"])
    sys.modules["__main__"] = main
    sys.argv = [script, *request["args"]]
    sys.orig_argv = [sys.executable, script, *request["args"]]

    numpy = sys.modules.get("numpy")
    if numpy is not None:  # its global generator was seeded once, when the server imported numpy
        numpy.random.seed()


def finish(status: int) -> NoReturn:
    """The interpreter's way out: join the threads, run the atexit handlers, flush the streams, exit
    with `status` (negative: end by that signal, as an uncaught KeyboardInterrupt does)."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:
        traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            if stream is sys.stdout and status == 0:
                status = 120  # what Python exits with when stdout cannot be flushed
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status
    os._exit(status & 0xFF)


def child(
    request: dict[str, Any], entry: EntryPoint, signals: dict[int, Any], base: list[str], setup_fd: int
) -> NoReturn:
    """The forked child: becomes the script's process and runs it. A failure before the entry point
    is called goes to the server through `setup_fd`, not into the command's output."""
    try:
        become_fresh(request, signals, base)
        function = entry.load()
    except BaseException:
        os.write(setup_fd, traceback.format_exc().encode())
        os._exit(1)
    os.close(setup_fd)
    try:
        status = exit_status(function())  # the script is `sys.exit(entry())`
    except SystemExit as stop:
        status = exit_status(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    finish(status)


def wait(pid: int, timeout: float | None) -> tuple[int, bool]:
    """The child's exit status (negative: the signal that ended it) and whether it was killed for
    running past `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(status), True
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(0.01 if left is None else min(0.01, left))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def run(
    request: dict[str, Any],
    entry: EntryPoint,
    signals: dict[int, Any],
    base: list[str],
    server_fds: tuple[int, int],
) -> dict[str, Any]:
    setup_read, setup_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for fd in (*server_fds, setup_read):
            os.close(fd)
        child(request, entry, signals, base, setup_write)
    os.close(setup_write)
    status, timed_out = wait(pid, request.get("timeout"))
    failure = read_all(setup_read)
    if failure:
        return {"error": f"the child for {request['script']} failed before running it:\n{failure}"}
    return {"status": status, "timed_out": timed_out}


def serve(requests_fd: int, replies_fd: int, pythonpath: str) -> None:
    signals = {sig: signal.getsignal(sig) for sig in catchable_signals()}
    base = sys.path[1:]  # started without PYTHONPATH, sys.path[0] this file's folder
    sys.path[:] = fresh_sys_path(os.path.dirname(os.path.abspath(sys.executable)), pythonpath, base)
    scripts = console_scripts()
    for module in WARM_MODULES:
        importlib.import_module(module)
    for ep in scripts.values():
        ep.load()
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
    if threading.active_count() > 1 or len(threads) > 1:
        raise RuntimeError(f"the imports started threads ({len(threads)}); forking now would not be safe")
    gc.collect()
    gc.freeze()  # what is here stays: a child's collections need not touch (and copy) these pages

    with open(requests_fd, encoding="utf-8") as requests, open(replies_fd, "w", encoding="utf-8") as replies:
        for line in requests:
            request = json.loads(line)
            entry = scripts.get(os.path.basename(request["script"]))
            if entry is None:
                reply: dict[str, Any] = {
                    "error": f"{request['script']} is not a {DISTRIBUTION} console script"
                }
            else:
                reply = run(request, entry, signals, base, (requests_fd, replies_fd))
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


class ForkServer:
    """The tests' side: starts the server on the first `run`, sends it commands, reads their output.

    The server gets the environment this process had when the object was made (before any test
    changed it), less PYTHONPATH, which it is given as an argument and applies to itself as to its
    children, and with OMP_NUM_THREADS=1 unless that is set. Its own output goes to server.log in a
    temporary folder, with the commands' output."""

    START_UP_S = 300  # allowed for the server's imports on top of the first command's timeout

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.folder: str | None = None
        self.count = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        self.folder = self.folder or tempfile.mkdtemp(prefix="gan-cli-fork-server-")
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        env = dict(self.env)
        pythonpath = env.pop("PYTHONPATH", "")
        # without a limit, `import torch` starts OpenMP's threads (and forking would not be safe); a child
        # still gets the thread count it asks for: gan-train sets it from trainer.threads and its own env
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(os.path.join(self.folder, "server.log"), "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    str(requests_read),
                    str(replies_write),
                    pythonpath,
                ],
                pass_fds=(requests_read, replies_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
            )
        os.close(requests_read)
        os.close(replies_write)
        self.requests = open(requests_write, "w", encoding="utf-8")  # noqa: SIM115 (open until close())
        self.replies = open(replies_read, encoding="utf-8")  # noqa: SIM115

    def log_tail(self) -> str:
        if self.folder is None:
            return ""
        with open(os.path.join(self.folder, "server.log"), errors="replace") as log:
            return log.read()[-4000:]

    def run(
        self, cmd: list[str], cwd: str | os.PathLike[str], env: dict[str, str], timeout: float | None
    ) -> subprocess.CompletedProcess[str]:
        if not os.path.isdir(cwd):
            raise FileNotFoundError(f"no such folder: {cwd}")  # as subprocess.run would
        with self.lock:
            first = self.process is None
            if first:
                self.start()
            assert self.folder is not None
            self.count += 1
            out = os.path.join(self.folder, f"{self.count}.stdout")
            err = os.path.join(self.folder, f"{self.count}.stderr")
            request = {
                "script": cmd[0],
                "args": cmd[1:],
                "cwd": os.path.abspath(cwd),
                "env": env,
                "stdout": out,
                "stderr": err,
                "timeout": timeout,
            }
            try:
                self.requests.write(json.dumps(request) + "\n")
                self.requests.flush()
                reply = self.reply(None if timeout is None else timeout + 60 + first * self.START_UP_S)
            except BaseException:
                self.close()  # a command may still run: a new server for the next one
                raise
            if "error" in reply:
                raise RuntimeError(reply["error"])
            stdout, stderr = read_output(out), read_output(err)
            if reply["timed_out"]:  # what was written so far, as bytes (None: nothing), as subprocess.run
                raise subprocess.TimeoutExpired(cmd, timeout, output=stdout or None, stderr=stderr or None)
            return subprocess.CompletedProcess(cmd, reply["status"], as_text(stdout), as_text(stderr))

    def reply(self, timeout: float | None) -> dict[str, Any]:
        ready, _, _ = select.select([self.replies], [], [], timeout)
        line = self.replies.readline() if ready else ""
        if not line:
            alive = self.process is not None and self.process.poll() is None
            why = "did not answer in time" if alive else "has ended"
            raise RuntimeError(f"the console-script fork server {why}; its log:\n{self.log_tail()}")
        return json.loads(line)

    def close(self) -> None:
        """Ends the server (it stops when its request pipe closes) and removes its folder."""
        if self.process is not None:
            self.requests.close()
            self.replies.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def read_output(path: str) -> bytes:
    """What a command wrote to one of its output files, and the file removed (none: a child that
    ended before it opened its files)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b""
    os.remove(path)
    return data


def as_text(data: bytes) -> str:
    """Output as subprocess.run(text=True) gives it: decoded with the locale's encoding, universal
    newlines."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C on pytest reaches this process too
        serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
