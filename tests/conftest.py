"""Shared fixtures: the embedded Fashion-MNIST demo data and small real training runs."""

from __future__ import annotations

import csv
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

# pytest-xdist (`make test` runs one worker per core) puts several workers on the same cores: each gets its
# share of threads, and so does every process it starts (OMP_NUM_THREADS, which synthgen leaves alone), so a
# command run as its own process computes what the same command run in the worker does.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
# Output is checked as a user who redirects it to a file sees it (not wrapped); xdist's workers set COLUMNS=80.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import pytest  # noqa: E402
import torch  # noqa: E402

from synthgen.data.idx import import_idx, resolve_class_names  # noqa: E402
from synthgen.recipe import validate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
# Four visually distinct Fashion-MNIST classes keep the end-to-end tests short.
FOUR_CLASSES = ["Trouser", "Sneaker", "Bag", "T-shirt-top"]

torch.set_num_threads(THREADS)

# The test files that take longest, longest first: an order estimated from the setups and calls in `make test`'s
# --durations list (its 20 slowest; AMD EPYC lscpu model 1, 2026-12-07), not from measured per-file totals. `make test` hands whole files to its workers
# (--dist loadfile, so that module fixtures are built once) in the order collected, with xdist's reordering by
# test count turned off (--no-loadscope-reorder): that put the files with few, long tests last, where one worker
# could finish a long file alone. Longest first, the other worker takes the many short files meanwhile.
# Only the order changes; a file not listed keeps its place after these.
SLOWEST_FILES = [
    "test_gate.py", "test_encoders.py", "test_stargan.py", "test_pyramid.py", "test_utility.py", "test_distributed.py",
    "test_stargan_attributes.py", "test_text2image.py", "test_sgan.py", "test_augment_balance.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never touch the user's cache folder."""
    os.environ["SYNTHGEN_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def fashion_test_split(tmp_path_factory) -> Path:
    """The embedded demo data (Fashion-MNIST test split) as labelled PNG folders."""
    out = tmp_path_factory.mktemp("fm")
    import_idx(REPO / "demo" / "fashion-mnist", out, resolve_class_names("fashion-mnist"))
    return out / "test"


@pytest.fixture(scope="session")
def four_classes(fashion_test_split, tmp_path_factory) -> Path:
    """A 4-class subset of the demo data (links to the class folders)."""
    root = tmp_path_factory.mktemp("fm4")
    for name in FOUR_CLASSES:
        (root / name).symlink_to(fashion_test_split / name)
    return root


def tiny_recipe(root: Path, out_dir: Path, name: str = "tiny", **sections) -> "Recipe":  # noqa: F821
    """A small, fast recipe; `sections` override keys per section, e.g. train={"steps": 5}."""
    raw = {
        "name": name,
        "seed": 0,
        "data": {"root": str(root), "image_size": 28, "channels": 1},
        "model": {"backbone": "dcgan", "g_channels": 16, "d_channels": 16, "z_dim": 32},
        "conditioning": {"type": "acgan"},
        "loss": {"type": "ns"},
        "train": {"steps": 6, "batch_size": 16, "log_every": 2, "sample_every": 3, "checkpoint_every": 3, "out_dir": str(out_dir)},
        "gate": {"eval_during_training": False},  # tests that want it turn it on
    }
    return validate(with_sections(raw, sections))


def with_sections(raw: dict, sections: dict) -> dict:
    """Overrides per section into a raw recipe: a dict updates the section's keys, anything else replaces the key."""
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


@pytest.fixture(scope="session")
def trained_gan(four_classes, tmp_path_factory) -> Path:
    """A normally trained tiny GAN on the four classes, the loss and conditioning of recipes/small-data.yaml (400 steps): the run folder.

    Good enough to pass the gate (every batch and the set check, by a margin) in about 43 s (one thread of a test worker, AMD EPYC lscpu model 1, fp32); the 250-step
    AC-GAN this replaced drew smudges that the gate now rejects, as it should. Trained once per test session,
    whichever xdist worker asks first; the others read the same run.
    """
    from synthgen.train.loop import train

    with once_per_session(tmp_path_factory, "trained_gan") as done:
        if not done.exists():
            done.write_text(str(train(tiny_recipe(
                four_classes, tmp_path_factory.mktemp("gan"),
                model={"g_channels": 32, "d_channels": 32, "z_dim": 64, "spectral_norm": False},
                conditioning={"type": "projection"},
                loss={"type": "rpgan", "r1_gamma": 0.05, "r2_gamma": 0.05, "r1_every": 4},
                train={"steps": 400, "batch_size": 32, "lr_g": 5e-4, "lr_d": 5e-4, "beta1": 0.0, "beta2": 0.99, "ema": True,
                       "ema_halflife_kimg": 10, "log_every": 50, "sample_every": 400, "checkpoint_every": 400},
            )).run_dir))
        return Path(done.read_text())


@contextmanager
def once_per_session(tmp_path_factory, name: str):
    """A marker file that every xdist worker of this session shares, held under an exclusive lock.

    The first worker to get the lock builds what `name` stands for and records it in the marker; the others wait,
    then read it. (Each worker's own temporary folders live until the session ends, so a path one of them wrote
    stays valid for all.)
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(shared / f"{name}.lock", "w") as lock:  # closing the file releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared / f"{name}.done"


@pytest.fixture(scope="session")
def edge_pairs(fashion_test_split, tmp_path_factory) -> Path:
    """Edges -> image pairs from the demo data: train/{A,B} (500 pairs) and held-out test/{A,B} (100)."""
    from synthgen.data.edges import make_edge_pairs

    out = tmp_path_factory.mktemp("edges")
    make_edge_pairs(fashion_test_split, out, holdout=100, limit=600)
    return out


@contextmanager
def single_thread():
    """Train on one thread, as a `make test` worker does on 2 cores, however pytest was invoked: a test whose outcome
    is a trained tiny model then computes the same sums run alone (two threads) as in the suite."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny translation models: one thread beats two (their ops are too small to split, and the cores are shared)."""
    with single_thread():
        yield


def read_manifest(folder: Path, name: str = "manifest.csv") -> list[dict]:
    """The rows of a CSV manifest (sample, augment, balance, vary, translate write one), in file order."""
    with open(folder / name, newline="") as handle:
        return list(csv.DictReader(handle))


def files_of(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    """Every file below `folder` matching `pattern`, by relative path: two byte-identical outputs compare equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def load_imagefolder(folder: Path, cache: Path, **options):
    """`datasets.load_dataset("imagefolder", data_dir=folder)`, offline, its cache under `cache`: what a Hugging Face user gets.

    `datasets` names splits after words in file and folder names: outputs that keep the names of imported
    files (test-01564.png) land in a "test" split without the metadata file, unless the call passes
    data_files="**" (one split), as the README says.
    """
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets  # a dev dependency (pyproject.toml): missing, the test fails rather than skips

    datasets.disable_progress_bars()
    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(cache), **options)
