"""`synthgen ...` as a user types it, for the tests: one helper instead of one per test file.

`synthgen(...)` runs the command line in this process through the real entry point (`synthgen.cli.main`:
argument parsing, the one-line errors, exit codes), with stdout and stderr captured. That saves starting
Python and importing torch (2-3 s a call, tens of calls in the suite). Tests of what only a separate
process shows (signals, a killed process, torchrun, a terminal's width) start one with `SYNTHGEN_COMMAND`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SYNTHGEN_COMMAND = [sys.executable, "-m", "synthgen"]


def synthgen(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `synthgen ARGS` from the repository root; `env` adds environment variables for the call."""
    from synthgen import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["synthgen", *map(str, args)]
    threads, saved_argv = torch.get_num_threads(), sys.argv
    with _environment(env or {}), contextlib.chdir(REPO), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        sys.argv = argv
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            sys.argv, cli.settings["debug"] = saved_argv, False
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def synthgen_process(*args, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `synthgen ARGS` as its own process (the installed entry point's module), from the repository root."""
    return subprocess.run([*SYNTHGEN_COMMAND, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
