"""`eval --utility`: the classifier, its scores and the cases, on real Fashion-MNIST images."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from synthgen.errors import SynthgenError
from synthgen.utility import UtilityConfig, evaluate_utility, macro_f1, score
from tests.cli import synthgen
from tests.conftest import FOUR_CLASSES

STEPS = 100  # enough for four distinct classes at 28 px (about 5 s a run on 2 cores)


# --- macro-F1 against its definition ------------------------------------------------------


def f1_by_definition(predicted: list[int], target: list[int]) -> float:
    """Per class: precision = TP / predicted as the class, recall = TP / truly the class, F1 = their harmonic mean (0 when TP = 0)."""
    f1s = []
    for c in sorted(set(predicted) | set(target)):
        tp = sum(p == c and t == c for p, t in zip(predicted, target))
        n_predicted, n_true = predicted.count(c), target.count(c)
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / n_true if n_true else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return sum(f1s) / len(f1s)


@pytest.mark.parametrize(
    "predicted, target, num_classes, expected",
    [
        ([0, 1, 2, 2], [0, 1, 2, 2], 3, 1.0),  # perfect
        ([0, 1, 1, 1], [0, 0, 1, 1], 2, (2 / 3 + 4 / 5) / 2),  # class 0: P 1, R 1/2; class 1: P 2/3, R 1
        ([0, 0, 0], [0, 1, 2], 3, (0.5 + 0 + 0) / 3),  # classes 1 and 2 never predicted: F1 0 each
        ([0, 1], [0, 1], 4, 1.0),  # classes 2 and 3 neither occur nor are predicted: left out, not 0
        ([1, 1, 1, 1], [0, 0, 0, 0], 2, 0.0),  # all wrong
    ],
)
def test_macro_f1_hand_made_cases(predicted, target, num_classes, expected):
    got = macro_f1(torch.tensor(predicted), torch.tensor(target), num_classes)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(f1_by_definition(predicted, target), abs=1e-12)


def test_macro_f1_and_recall_match_the_definition_on_random_labels():
    rng = random.Random(0)
    for trial in range(20):
        k = rng.randint(2, 7)
        target = [rng.randrange(k) for _ in range(rng.randint(1, 60))]
        predicted = [t if rng.random() < 0.6 else rng.randrange(k) for t in target]
        scores = score(torch.tensor(predicted), torch.tensor(target), k)
        assert scores.macro_f1 == pytest.approx(f1_by_definition(predicted, target), abs=1e-12), trial
        assert scores.accuracy == pytest.approx(sum(p == t for p, t in zip(predicted, target)) / len(target))
        for c in range(k):
            hits = [p == c for p, t in zip(predicted, target) if t == c]
            if hits:
                assert scores.recall[c] == pytest.approx(sum(hits) / len(hits))
            else:
                assert scores.recall[c] != scores.recall[c]  # NaN: no test images of the class


# --- folders made of real images ------------------------------------------------------------


def link_split(source: Path, dest: Path, start: int, stop: int) -> Path:
    """dest/<class>/ with links to images [start:stop] of each of the four classes (sorted names: disjoint ranges, disjoint images)."""
    for name in FOUR_CLASSES:
        (dest / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[start:stop]:
            (dest / name / path.name).symlink_to(path)
    return dest


@pytest.fixture(scope="module")
def splits(fashion_test_split, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("utility")
    made = {
        "train": link_split(fashion_test_split, root / "train", 0, 150),
        "other": link_split(fashion_test_split, root / "other", 150, 300),  # real images standing in for a perfect generator
        "test": link_split(fashion_test_split, root / "test", 700, 1000),
    }
    # The same disjoint images, each filed under a random class: "synthetic" data with no class information.
    files = sorted(p for name in FOUR_CLASSES for p in (made["other"] / name).iterdir())
    random.Random(0).shuffle(files)
    made["shuffled"] = root / "shuffled"
    for i, path in enumerate(files):
        folder = made["shuffled"] / FOUR_CLASSES[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").symlink_to(path.resolve())
    return made


def figures(report) -> dict:
    return {key: (case.mean_std("accuracy")[0], case.mean_std("macro_f1")[0]) for key, case in report.cases.items()}


@pytest.fixture(scope="module")
def realistic(splits):
    """Real train images, and disjoint real images of the same classes as the 'synthetic' set."""
    return evaluate_utility(splits["train"], splits["test"], synthetic=splits["other"], config=UtilityConfig(steps=STEPS))


def test_real_only_beats_chance_by_a_wide_margin(realistic):
    accuracy, f1 = figures(realistic)["a"]
    print(f"real only: accuracy {accuracy:.3f}, macro-F1 {f1:.3f} (chance 0.25)")
    assert accuracy > 0.8 and f1 > 0.8
    assert set(realistic.skipped) == {"d", "e"}  # no augmented folder given
    assert realistic.cases["f"].train_images == realistic.cases["a"].train_images  # the same images, drawn by class


def test_a_perfect_generator_scores_close_to_real_data(realistic):
    """Disjoint real images as the 'synthetic' set: CAS (b) close to real-only (a), and (c) doubles the data."""
    got = figures(realistic)
    print({k: f"{a:.3f}/{f:.3f}" for k, (a, f) in got.items()})
    assert abs(got["b"][0] - got["a"][0]) < 0.06
    assert got["c"][0] > got["a"][0] - 0.04
    assert realistic.cases["c"].train_images == 2 * realistic.cases["a"].train_images == 1200


def test_synthetic_images_without_class_information_score_near_chance(splits):
    report = evaluate_utility(splits["train"], splits["test"], cas=splits["shuffled"], config=UtilityConfig(steps=STEPS), cases="b")
    cas = figures(report)["b"][0]
    print(f"CAS with shuffled labels: {cas:.3f} (chance 0.25)")
    assert cas < 0.4
    assert set(report.cases) == {"b"}


def test_same_seed_gives_identical_figures_and_another_seed_does_not(splits):
    config = UtilityConfig(steps=15, seeds=(0, 1))
    first = evaluate_utility(splits["train"], splits["test"], augmented=splits["other"], config=config, cases="a,d").as_json()
    again = evaluate_utility(splits["train"], splits["test"], augmented=splits["other"], config=config, cases="a,d").as_json()
    assert set(first["cases"]) == {"a", "d"}
    assert first["cases"] == again["cases"]
    runs = first["cases"]["a"]["runs"]
    assert runs[0]["recall"] != runs[1]["recall"]  # the seed does change the run


def test_a_class_unknown_to_the_train_folder_is_a_clean_error(splits, tmp_path):
    odd = link_split(splits["other"], tmp_path / "odd", 0, 5)
    (odd / "Sneaker").rename(odd / "Sneakers")
    with pytest.raises(SynthgenError, match=r"--synthetic .*odd: classes \['Sneakers'\] are not classes of the train folder"):
        evaluate_utility(splits["train"], splits["test"], synthetic=odd, config=UtilityConfig(steps=1))


def test_an_empty_synthetic_folder_skips_its_cases_with_the_reason(splits, tmp_path):
    """The gate held back every class: the folder exists but holds only a manifest and class folders. The real
    cases still run; those that need synthetic images are skipped, saying why, instead of the command failing."""
    empty = tmp_path / "gated"
    (empty / "Bag").mkdir(parents=True)
    (empty / "manifest.csv").write_text("file,class\n")
    report = evaluate_utility(splits["train"], splits["test"], synthetic=empty, config=UtilityConfig(steps=1, seeds=(0,)))
    assert {"a", "f"} <= set(report.cases) and not {"b", "c", "e"} & set(report.cases)
    assert report.skipped["c"] == f"--synthetic {empty} holds no images"
    assert report.skipped["b"] == f"--cas {empty} holds no images"
    assert report.skipped["d"] == "no --augmented folder given"


def test_minority_classes_come_from_the_train_counts(splits, tmp_path):
    skewed = link_split(splits["train"], tmp_path / "skewed", 0, 150)
    for path in sorted((skewed / "Bag").iterdir())[20:]:
        path.unlink()
    report = evaluate_utility(skewed, splits["test"], config=UtilityConfig(steps=1))
    assert [report.class_names[c] for c in report.minority] == ["Bag"]
    assert report.as_json()["train_counts"]["Bag"] == 20


def test_class_balanced_batches_draw_every_class_equally_often():
    """Case (f), the re-sampling baseline: batches drawn by class see a class of 8 images as often as one of 400."""
    from synthgen.utility import batch_drawer

    labels = torch.cat([torch.zeros(8), torch.ones(400), torch.full((100,), 2)]).long()
    counts = {}
    for balanced in (False, True):
        draw = batch_drawer(labels, 64, balanced, torch.Generator().manual_seed(0))
        counts[balanced] = torch.bincount(labels[torch.cat([draw() for _ in range(300)])], minlength=3) / (300 * 64)
    assert torch.allclose(counts[True], torch.full((3,), 1 / 3), atol=0.02), counts[True]
    assert torch.allclose(counts[False], torch.tensor([8, 400, 100]) / 508, atol=0.02), counts[False]


def test_cli_prints_the_table_and_writes_json(splits, tmp_path):
    done = synthgen("eval", "--utility", "--train", splits["train"], "--test", splits["test"], "--synthetic", splits["other"],
                    "--steps", 10, "--seeds", 2, "--json", tmp_path / "u.json")
    assert done.returncode == 0, done.stderr
    assert "(a) real only" in done.stdout and "synthetic only (CAS)" in done.stdout and "±" in done.stdout
    saved = json.loads((tmp_path / "u.json").read_text())
    assert set(saved["cases"]) == {"a", "b", "c", "f"} and saved["config"]["seeds"] == [0, 1]
    assert saved["cases"]["c"]["train_counts"] == {name: 300 for name in sorted(FOUR_CLASSES)}
    # --cases c: only (c), trained exactly as in the full run (same seeds, same steps).
    done = synthgen("eval", "--utility", "--train", splits["train"], "--test", splits["test"], "--synthetic", splits["other"],
                    "--steps", 10, "--seeds", 2, "--cases", "c", "--json", tmp_path / "c.json")
    assert done.returncode == 0, done.stderr
    only_c = json.loads((tmp_path / "c.json").read_text())["cases"]
    assert set(only_c) == {"c"} and only_c["c"] == saved["cases"]["c"]


def test_cli_bad_input_is_one_line_and_exit_2(splits, tmp_path):
    done = synthgen("eval", "--utility", "--train", splits["train"], "--test", tmp_path / "missing")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "missing" in done.stderr
    done = synthgen("eval", "--utility", "--test", splits["test"])
    assert done.returncode == 2 and "--train DIR" in done.stderr
    done = synthgen("eval", "--utility", "--train", splits["train"], "--test", splits["test"], "--cases", "a,g")
    assert done.returncode == 2 and "--cases a,g: expected a comma list of a, b, c, d, e, f" in done.stderr
