"""The promise of the tool, measured: samples of class k look like class k to a classifier trained on real images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.data.loading import load_labelled
from synthgen.imaging import to_model
from synthgen.sample import TrainedGenerator, plan_balanced, sample_dataset

SAMPLES_PER_CLASS = 50


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> nn.Module:
    """A small CNN trained on the real images: the judge of generated ones."""
    torch.manual_seed(0)
    judge = nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, num_classes),
    )
    optimizer = torch.optim.Adam(judge.parameters(), 1e-3)
    x = to_model(images)
    for _ in range(2):
        for batch in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(judge(x[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return judge.eval()


def test_generated_samples_are_recognised_as_their_class(four_classes, trained_gan, tmp_path):
    real = load_labelled(four_classes, 28, 1, "crop")
    judge = train_judge(real.images, real.labels, len(real.class_names))
    with torch.no_grad():
        held_out = (judge(to_model(real.images[::7])).argmax(1) == real.labels[::7]).float().mean().item()
    assert held_out > 0.9  # the judge itself is competent

    generator = TrainedGenerator(trained_gan)
    out = tmp_path / "synthetic"
    sample_dataset(generator, plan_balanced(generator, SAMPLES_PER_CLASS), out, seed=0)
    fake = load_labelled(out, 28, 1, "crop")
    assert fake.class_names == real.class_names and len(fake) == 4 * SAMPLES_PER_CLASS
    with torch.no_grad():
        predicted = judge(to_model(fake.images)).argmax(1)
    accuracy = (predicted == fake.labels).float().mean().item()
    per_class = [(predicted[fake.labels == k] == k).float().mean().item() for k in range(4)]
    print(f"generated-class accuracy {accuracy:.3f} (chance 0.25), per class {per_class}")
    assert accuracy > 0.8, per_class
    assert min(per_class) > 0.5, per_class
