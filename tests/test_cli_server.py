"""The fork server behind `run_cli` (tests/cli_server.py): a forked command sees what a new process
running the installed script sees, and ends, fails and times out as one does."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import pythonpath, run_cli

# A plugin gan-train imports at start-up: it writes down what its process looks like, then exits.
PROBE = textwrap.dedent(
    """
    import json, multiprocessing.process, os, signal, sys, threading

    streams = (sys.stdin, sys.stdout, sys.stderr)
    skip = (signal.SIGKILL, signal.SIGSTOP)
    state = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "path": sys.path,
        "environ": dict(os.environ),
        "signals": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals() if s not in skip},
        "streams": [(s.encoding, s.errors, s.line_buffering, s.write_through, s.isatty()) for s in streams],
        "stdin": sys.stdin.read(),
        "main": sys.modules["__main__"].__file__,
        "original_dir": multiprocessing.process.ORIGINAL_DIR,
        "threads": threading.active_count(),
    }
    with open("state.json", "w") as f:
        json.dump(state, f)
    print("probe: to stdout")
    print("probe: to stderr", file=sys.stderr)
    how = os.environ["PROBE_EXIT"]
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(int(how) if how.isdigit() else how)
    """
)


def probe(tmp_path: Path, how: str, fresh: bool) -> tuple[subprocess.CompletedProcess[str], dict]:
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"PYTHONPATH": pythonpath(tmp_path), "PROBE_EXIT": how}
    args = ["experiment=gaussians_demo", "trainer.device=cpu", "plugins=[probe]", "hydra.run.dir=run"]
    res = run_cli(*args, cwd=tmp_path, env=env, fresh=fresh)
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").unlink()
    return res, state


def test_a_forked_command_sees_what_a_new_process_sees(tmp_path: Path) -> None:
    new, new_state = probe(tmp_path, "the probe stops here", fresh=True)
    forked, forked_state = probe(tmp_path, "the probe stops here", fresh=False)
    assert set(new_state) == set(forked_state)
    for key in new_state:
        assert forked_state[key] == new_state[key], key
    for res in (new, forked):
        assert res.returncode == 1, res.stderr
        assert "probe: to stdout" in res.stdout and "probe: to stderr" in res.stderr
        assert res.stderr.rstrip().endswith("the probe stops here")  # sys.exit("...") prints it


@pytest.mark.parametrize(("how", "status"), [("0", 0), ("3", 3), ("SIGKILL", -9)])
def test_exit_statuses_as_subprocess_reports_them(tmp_path: Path, how: str, status: int) -> None:
    res, _ = probe(tmp_path, how, fresh=False)
    assert res.returncode == status, res.stderr
    assert "probe: to stdout" in res.stdout


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    args = ["experiment=gaussians_demo", "trainer.device=cpu", "trainer.steps=100000000", "hydra.run.dir=run"]
    with pytest.raises(subprocess.TimeoutExpired) as err:
        run_cli(*args, "trainer.epochs=null", "logger.sample_every=0", cwd=tmp_path, timeout=2)
    assert err.value.timeout == 2
    assert err.value.stderr is None or isinstance(err.value.stderr, bytes)  # as subprocess.run gives it
    res = run_cli("--help", cwd=tmp_path, name="gan-sweep-report")  # the next command runs as usual
    assert res.returncode == 0 and "sweep_dir" in res.stdout
