"""Evaluation during training: at every checkpoint, the gate's figures per class on a fixed z set.

GANs collapse mid-run (StudioGAN's own AC-GAN on CIFAR-10 went from FID 45.6
at step 14k to 201 at 100k). So at every checkpoint each class's samples
from a fixed set of z are scored by the same gate that `synthgen sample`
uses: the mean KID over classes picks the best checkpoint (kept from
pruning, and the default for sampling), and a class that fails a collapse
check (coverage, diversity, near-copies) is reported as it happens.

Evaluating draws nothing from training's random state (building the domain
classifier's network, trained or loaded, initialises weights): the same recipe
and seed train the same weights with evaluation on or off, cached or not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthgen.data.loading import LabelledImages
from synthgen.metrics.features import DOMAIN_FOLDER, domain_classifier
from synthgen.metrics.gate import Gate
from synthgen.rng import rng_untouched

EVAL_IMAGES_PER_CLASS = 64
COLLAPSE_CHECKS = ("coverage", "diversity", "duplicates")


class TrainingEvaluator:
    def __init__(self, recipe, data: LabelledImages, run_dir: Path, device):
        self.device = device
        with rng_untouched(device):
            classifier = domain_classifier(data, Path(run_dir) / DOMAIN_FOLDER, recipe.gate.domain_steps, recipe.data.hflip, device)
            self.gate = Gate(classifier, data.images, data.labels, EVAL_IMAGES_PER_CLASS, recipe.gate)
        self.class_names = data.class_names
        self.z = torch.randn(EVAL_IMAGES_PER_CLASS, recipe.model.z_dim, generator=torch.Generator().manual_seed(recipe.seed + 2))

    def __call__(self, method) -> dict:
        """{"kid": mean over classes, "classes": {name: {"kid": x, "failed": [...]}}, "collapsed": [names]}."""
        with rng_untouched(self.device):
            return self._score(method)

    def _score(self, method) -> dict:
        classes, collapsed = {}, []
        for index, name in enumerate(self.class_names):
            verdict = self.gate(name, method.evaluation_images(self.z, index))
            classes[name] = {"kid": round(verdict.figures.get("kid", float("nan")), 6), "failed": verdict.failed}
            if any(check in COLLAPSE_CHECKS for check in verdict.failed):
                collapsed.append(name)
        kids = [c["kid"] for c in classes.values() if c["kid"] == c["kid"]]  # NaN: an unchecked class
        return {"kid": sum(kids) / len(kids) if kids else float("nan"), "classes": classes, "collapsed": collapsed}
