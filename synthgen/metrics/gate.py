"""The gate: every generated batch is checked against the real images of its class before it is written.

Each check compares a figure of the generated batch with the same figure of
*real* batches of the same size (the null distribution), so a threshold
means "worse than real data of this class almost ever is", whatever the
dataset, the image size or the batch size:

| check       | figure (per batch)                                         | rejects when                                        |
|-------------|------------------------------------------------------------|-----------------------------------------------------|
| kid         | KID to the class's real features (domain features)         | > q-th percentile of real batches + the smaller of kid_margin x the KID between the class and its nearest other class (rotated copies of itself for a one-class dataset) and kid_spread_ratio x the class's own spread (the KID of copies of one of its images) |
| coverage    | share of real images with a generated one nearby (k=5)     | < coverage_ratio x the median of real batches       |
| diversity   | mean MS-SSIM over pairs within the batch (higher = alike)  | > the smaller of p + diversity_headroom x (1 - p) and diversity_ratio x real median, p the q-th percentile of real batches (never below p) |
| duplicates  | share of images with a near-copy in the batch              | > q-th percentile of real batches + duplicate_margin |
| fidelity    | share the domain classifier puts in the intended class     | < (100 - q)-th percentile of real batches - fidelity_margin (never below fidelity_ratio x held-out accuracy) |

Once a class is complete, `check_set` judges everything written for it as one
set, which a batch of 64 cannot: samples that are each plausible but together
cover a fraction of the class pass batch by batch. Against N of its real images (N = min(written, half the real
ones), SEED-fixed draws):

| set check    | figure (everything written for the class)                 | rejects when                                         |
|--------------|------------------------------------------------------------|------------------------------------------------------|
| set_recall   | share of real images inside the written set's 3-NN balls    | < set_ratio x the (100 - q)-th percentile of real sets of the same N |

Its precision, density and coverage, and how many written images the domain
classifier puts in another class (and which), are reported beside it.

KID is the distribution check: unbiased, so meaningful for a batch of 64.
Coverage, diversity and duplicates catch the three faces of mode collapse
(missing modes, everything alike, the same few images repeated). FID is not
used: at a few hundred images it is dominated by its bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import SynthgenError
from synthgen.metrics.domain import DomainClassifier, held_out_count
from synthgen.metrics.features import cached_features
from synthgen.metrics.kid import mmd2_unbiased, polynomial_kernel
from synthgen.metrics.msssim import mean_pairwise_ms_ssim
from synthgen.metrics.prdc import prdc, real_radii
from synthgen.recipe import GateConfig

COVERAGE_K = 5  # Naeem et al. 2020
MAX_REFERENCE = 2000  # real images per class the gate compares with (a seeded subsample above this)
MIN_REAL_PER_CLASS = 8  # below this a class cannot be calibrated: its batches are written unchecked
SET_TRIALS = 10  # equal-N draws of the set check: the written set's figure is their mean, the real sets' their spread
SET_MIN = 20  # below this many images per side at equal N a set says little: unchecked
SET_FIGURES = ("precision", "recall", "density", "coverage")  # all reported
# Recall is the one checked: on Fashion-MNIST it separated a generator whose synthetic data helps a classifier
# (recipes/small-data.yaml, recall 0.55-0.75 per class) from one whose data does not (acgan.yaml, 0.09-0.41);
# coverage overlapped (0.38-0.72 against 0.16-0.58). README, The gate.
SET_CHECKED = "recall"
FIDELITY_DRAWS = 20_000  # draws of the fidelity null (numbers only: cheap, and its low percentile is then stable)
SEED = 0  # calibration draws are fixed: the same run and data always give the same thresholds


@dataclass
class Verdict:
    accepted: bool
    reason: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # what else the report shows (the set check: real figures, where images went)


ADVICE = {
    "kid": "samples are far from the real class: train longer or sample an earlier/best checkpoint",
    "coverage": "samples miss most of the real variety (mode collapse): try an earlier checkpoint, no --truncation, model.pack: 2 or model.minibatch_std: true",
    "diversity": "samples look alike (mode collapse): try an earlier checkpoint, no --truncation or a larger psi, model.pack: 2 or model.minibatch_std: true",
    "duplicates": "the same images repeat (mode collapse): try an earlier checkpoint, model.pack: 2 or model.minibatch_std: true",
    "fidelity": "samples do not look like this class to the domain classifier: train longer or raise conditioning.aux_weight",
    "set_recall": "everything written for the class misses much of the real variety (too alike, or modes dropped): train longer, sample an earlier checkpoint or use recipes/small-data.yaml",
}


class ClassReference:
    """One class's real features and its null distributions for batches of a given size."""

    def __init__(self, index: int, images: torch.Tensor, features: torch.Tensor, batch_size: int, settings: GateConfig, kid_scale: float,
                 real_accuracy: float, held_out: int = 0):
        gen = torch.Generator().manual_seed(SEED + index)
        self.index, self.batch_size, self.held_out = index, batch_size, held_out
        if len(features) > MAX_REFERENCE:
            keep = torch.randperm(len(features), generator=gen)[:MAX_REFERENCE]
            images, features = images[keep], features[keep]
        self.images, self.features = images, features.double()
        self.kid_scale, self.real_accuracy, self.settings = kid_scale, real_accuracy, settings
        n = len(features)
        # Real batches can hold at most half the class: the rest is their reference.
        self.null_size = min(batch_size, n // 2)
        self.kernel = polynomial_kernel(self.features, self.features)
        self.kernel_offdiag_sum = self.kernel.sum() - self.kernel.diagonal().sum()  # every batch's KID needs it
        # The class's own spread: the KID of a batch of copies of one of its images, on average (E k(x, x) - E k(x, x')).
        self.kid_spread = float(self.kernel.diagonal().mean() - self.kernel_offdiag_sum / (n * (n - 1)))
        self.distances = torch.cdist(self.features, self.features)
        self.distances.fill_diagonal_(float("inf"))
        self.radii = self.distances.kthvalue(COVERAGE_K, dim=1).values
        nearest = self.distances.min(dim=1).values
        nonzero = nearest[nearest > 0]
        # Two images closer than half of the closest 5% of real neighbours count as copies.
        self.duplicate_radius = 0.5 * float(torch.quantile(nonzero, 0.05)) if len(nonzero) else 0.0
        self.null = self._null_distribution(gen)
        self.limits = self._limits()

    # --- figures of one batch --------------------------------------------------------

    def figures(self, images: torch.Tensor, features: torch.Tensor, logits: torch.Tensor | None, index: int) -> dict[str, float]:
        features = features.double()
        to_real = torch.cdist(features, self.features)
        figures = {
            "kid": _mmd2(self.kernel_offdiag_sum, len(self.features), polynomial_kernel(features, features), polynomial_kernel(self.features, features).sum()),
            "coverage": float((to_real <= self.radii[None, :]).any(dim=0).double().mean()),
            "diversity": mean_pairwise_ms_ssim(images, pairs=64, seed=SEED),
            "duplicates": _duplicate_share(torch.cdist(features, features), self.duplicate_radius),
        }
        if logits is not None:
            figures["fidelity"] = float((logits.argmax(1) == index).double().mean())
        return figures

    # --- calibration on real batches ----------------------------------------------------

    def _null_distribution(self, gen: torch.Generator) -> dict[str, np.ndarray]:
        n, m = len(self.features), self.null_size
        total_offdiag = self.kernel_offdiag_sum
        row_sums = self.kernel.sum(dim=1)
        null = {"kid": [], "coverage": [], "diversity": [], "duplicates": []}
        for trial in range(self.settings.null_trials):
            order = torch.randperm(n, generator=gen)
            batch, rest = order[:m], order[m:]
            k_bb = self.kernel[batch][:, batch]
            # The off-diagonal kernel sum over `rest` comes from precomputed totals: no n x n work per trial.
            rest_offdiag = _offdiag_sum_of_rest(self.kernel, total_offdiag, row_sums, batch, k_bb)
            cross_sum = row_sums[batch].sum() - k_bb.sum()  # sum of k(rest, batch)
            null["kid"].append(_mmd2(rest_offdiag, len(rest), k_bb, cross_sum))
            covered = (self.distances[batch][:, rest] <= self.radii[rest][None, :]).any(dim=0)
            null["coverage"].append(float(covered.double().mean()))
            null["duplicates"].append(_duplicate_share(self.distances[batch][:, batch], self.duplicate_radius))
            if trial < 50:  # pixel MS-SSIM is the slow one; 50 real batches estimate its spread well enough
                null["diversity"].append(mean_pairwise_ms_ssim(self.images[batch], pairs=64, seed=SEED + trial))
        return {k: np.asarray(v) for k, v in null.items()}

    def _limits(self) -> dict[str, float]:
        s, q = self.settings, self.settings.percentile
        diversity_q, diversity_median = float(np.percentile(self.null["diversity"], q)), float(np.median(self.null["diversity"]))
        limits = {
            # Halfway to the nearest other class is far for a class unlike the others (Fashion-MNIST's Dress allowed 3.3
            # against a real 0.0), so the margin is also capped by a share of the class's own spread.
            "kid": float(np.percentile(self.null["kid"], q)) + min(s.kid_margin * self.kid_scale, s.kid_spread_ratio * self.kid_spread),
            "coverage": s.coverage_ratio * float(np.median(self.null["coverage"])),
            # MS-SSIM is 1 for identical images: the limit takes a share of the room left above real batches, but at most a
            # multiple of the real median: for a varied class (0.18 for Fashion-MNIST shirts) that room alone allowed 3.5x the real figure.
            "diversity": max(diversity_q, min(diversity_q + s.diversity_headroom * (1.0 - diversity_q), s.diversity_ratio * diversity_median)),
            "duplicates": float(np.percentile(self.null["duplicates"], q)) + s.duplicate_margin,
        }
        if not np.isnan(self.real_accuracy):
            limits["fidelity"] = fidelity_limit(self.real_accuracy, self.held_out, self.batch_size, s, SEED + self.index)
        return limits

    # --- the class's whole written set ---------------------------------------------------

    def set_size(self, written: int) -> int:
        """N of the set check: as many written images as real ones, the real ones at most half the class (the rest is their twin)."""
        return min(written, len(self.features) // 2)

    def set_figures(self, features: torch.Tensor, n: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Precision, recall, density and coverage of everything written for the class, and the same of real sets.

        In each of SET_TRIALS draws, n real images are the reference, n written ones are scored against it and
        n other real ones (its twin) give the real-vs-real figure. Returns (the written set's mean figures,
        the real twins' figures per draw).
        """
        gen = torch.Generator().manual_seed(SEED + self.index)
        written, real = [], []
        for _ in range(SET_TRIALS):
            order = torch.randperm(len(self.features), generator=gen)
            reference, twin = self.features[order[:n]], self.features[order[n : 2 * n]]
            radii = real_radii(reference)  # one neighbour search of the reference for both sets scored against it
            written.append(prdc(reference, features.double()[torch.randperm(len(features), generator=gen)[:n]], radii))
            real.append(prdc(reference, twin, radii))
        mean = {name: float(np.mean([w[name] for w in written])) for name in SET_FIGURES}
        return mean, {name: np.asarray([r[name] for r in real]) for name in SET_FIGURES}

    def set_limits(self, null: dict[str, np.ndarray]) -> dict[str, float]:
        """Recall must reach set_ratio x the low percentile of the real-vs-real draws at the same N."""
        low = 100.0 - self.settings.percentile
        return {f"set_{SET_CHECKED}": self.settings.set_ratio * float(np.percentile(null[SET_CHECKED], low))}

    def baseline(self) -> dict[str, float]:
        """Median figures of real batches: what a perfect generator would score."""
        base = {k: float(np.median(v)) for k, v in self.null.items()}
        if not np.isnan(self.real_accuracy):
            base["fidelity"] = self.real_accuracy
        return base


LOWER_IS_WORSE = {"coverage", "fidelity", "set_recall"}


def fidelity_limit(accuracy: float, held_out: int, batch_size: int, settings: GateConfig, seed: int = SEED) -> float:
    """The lowest share of a batch that the domain classifier may put in the intended class.

    A real batch of the class scores Binomial(batch_size, a) / batch_size, where the classifier's accuracy a is
    itself only estimated, on `held_out` images: a ~ Beta(correct + 1, wrong + 1). The limit is the
    (100 - percentile)-th percentile of that null minus `fidelity_margin`, and never below `fidelity_ratio` x accuracy
    (the floor that remains where a handful of held-out images say little about a).
    """
    floor = settings.fidelity_ratio * accuracy
    if held_out < 1:
        return floor
    rng = np.random.default_rng(seed)
    correct = round(accuracy * held_out)
    share = rng.binomial(batch_size, rng.beta(correct + 1, held_out - correct + 1, FIDELITY_DRAWS)) / batch_size
    return max(floor, float(np.percentile(share, 100.0 - settings.percentile)) - settings.fidelity_margin)


def failed_checks(figures: dict[str, float], limits: dict[str, float]) -> list[str]:
    failed = []
    for name, limit in limits.items():
        value = figures.get(name)
        if value is None:
            continue
        if (value < limit) if name in LOWER_IS_WORSE else (value > limit):
            failed.append(name)
    return failed


def _offdiag_sum_of_rest(kernel, total_offdiag, row_sums, batch, k_bb) -> torch.Tensor:
    """Sum of k(i, j), i != j, over the points not in `batch`, from precomputed totals."""
    diag_b = kernel.diagonal()[batch].sum()
    # rows of batch against everything, counted twice (rows and columns), minus the batch block counted twice;
    # the batch's diagonal is part of row_sums but not of total_offdiag.
    return total_offdiag - 2 * (row_sums[batch].sum() - diag_b) + (k_bb.sum() - diag_b)


def _mmd2(k_xx_offdiag_sum, n_x: int, k_yy: torch.Tensor, k_xy_sum) -> float:
    """Unbiased MMD² (kid.py's estimator) from the reference's off-diagonal kernel sum and the cross sum, precomputed."""
    n_y = k_yy.shape[0]
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n_y * (n_y - 1))
    return float(k_xx_offdiag_sum / (n_x * (n_x - 1)) + within_y - 2.0 * k_xy_sum / (n_x * n_y))


def _duplicate_share(pairwise: torch.Tensor, radius: float) -> float:
    """Share of batch members with another member closer than `radius` (the diagonal is ignored)."""
    pairwise = pairwise.clone()
    pairwise.fill_diagonal_(float("inf"))
    return float((pairwise.min(dim=1).values < radius).double().mean())


def filters_images(settings: GateConfig, class_names: list[str]) -> bool:
    """Whether gate.recognised_only filters images: it is on and the run has classes to tell apart."""
    return settings.recognised_only and len(class_names) > 1


class Gate:
    """Checks batches of generated uint8 images per class; a `sample.BatchCheck`."""

    def __init__(self, classifier: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int, settings: GateConfig = GateConfig()):
        self.classifier, self.settings = classifier, settings
        self.class_names = classifier.class_names
        features, _ = cached_features(classifier, images, labels)
        by_class = [(labels == c).nonzero().flatten() for c in range(len(self.class_names))]
        scales = _kid_scales(classifier, images, features, by_class)
        self.references: dict[str, ClassReference | None] = {}
        for c, members in enumerate(by_class):
            name = self.class_names[c]
            if len(members) < MIN_REAL_PER_CLASS:
                self.references[name] = None
                continue
            accuracy = classifier.real_accuracy[c] if len(self.class_names) > 1 else float("nan")
            self.references[name] = ClassReference(c, images[members], features[members], batch_size, settings, scales[c], accuracy,
                                                   held_out_count(len(members)))

    def describe(self, class_name: str) -> dict:
        """Limits and real baselines of one class, for gate_report.json."""
        reference = self.references.get(class_name)
        if reference is None:
            return {"checked": False}
        return {"checked": True, "real_images": len(reference.features), "real_batch_size": reference.null_size,
                "limits": reference.limits, "real_baseline": reference.baseline()}

    def check_set(self, class_name: str, images: torch.Tensor) -> Verdict | None:
        """The set check once a class is complete: can everything written for it (uint8 [N, C, H, W]) stand for its real images?

        A batch of 64 cannot see that a class's samples are too alike as a whole; the written set can. Fails
        when its recall against the real images falls below the limit; `details` holds the real-vs-real
        figures at the same N and, for a labelled run, how many written images the domain classifier puts in
        another class (and which). None when the class is unchecked (too few real images).
        """
        reference = self.references.get(class_name)
        if reference is None or len(images) == 0:
            return None
        features, logits = self.classifier.features_and_logits(images)
        details: dict = {"images": len(images)}
        if len(self.class_names) > 1:
            predicted = logits.argmax(1)
            elsewhere = predicted != self.class_names.index(class_name)
            counts = torch.bincount(predicted[elsewhere], minlength=len(self.class_names))
            details["assigned_elsewhere"] = int(elsewhere.sum())
            details["assigned_to"] = {self.class_names[c]: int(k) for c, k in enumerate(counts) if k > 0}
        n = reference.set_size(len(images))
        if n < SET_MIN:
            return Verdict(True, f"set unchecked: fewer than {SET_MIN} images to compare at equal N", details=details)
        figures, null = reference.set_figures(features, n)
        limits = reference.set_limits(null)
        checked = {f"set_{name}": figures[name] for name in SET_FIGURES}
        details.update({"n": n, "draws": SET_TRIALS,
                        "real_vs_real": {f"set_{name}": float(np.median(values)) for name, values in null.items()}})
        failed = failed_checks(checked, limits)
        verdict = Verdict(not failed, figures=checked, limits=limits, failed=failed, details=details)
        if failed:
            real = details["real_vs_real"]
            parts = [f"{name} {checked[name]:.3g} (limit {limits[name]:.3g}, real {real[name]:.3g})" for name in failed]
            verdict.reason = f"set of {len(images)} failed {', '.join(parts)}; {ADVICE[failed[0]]}"
        return verdict

    @property
    def image_filter(self):
        """With gate.recognised_only on a labelled run: `recognised`, sample's per-image filter; else None."""
        return self.recognised if filters_images(self.settings, self.class_names) else None

    def recognised(self, class_name: str, images: torch.Tensor) -> torch.Tensor:
        """bool [N]: which uint8 images the domain classifier puts in `class_name` (its most likely class)."""
        _, logits = self.classifier.features_and_logits(images)
        return logits.argmax(1) == self.class_names.index(class_name)

    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict:
        reference = self.references.get(class_name)
        if reference is None:
            return Verdict(True, f"unchecked: fewer than {MIN_REAL_PER_CLASS} real images of this class")
        features, logits = self.classifier.features_and_logits(images)
        conditional = len(self.class_names) > 1
        figures = reference.figures(images, features, logits if conditional else None, self.class_names.index(class_name))
        failed = failed_checks(figures, reference.limits)
        verdict = Verdict(not failed, figures=figures, limits=reference.limits, failed=failed)
        if failed:
            verdict.reason = describe_failure(failed, figures, reference)
        return verdict


def describe_failure(failed: list[str], figures: dict, reference: ClassReference) -> str:
    first = failed[0]
    base = reference.baseline()
    parts = [f"{name} {figures[name]:.4g} (limit {reference.limits[name]:.4g}, real {base[name]:.4g})" for name in failed]
    return f"failed {', '.join(parts)}; {ADVICE[first]}"


def _kid_scales(classifier, images, features, by_class) -> list[float]:
    """Per class, the KID to the nearest other class: how far "clearly another class" is.

    A one-class dataset has no other class; its scale is the KID to rotated
    copies of itself (the domain classifier was trained to tell rotations apart).
    """
    gen = torch.Generator().manual_seed(0)
    sub = [m[torch.randperm(len(m), generator=gen)[:500]] for m in by_class]
    if len(by_class) == 1:
        rotated = torch.rot90(images[sub[0]], 1, dims=(2, 3))
        return [mmd2_unbiased(features[sub[0]], classifier(rotated))]
    scales = []
    for c, mine in enumerate(sub):
        others = [mmd2_unbiased(features[mine], features[theirs]) for j, theirs in enumerate(sub) if j != c and len(theirs) >= 2 and len(mine) >= 2]
        scales.append(min(others) if others else 0.0)
    return scales


def gate_for_run(run_dir: Path, recipe, class_names: list[str], batch_size: int, real_root: str | Path | None = None, device="cpu", progress=None) -> Gate:
    """The gate of a trained run: its real images (data.root, or `real_root`), its domain classifier, its thresholds."""
    data, classifier = run_domain_classifier(run_dir, recipe, class_names, real_root, device, progress)
    return Gate(classifier, data.images, data.labels, batch_size, recipe.gate)


def run_domain_classifier(run_dir: Path, recipe, class_names: list[str], real_root: str | Path | None = None, device="cpu", progress=None):
    """(the run's real images, its domain classifier): from data.root or `real_root`, which must hold the run's classes."""
    from synthgen.data.loading import load_labelled
    from synthgen.metrics.features import DOMAIN_FOLDER, domain_classifier

    root = real_root or recipe.data.root
    if not root or not Path(root).is_dir():
        raise SynthgenError(
            f"gate: the run's real images are not at data.root={root!r}; pass --real DIR (the training images) or --no-gate"
        )
    data = load_labelled(root, recipe.data.image_size, recipe.data.channels, recipe.data.resize)
    if data.class_names != class_names:
        raise SynthgenError(f"gate: {root} has classes {data.class_names}, the run was trained on {class_names}; pass --real with the training images")
    return data, domain_classifier(data, Path(run_dir) / DOMAIN_FOLDER, recipe.gate.domain_steps, recipe.data.hflip, device, progress)
