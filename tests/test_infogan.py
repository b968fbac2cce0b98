"""InfoGAN: the codes and the mutual-information bound against their definitions, a categorical code
recoverable from G's images far above chance, exact resume with class conditioning, `traverse`,
`sample --code`, and the one-line errors for runs without codes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from synthgen.checkpoint import latest_checkpoint
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model
from synthgen.models.infogan import LatentCodes
from synthgen.recipe import validate
from synthgen.sample import TrainedGenerator
from synthgen.train.infogan import InfoGAN
from synthgen.train.loop import train
from tests.cli import synthgen
from tests.conftest import tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

SYNTHGEN = str(Path(sys.executable).with_name("synthgen"))


# --- definitions on hand-made inputs ---------------------------------------------------------


def test_codes_round_trip_and_are_drawn_from_their_priors():
    codes = LatentCodes(("c0", "c1"), (3, 0))
    assert (codes.input_dim, codes.q_dim) == (4, 5)
    values = codes.draw(2000, torch.Generator().manual_seed(0))
    assert set(values[:, 0].tolist()) == {0.0, 1.0, 2.0}
    assert -1 <= values[:, 1].min() < -0.99 and 0.99 < values[:, 1].max() <= 1
    encoded = codes.encode(values)
    assert torch.equal(encoded[:, :3].sum(dim=1), torch.ones(2000))  # one-hot
    assert torch.equal(codes.decode(encoded), values)


def test_mi_bound_terms_match_their_definitions():
    """log Q: log-softmax at the given value (categorical), the Gaussian log density (continuous); loss -sum lambda E log Q."""
    codes = LatentCodes(("c0", "c1"), (3, 0))
    q = torch.tensor([[2.0, 0.0, -1.0, 0.5, math.log(0.5)], [0.0, 1.0, 0.0, -0.2, 0.0]])
    values = torch.tensor([[0.0, 0.3], [2.0, -0.9]])
    categorical, continuous = codes.log_likelihoods(q, values)
    by_hand = [2 - math.log(math.e**2 + 1 + math.e**-1), 0 - math.log(1 + math.e + 1)]
    assert categorical.tolist() == pytest.approx(by_hand)
    gauss = lambda c, mu, sigma: -((c - mu) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)  # noqa: E731
    assert continuous.tolist() == pytest.approx([gauss(0.3, 0.5, 0.5), gauss(-0.9, -0.2, 1.0)])
    assert (codes.entropy(0), codes.entropy(1)) == pytest.approx((math.log(3), math.log(2)))
    # The method's terms: z (2 numbers) then the codes, as G is fed.
    method = SimpleNamespace(codes=codes, weights=[1.0, 0.1], recipe=SimpleNamespace(model=SimpleNamespace(z_dim=2)))
    latent = torch.cat([torch.randn(2, 2), codes.encode(values)], dim=1)
    loss, logged = InfoGAN._code_terms(method, latent, [q])
    assert float(loss) == pytest.approx(-(sum(by_hand) / 2 + 0.1 * continuous.mean().item()))
    assert float(logged["mi_c0"]) == pytest.approx(math.log(3) + sum(by_hand) / 2)


# --- trained tiny models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def unconditional_run(four_classes, tmp_path_factory) -> Path:
    """Unconditional InfoGAN (one folder of the four classes' images) with one 4-way categorical code."""
    flat = tmp_path_factory.mktemp("flat")
    for folder in sorted(four_classes.iterdir()):
        for image in sorted(folder.iterdir())[:400]:
            (flat / f"{folder.name}-{image.name}").symlink_to(image.resolve())
    recipe = tiny_recipe(
        flat, tmp_path_factory.mktemp("info"), name="info", method="infogan",
        train={"steps": 100, "batch_size": 32, "log_every": 10, "sample_every": 100, "checkpoint_every": 100},
        options={"codes": [{"kind": "categorical", "size": 4}]},
    )
    return train(recipe).run_dir


def test_categorical_code_is_recoverable_from_generated_images(unconditional_run):
    """Q reads back the code G was given from G's (EMA, sampled) images far above chance (1/4), and the bound rose."""
    generator = TrainedGenerator(unconditional_run, device="cpu")
    checkpoint = latest_checkpoint(unconditional_run)
    _, D = InfoGAN.build_networks(generator.recipe, 1)
    D.load_state_dict(checkpoint.weights("D"))
    D.eval()
    seeds = list(range(64))
    hits = []
    for value in range(4):
        generator.fix_codes([f"c0={value}"])
        images = to_model(generator.generate(0, seeds, truncation=None))
        with torch.no_grad():
            q = D(images, torch.zeros(len(images), dtype=torch.long))[2]
        hits.append((q[:, :4].argmax(dim=1) == value).float().mean().item())
    assert sum(hits) / 4 > 0.75, hits
    log = [json.loads(line) for line in (unconditional_run / "log.jsonl").read_text().splitlines()]
    bounds = [line["mi_c0"] for line in log if "mi_c0" in line]
    assert bounds[-1] > bounds[0] + 0.3 and bounds[-1] > 0.5 * math.log(4), bounds


def test_traverse_grid_sweeps_a_categorical_code(unconditional_run, tmp_path):
    result = synthgen("traverse", "--weights", unconditional_run, "--code", "c0", "--rows", "3", "--out", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "grid.png").size == (4 * 30 + 2, 3 * 30 + 2)  # every value of c0 across, 3 z down (28 px + 2 padding)


def test_conditional_infogan_resumes_bit_exactly_and_fixes_codes(four_classes, tmp_path):
    """Codes on top of class conditioning: resumed = uninterrupted; --code fixes a code; traverse needs --class."""
    options = {"codes": [{"kind": "categorical", "size": 3}, {"kind": "continuous", "name": "width"}]}
    whole = train(tiny_recipe(four_classes, tmp_path / "a", method="infogan", options=options, train={"steps": 8}))
    train(tiny_recipe(four_classes, tmp_path / "b", method="infogan", options=options, train={"steps": 5}))
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", method="infogan", options=options, train={"steps": 8}), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))

    generator = TrainedGenerator(whole.run_dir, device="cpu")
    generator.fix_codes(["c0=1", "width=0.8"])
    fixed = generator.generate(generator.class_index("Bag"), [1, 2], truncation=None)
    assert torch.equal(fixed, generator.generate(generator.class_index("Bag"), [1, 2], truncation=None))
    generator.fix_codes(["c0=2", "width=0.8"])
    assert not torch.equal(fixed, generator.generate(generator.class_index("Bag"), [1, 2], truncation=None))
    with pytest.raises(SynthgenError, match="categorical code with values 0..2"):
        generator.fix_codes(["c0=3"])

    grid = tmp_path / "grid.png"
    assert "choose one of" in synthgen("traverse", "--weights", whole.run_dir, "--code", "width", "--out", grid).stderr
    done = synthgen("traverse", "--weights", whole.run_dir, "--class", "Bag", "--code", "width", "--code", "c0=1", "--steps", "5", "--rows", "2", "--out", grid)
    assert done.returncode == 0, done.stderr
    assert Image.open(grid).size == (5 * 30 + 2, 2 * 30 + 2)
    sampled = synthgen("sample", "--weights", whole.run_dir, "--class", "Bag", "-n", "3", "--code", "c0=2", "--no-gate", "--out", tmp_path / "s")
    assert sampled.returncode == 0, sampled.stderr
    assert len(list((tmp_path / "s" / "Bag").glob("*.png"))) == 3


def test_codes_on_a_run_without_codes_are_one_line_errors(four_classes, tmp_path):
    run = train(tiny_recipe(four_classes, tmp_path, train={"steps": 1})).run_dir  # a plain cgan run
    for args in (["sample", "--class", "Bag", "-n", "1", "--no-gate", "--code", "c0=1", "--out", tmp_path / "s"],
                 ["traverse", "--code", "c0", "--out", tmp_path / "g.png"]):
        result = synthgen(*args, "--weights", run)
        assert result.returncode == 2 and "methods with codes: infogan" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with pytest.raises(SynthgenError, match="options.codes"):
        validate(tiny_recipe(four_classes, tmp_path, method="infogan").model_dump() | {"options": {"codes": []}})
    with pytest.raises(SynthgenError, match="model.pack"):
        tiny_recipe(four_classes, tmp_path, method="infogan", model={"pack": 2})


def test_purity_and_kmeans_follow_their_definitions():
    """purity = (1/N) sum over clusters of their largest class; k-means finds two well-separated blobs."""
    from synthgen.metrics.purity import kmeans_assignments, purity

    clusters, classes = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([1, 1, 2, 0, 0, 0])
    assert purity(clusters, classes) == pytest.approx((2 + 2 + 1) / 6)
    assert purity(torch.zeros(6, dtype=torch.long), classes) == pytest.approx(3 / 6)  # one cluster: the largest class's share
    blobs = torch.cat([torch.randn(20, 2, generator=torch.Generator().manual_seed(0)) + 10, torch.randn(20, 2, generator=torch.Generator().manual_seed(1))])
    assert purity(kmeans_assignments(blobs, 2), torch.tensor([0] * 20 + [1] * 20)) == 1.0
