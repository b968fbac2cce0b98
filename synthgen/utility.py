"""Does synthetic data help? Train the same small classifier on several training sets, score it on real test images.

The question a user brings is "my dataset is small or skewed: does adding
generated (or classically augmented) images train a better model?". The
answer is measured, not assumed: one compact CNN, the same number of
optimisation steps, the same seeds, trained on

    (a) real only
    (b) synthetic only: the Classification Accuracy Score (CAS, Ravuri &
        Vinyals 2019), how much of each class the generator really captured
    (c) real + synthetic
    (d) real + classic augmentation
    (e) real + synthetic + classic augmentation
    (f) real only, class-balanced batches: what a user tries first against
        a skewed dataset (re-sampling, as torch's WeightedRandomSampler does)

and scored on the same real test set: accuracy, macro-F1 and the recall of
every class (minority classes are where extra data should matter). Cases
whose folders were not given are skipped.

The budget is counted in steps, not epochs, so a case with more images does
not get more compute. Batches are drawn uniformly over the case's images
(no on-the-fly augmentation, and no class re-weighting except in (f)):
whatever changes between cases is the training data alone. With the same seed every case
starts from the same initial weights (a paired comparison).

The network is the domain classifier's architecture (metrics/domain.py,
one place for "the small CNN of this project"), but a fresh instance
trained here from its own seed: it never shares weights with the gate's
classifier, so the judge of the gate does not judge the data it vetted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from synthgen.data.folders import holds_images
from synthgen.data.loading import LabelledImages, load_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model
from synthgen.metrics.domain import DomainNet, DomainSpec
from synthgen.precision import resolve_device, resolve_precision


@dataclass(frozen=True)
class Case:
    label: str
    sources: tuple[str, ...]  # which folders are pooled into its training set
    balanced: bool = False  # batches draw every class equally often instead of every image


# The six training sets, in table order; a case runs when all its sources were given and hold images.
CASES = {
    "a": Case("real only", ("train",)),
    "b": Case("synthetic only (CAS)", ("cas",)),
    "c": Case("real + synthetic", ("train", "synthetic")),
    "d": Case("real + augmentation", ("train", "augmented")),
    "e": Case("real + synthetic + augmentation", ("train", "synthetic", "augmented")),
    "f": Case("real only, class-balanced batches", ("train",), balanced=True),
}

OPTIONAL_SOURCES = ("synthetic", "augmented", "cas")  # folders whose cases are skipped, not refused, when empty
MINORITY_SHARE = 0.5  # a class with at most half the train images of the largest class is a minority class


@dataclass(frozen=True)
class UtilityConfig:
    steps: int = 1000  # optimisation steps per training run, the same for every case
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    width: int = 16  # the CNN's first stage; it doubles at every stride-2 stage
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    precision: str = "auto"  # fp32 on CPU, bf16/fp16 autocast on CUDA


# --- scores ---------------------------------------------------------------------------


@dataclass
class Scores:
    accuracy: float
    macro_f1: float
    recall: list[float]  # per class; NaN for a class absent from the test set


def confusion(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[t, p]: test images of class t predicted as p."""
    return torch.bincount(target * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def macro_f1(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """The unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

    Classes that neither occur in `target` nor are ever predicted are left
    out (their F1 is 0/0); a class that occurs but is never predicted
    correctly counts as 0. This is scikit-learn's f1_score(average="macro").
    """
    counts = confusion(predicted, target, num_classes).double()
    tp = counts.diag()
    fp = counts.sum(0) - tp
    fn = counts.sum(1) - tp
    seen = (tp + fp + fn) > 0
    if not seen.any():
        return float("nan")
    return float((2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])).mean())


def score(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> Scores:
    counts = confusion(predicted, target, num_classes).double()
    support = counts.sum(1)
    recall = torch.where(support > 0, counts.diag() / support.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
    accuracy = float(counts.diag().sum() / counts.sum())
    return Scores(accuracy, macro_f1(predicted, target, num_classes), recall.tolist())


# --- data -----------------------------------------------------------------------------


def load_sources(folders: dict[str, Path]) -> tuple[dict[str, LabelledImages], list[str]]:
    """Every given folder at the train folder's size and channels, labels mapped onto the train classes by name."""
    for role, folder in folders.items():
        if not folder.is_dir():
            raise SynthgenError(f"--{role} {folder}: not a folder (expected one subfolder of images per class)")
    train = load_labelled(folders["train"], "auto", "auto", "crop")
    _, channels, size, _ = train.images.shape
    class_names = list(train.class_names)
    if len(class_names) < 2:
        raise SynthgenError(f"--train {folders['train']}: needs at least two class subfolders, found {class_names}")
    loaded = {"train": train}
    for role, folder in folders.items():
        # An empty synthetic folder is a result (the gate wrote nothing), not a mistake: its cases are skipped.
        if role != "train" and (role not in OPTIONAL_SOURCES or holds_images(folder)):
            loaded[role] = _relabel(load_labelled(folder, size, channels, "crop"), class_names, role, folder)
    return loaded, class_names


def _relabel(data: LabelledImages, class_names: list[str], role: str, folder: Path) -> LabelledImages:
    unknown = [name for name in data.class_names if name not in class_names]
    if unknown:
        raise SynthgenError(
            f"--{role} {folder}: classes {unknown} are not classes of the train folder (its classes: {', '.join(class_names)})"
        )
    mapping = torch.tensor([class_names.index(name) for name in data.class_names])
    return LabelledImages(data.images, mapping[data.labels], class_names, data.unreadable)


def minority_classes(train_counts: list[int]) -> list[int]:
    largest = max(train_counts)
    return [c for c, n in enumerate(train_counts) if n <= MINORITY_SHARE * largest]


# --- the classifier ---------------------------------------------------------------------


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, class_names: list[str], seed: int, config: UtilityConfig, balanced: bool = False
) -> DomainNet:
    """Train a fresh CNN for config.steps steps on uint8 images [N, C, H, W], batches drawn from a seeded generator:
    uniformly over the images, or with `balanced` uniformly over the classes (each image weighted by 1 / its class's count)."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    spec = DomainSpec(channels=images.shape[1], image_size=images.shape[2], class_names=list(class_names), width=config.width)
    net = DomainNet(spec).to(device, memory_format=precision.memory_format)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    scaler = precision.grad_scaler()
    draw = batch_drawer(labels, config.batch_size, balanced, gen)
    net.train()
    for _ in range(config.steps):
        pick = draw()
        x = to_model(images[pick].to(device)).contiguous(memory_format=precision.memory_format)  # uint8 crosses to the GPU
        with precision.autocast():
            _, logits, _ = net(x)  # the rotation head of the domain network is unused here
            loss = F.cross_entropy(logits.float(), labels[pick].to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    return net.eval()


def batch_drawer(labels: torch.Tensor, batch_size: int, balanced: bool, gen: torch.Generator) -> Callable[[], torch.Tensor]:
    """Indices of one batch per call: uniform over the images, or with `balanced` over the classes first."""
    if not balanced:
        return lambda: torch.randint(len(labels), (batch_size,), generator=gen)
    weights = 1.0 / torch.bincount(labels)[labels].double()  # each class's images share one class's weight
    return lambda: torch.multinomial(weights, batch_size, replacement=True, generator=gen)


@torch.inference_mode()
def predict(net: DomainNet, images: torch.Tensor, config: UtilityConfig, batch_size: int = 512) -> torch.Tensor:
    device = next(net.parameters()).device
    precision = resolve_precision(config.precision, device)
    predicted = []
    for chunk in images.split(batch_size):
        with precision.autocast():
            _, logits, _ = net(to_model(chunk.to(device)).contiguous(memory_format=precision.memory_format))
        predicted.append(logits.argmax(1).cpu())
    return torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)


# --- the evaluation ----------------------------------------------------------------------


@dataclass
class CaseResult:
    label: str
    train_images: int
    train_counts: list[int]
    runs: list[dict] = field(default_factory=list)  # one per seed: seed, accuracy, macro_f1, recall

    def mean_std(self, key: str) -> tuple[float, float]:
        return mean_std([run[key] for run in self.runs])

    def recall_mean(self, c: int) -> float:
        return mean_std([run["recall"][c] for run in self.runs])[0]

    def minority_recall(self, minority: list[int]) -> tuple[float, float]:
        """Mean recall over the minority classes, its mean and std over seeds."""
        if not minority:
            return float("nan"), float("nan")
        return mean_std([sum(run["recall"][c] for c in minority) / len(minority) for run in self.runs])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std is 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


@dataclass
class UtilityReport:
    class_names: list[str]
    train_counts: list[int]
    test_counts: list[int]
    minority: list[int]
    config: UtilityConfig
    folders: dict[str, str]
    cases: dict[str, CaseResult]
    skipped: dict[str, str]

    def as_json(self) -> dict:
        cases = {}
        for key, case in self.cases.items():
            acc, f1, minority = case.mean_std("accuracy"), case.mean_std("macro_f1"), case.minority_recall(self.minority)
            cases[key] = {
                "label": case.label,
                "train_images": case.train_images,
                "train_counts": dict(zip(self.class_names, case.train_counts)),
                "accuracy": {"mean": acc[0], "std": acc[1]},
                "macro_f1": {"mean": f1[0], "std": f1[1]},
                "minority_recall": {"mean": minority[0], "std": minority[1]},
                "recall": {name: case.recall_mean(c) for c, name in enumerate(self.class_names)},
                "runs": case.runs,
            }
        return _nan_to_none({
            "classes": self.class_names,
            "train_counts": dict(zip(self.class_names, self.train_counts)),
            "test_counts": dict(zip(self.class_names, self.test_counts)),
            "minority_classes": [self.class_names[c] for c in self.minority],
            "config": {**asdict(self.config), "seeds": list(self.config.seeds)},
            "folders": self.folders,
            "cases": cases,
            "skipped": self.skipped,
        })


def _nan_to_none(value):
    """JSON has no NaN: an undefined figure (no minority class, a class absent from the test set) is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def evaluate_utility(
    train: str | Path,
    test: str | Path,
    synthetic: str | Path | None = None,
    augmented: str | Path | None = None,
    cas: str | Path | None = None,
    config: UtilityConfig = UtilityConfig(),
    progress: Callable[[str, int], None] | None = None,
    cases: str | None = None,
) -> UtilityReport:
    """Cases (a)-(f) for every seed of config.seeds; `cas` is the synthetic set of case (b) (default: `synthetic`).

    `cases` (e.g. "a,c") runs only those: a second synthetic set against a baseline already measured with the
    same seeds and steps needs only its own cases trained.

    Case (b) needs synthetic images of every class: a folder that tops up
    only the rare classes (sample --fill-to) cannot train a classifier of
    all of them, so (b) is then skipped with the reason, unless `cas` names
    a complete synthetic set.
    """
    if config.steps < 1 or config.batch_size < 1 or not config.seeds:
        raise SynthgenError(f"utility: steps ({config.steps}), batch size ({config.batch_size}) and seeds ({list(config.seeds)}) must be positive / non-empty")
    wanted = chosen_cases(cases)
    given = {"train": train, "test": test, "synthetic": synthetic, "augmented": augmented, "cas": cas or synthetic}
    folders = {role: Path(folder) for role, folder in given.items() if folder is not None}
    data, class_names = load_sources(folders)
    k = len(class_names)
    train_counts = data["train"].class_counts()
    test = data["test"]
    skipped = _skipped_cases(data, folders, class_names)
    cases = {}
    for key, case in CASES.items():
        if key in skipped or key not in wanted:
            continue
        images = torch.cat([data[s].images for s in case.sources])
        labels = torch.cat([data[s].labels for s in case.sources])
        result = CaseResult(case.label, len(labels), torch.bincount(labels, minlength=k).tolist())
        for seed in config.seeds:
            if progress:
                progress(key, seed)
            net = train_classifier(images, labels, class_names, seed, config, case.balanced)
            scores = score(predict(net, test.images, config), test.labels, k)
            result.runs.append({"seed": seed, **asdict(scores)})
        cases[key] = result
    return UtilityReport(
        class_names, train_counts, test.class_counts(), minority_classes(train_counts), config,
        {role: str(folder) for role, folder in folders.items()}, cases, skipped,
    )


def chosen_cases(cases: str | None) -> list[str]:
    """The case keys of `cases` ("a,c"; None: all), or a one-line error naming the known ones."""
    if cases is None:
        return list(CASES)
    keys = [key.strip().strip("()") for key in cases.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CASES]
    if unknown or not keys:
        raise SynthgenError(f"--cases {cases}: expected a comma list of {', '.join(CASES)}")
    return keys


def _skipped_cases(data: dict[str, LabelledImages], folders: dict[str, Path], class_names: list[str]) -> dict[str, str]:
    skipped = {}
    for key, case in CASES.items():
        missing = [s for s in case.sources if s not in data]
        if missing:
            role = missing[0]
            skipped[key] = f"--{role} {folders[role]} holds no images" if role in folders else f"no --{role} folder given"
    if "cas" in data and "b" not in skipped:
        absent = [class_names[c] for c, n in enumerate(data["cas"].class_counts()) if n == 0]
        if absent:
            skipped["b"] = (
                f"{folders['cas']} has no images of {', '.join(absent)}: CAS needs synthetic images of every class "
                "(give a complete set with --cas, e.g. from sample --balanced)"
            )
    return skipped
