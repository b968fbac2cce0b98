"""Fixtures of the robustness suite: tiny real runs, in-process CLI calls, forked workers, the tally."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from tests.conftest import tiny_recipe
from tests.robustness import tally


def pytest_terminal_summary(terminalreporter):
    if tally.faults or tally.bad_inputs:
        terminalreporter.section("robustness tally")
        for line in tally.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """One intra-op thread everywhere (forked children, subprocesses, this process): results are bit-exact
    only at equal thread counts, and the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- data and runs -------------------------------------------------------------------


@pytest.fixture(scope="package")
def two_classes(fashion_test_split, tmp_path_factory) -> Path:
    """Two Fashion-MNIST classes, 60 images each (copies: tests may add bad files beside them)."""
    root = tmp_path_factory.mktemp("two")
    for name in ("Bag", "Sneaker"):
        (root / name).mkdir()
        for path in sorted((fashion_test_split / name).iterdir())[:60]:
            (root / name / path.name).write_bytes(path.read_bytes())
    return root


def small_recipe(root: Path, out_dir: Path, name: str = "tiny", **sections):
    """tiny_recipe, smaller still: a run of 12 steps takes well under a second."""
    model = {"g_channels": 8, "d_channels": 8, "z_dim": 16, **sections.pop("model", {})}
    train = {"steps": 12, "batch_size": 8, "checkpoint_every": 3, "sample_every": 6, "log_every": 1, **sections.pop("train", {})}
    return tiny_recipe(root, out_dir, name, model=model, train=train, **sections)


@pytest.fixture(scope="package")
def cgan_run(two_classes, tmp_path_factory) -> Path:
    from synthgen.train.loop import train

    return train(small_recipe(two_classes, tmp_path_factory.mktemp("cgan"))).run_dir


@pytest.fixture(scope="package")
def pairs(fashion_test_split, tmp_path_factory) -> Path:
    """40 pairs A/x.png (an image) <-> B/x.png (its negative)."""
    root = tmp_path_factory.mktemp("pairs")
    for side in "AB":
        (root / side).mkdir()
    for path in sorted((fashion_test_split / "Trouser").iterdir())[:40]:
        with Image.open(path) as image:
            image.save(root / "A" / path.name)
            ImageOps.invert(image.convert("L")).save(root / "B" / path.name)
    return root


@pytest.fixture(scope="package")
def pix2pix_run(pairs, tmp_path_factory) -> Path:
    from synthgen.train.loop import train
    from tests.translate_helpers import tiny_translation_recipe

    recipe = tiny_translation_recipe("pix2pix", pairs, tmp_path_factory.mktemp("p2p"), train={"steps": 4, "checkpoint_every": 4})
    return train(recipe).run_dir


# --- the CLI, in this process ---------------------------------------------------------


def cli(*args: str) -> tuple[int, str]:
    """Run `synthgen ARGS` in this process: (exit status, stdout + stderr). Counts any traceback in the tally."""
    from synthgen import cli as cli_module

    buffer = io.StringIO()
    argv, code = sys.argv, 0
    sys.argv = ["synthgen", *map(str, args)]
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            cli_module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # anything escaping main() would be a traceback for the user
        buffer.write(traceback.format_exc())
        code = -1
    finally:
        sys.argv = argv
        cli_module.settings["debug"] = False
    output = buffer.getvalue()
    if "Traceback" in output and "--debug" not in args:
        tally.tracebacks[0] += 1
    return code, output


def error_line(output: str) -> str:
    """The one `error:` line of a failed command (asserting there is exactly one and no traceback)."""
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def refused(kind: str, *args: str, expect: str, code: int = 2) -> str:
    """A CLI call that must fail cleanly: exit `code`, one error line containing `expect`; tallied."""
    pending = tally.bad_input(kind)
    status, output = cli(*args)
    assert status == code, output
    line = error_line(output)
    assert expect in line, line
    pending.clean()
    return line


# --- forked workers -------------------------------------------------------------------


def fork(work) -> int:
    """Run work() in a forked child (this process's imports, no start-up cost); returns the child's pid.

    The child exits with 0 when work() returns, 1 when it raises; it never returns into pytest.
    """
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)
            work()
            code = 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait(pid: int, timeout: float = 120) -> int:
    """Wait for a child: its exit status, or -signal when it was killed. A child that hangs is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child {pid} hung for {timeout} s")


def timed(work) -> tuple[object, float]:
    """(work(), seconds it took): how long an uninterrupted run takes, to draw kill times inside it."""
    start = time.monotonic()
    result = work()
    return result, time.monotonic() - start


def kill_after(pid: int, seconds: float) -> bool:
    """SIGKILL the child after `seconds` unless it finished first; True when it was killed while running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the child failed (status {status}); see its output"
            return False
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    status = wait(pid)
    assert status in (0, -signal.SIGKILL), f"the child failed (status {status}); see its output"
    return status == -signal.SIGKILL
