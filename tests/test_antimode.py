"""Anti-collapse options (issue 15, section 4): minibatch discrimination in D and the unrolled GAN."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.data.loading import load_labelled
from synthgen.errors import SynthgenError
from synthgen.models.conditioning import build_models
from synthgen.models.layers import MinibatchDiscrimination
from synthgen.precision import resolve_precision
from synthgen.recipe import load_recipe
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.loop import train
from synthgen.train.unroll import unrolled_weights
from tests.conftest import tiny_recipe
from tests.test_recipe import recipe_error, write
from tests.test_train import assert_same_tensors, final_tensors

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def four(four_classes):
    """The four demo classes as tensors, loaded once."""
    return load_labelled(four_classes, 28, 1, "crop")


# --- minibatch discrimination ------------------------------------------------------


def paper_features(h: torch.Tensor, weight: torch.Tensor, kernels: int, dims: int) -> torch.Tensor:
    """Salimans et al. 2016, loop by loop: o(x_i)_b = sum_j exp(-||M_i,b - M_j,b||_L1), M_i = f(x_i) T (j = i included)."""
    n = len(h)
    m = (h @ weight.T).view(n, kernels, dims)
    o = torch.zeros(n, kernels)
    for i in range(n):
        for b in range(kernels):
            for j in range(n):
                o[i, b] += torch.exp(-(m[i, b] - m[j, b]).abs().sum())
    return o


def test_minibatch_discrimination_is_the_papers_feature_rescaled():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(10, kernels=3, dims=4, sn=False)
    nn.init.normal_(layer.T.weight, 0.0, 0.3)  # larger than the init, so closeness spans (0, 1)
    h = torch.randn(6, 10)
    out = layer(h)
    o = paper_features(h, layer.T.weight.detach(), 3, 4)
    assert torch.equal(out[:, :10], h)  # f(x_i) is passed on beside the features
    assert 0.05 < o.min() / 6 and o.max() / 6 < 0.95  # a test where closeness is neither all 0 nor all 1
    torch.testing.assert_close(out[:, 10:], (6 - o) / 5, rtol=1e-5, atol=1e-6)  # (n - o) / (n - 1)


def test_minibatch_discrimination_gradients_and_double_backward_match_the_papers_feature():
    """R1/R2 and the unrolled GAN differentiate through D's input gradient: the layer's first and second derivatives are the loop's."""
    torch.manual_seed(1)
    layer = MinibatchDiscrimination(10, kernels=3, dims=4, sn=False)
    nn.init.normal_(layer.T.weight, 0.0, 0.3)
    h, readout = torch.randn(6, 10, requires_grad=True), torch.randn(6, 3)

    def penalty_and_grads(features):
        logits = (features() * readout).sum()
        (input_grad,) = torch.autograd.grad(logits, h, create_graph=True)
        return torch.autograd.grad(input_grad.square().sum(), [h, layer.T.weight])  # what R1's backward computes

    ours = penalty_and_grads(lambda: layer(h)[:, 10:])
    paper = penalty_and_grads(lambda: (6 - paper_features(h, layer.T.weight, 3, 4)) / 5)
    for a, b in zip(ours, paper):
        assert b.abs().max() > 1e-3  # the second derivatives are not all zero, so the comparison means something
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_minibatch_discrimination_features_are_zero_for_identical_samples_and_grow_with_diversity():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(32, kernels=8, dims=4, sn=True).eval()
    centre, spread = torch.randn(1, 32), torch.randn(16, 32)
    with torch.no_grad():
        means = [float(layer(centre + scale * spread)[:, 32:].mean()) for scale in (0.0, 0.01, 0.1, 1.0, 10.0)]
    assert means[0] == 0.0  # identical samples: exactly 0
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] > 0.9  # far apart: toward 1


@pytest.mark.parametrize("backbone", ["dcgan", "resnet", "r3"])
def test_minibatch_discrimination_on_real_images_in_every_backbone_with_pack(four, tmp_path, backbone):
    recipe = tiny_recipe(tmp_path, tmp_path, model={"backbone": backbone, "g_channels": 8, "d_channels": 8, "pack": 2,
                                                     "spectral_norm": backbone != "r3", "minibatch_discrimination": {"kernels": 6, "dims": 3}})
    torch.manual_seed(0)
    _, D = build_models(recipe, 4)
    from synthgen.imaging import to_model

    same = to_model(four.images[:1].repeat(8, 1, 1, 1))
    varied = to_model(four.images[torch.arange(8) * 300])
    y = torch.zeros(8, dtype=torch.long)

    def features(x):
        return D.minibatch(D.trunk_features(x, y))[:, -6:]

    assert features(same).shape == (4, 6)  # one row per pack of two
    assert float(features(same).detach().abs().max()) == 0.0
    assert float(features(varied).detach().min()) > 0.0
    logits, classes = D(varied, y)
    assert logits.shape == (4,) and classes.shape == (4, 2, 4)
    logits.sum().backward()
    assert next(D.minibatch.parameters()).grad.abs().sum() > 0  # T learns


def test_default_recipe_builds_the_same_d_as_before(tmp_path):
    """Off by default: no new tensors in D, so existing checkpoints load unchanged."""
    _, D = build_models(tiny_recipe(tmp_path, tmp_path), 4)
    assert not any("minibatch" in key for key in D.state_dict())


# --- the unrolled GAN -----------------------------------------------------------------


def test_unrolled_adam_steps_equal_torch_adam_steps():
    """The unroll's differentiable Adam against torch.optim.Adam (fused, as D's) on the same losses."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.99), fused=True)
    x = torch.randn(16, 5)
    for _ in range(2):  # Adam state to copy
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    before = copy.deepcopy(net.state_dict())
    weights = unrolled_weights(net, opt, lambda w: torch.func.functional_call(net, w, (x,)).pow(2).mean(), steps=3, backprop=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network itself is untouched
    twin = copy.deepcopy(net)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01, betas=(0.5, 0.99), fused=True)
    twin_opt.load_state_dict(opt.state_dict())
    for _ in range(3):
        twin_opt.zero_grad()
        twin(x).pow(2).mean().backward()
        twin_opt.step()
    for name, p in twin.named_parameters():
        torch.testing.assert_close(weights[name], p.detach(), rtol=1e-5, atol=1e-6)


def test_gradient_flows_through_the_unroll_only_with_backprop():
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    opt.zero_grad()
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    x = torch.randn(8, 4, requires_grad=True)  # plays G's fakes

    def judged_after_unroll(backprop: bool) -> torch.Tensor:
        weights = unrolled_weights(net, opt, lambda w: torch.func.functional_call(net, w, (x,)).pow(2).mean(), 2, backprop)
        return weights["weight"].sum()  # depends on x only through the unrolled updates

    grad, = torch.autograd.grad(judged_after_unroll(True), x)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert torch.autograd.grad(judged_after_unroll(False), x, allow_unused=True) == (None,)  # each step's weights detached


def d_state(method) -> dict[str, torch.Tensor]:
    tensors = {f"D/{k}": v.clone() for k, v in method.D.state_dict().items()}
    for i, state in method.opt_D.state_dict()["state"].items():
        tensors.update({f"opt_D/{i}/{k}": torch.as_tensor(v).clone() for k, v in state.items()})
    return tensors


@pytest.mark.parametrize("loss", [{"type": "ns"}, {"type": "rpgan", "r1_gamma": 0.1, "r1_every": 1}])
def test_unrolled_step_leaves_d_exactly_as_an_ordinary_step(four, tmp_path, loss):
    """Same seed, one step each: D's weights, spectral-norm vectors, batch-norm statistics and Adam state equal; G differs.

    rpgan: the relativistic G judges against real logits, which the unrolled D gives too.
    """
    precision = resolve_precision("fp32", CPU)
    runs = {}
    for unroll in (0, 3):
        recipe = tiny_recipe(tmp_path, tmp_path, model={"d_norm": "batch", "minibatch_discrimination": {"kernels": 4}}, loss=loss,
                             train={"unroll_steps": unroll, "diffaugment": ["translation"]})
        torch.manual_seed(0)
        method = ConditionalGAN(recipe, four, precision)
        method.train_step(0)
        runs[unroll] = method
    assert_same_tensors(d_state(runs[0]), d_state(runs[3]))
    g0, g3 = runs[0].G.state_dict(), runs[3].G.state_dict()
    assert any(not torch.equal(g0[k], g3[k]) for k in g0 if g0[k].is_floating_point())  # the unroll changed G's update


def test_unrolled_run_with_minibatch_discrimination_resumes_bit_exactly(four_classes, tmp_path):
    common = {"model": {"minibatch_discrimination": {"kernels": 8, "dims": 3}, "pack": 2},
              "train": {"unroll_steps": 2, "precision": "fp32", "checkpoint_every": 2}}
    whole = train(tiny_recipe(four_classes, tmp_path / "a", **{**common, "train": {**common["train"], "steps": 3}}))
    train(tiny_recipe(four_classes, tmp_path / "b", **{**common, "train": {**common["train"], "steps": 2}}))
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", **{**common, "train": {**common["train"], "steps": 3}}), resume=True)
    assert resumed.step == 3
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))


# --- recipe keys ----------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("train:\n  unroll_steps: -1\n", "train.unroll_steps: Input should be greater than or equal to 0 (got -1)"),
    ("method: infogan\ntrain:\n  unroll_steps: 5\n", "train.unroll_steps: only method cgan unrolls D (got method infogan)"),
    ("train:\n  unroll_steps: 5\n  compile: on\n", "train.compile: on does not combine with train.unroll_steps"),
    ("model:\n  minibatch_discrimination:\n    kernels: -3\n", "model.minibatch_discrimination.kernels: Input should be greater than or equal to 0 (got -3)"),
    ("model:\n  minibatch_discrimination:\n    kernal: 50\n", "unknown key 'model.minibatch_discrimination.kernal' (did you mean 'model.minibatch_discrimination.kernels'?)"),
    ("model:\n  minibatch_discrimination: 50\n", "model.minibatch_discrimination"),
    ("method: sgan\nmodel:\n  minibatch_discrimination:\n    kernels: 50\n", "model.minibatch_discrimination: sgan's D is a classifier"),
])
def test_bad_values_are_one_line_errors(tmp_path, text, expected):
    assert expected in recipe_error(write(tmp_path, text))


def test_null_section_is_off_and_keys_are_listed(tmp_path):
    recipe = load_recipe(write(tmp_path, "model:\n  minibatch_discrimination:\n"))
    assert recipe.model.minibatch_discrimination.kernels == 0
    listed = CliRunner().invoke(app, ["recipes", "--keys"]).output
    for key in ("model.minibatch_discrimination.kernels", "model.minibatch_discrimination.dims", "train.unroll_steps", "train.unroll_backprop"):
        assert key in listed


def test_encoder_families_refuse_minibatch_discrimination(four_classes, tmp_path):
    with pytest.raises(SynthgenError, match="model.minibatch_discrimination: method bigan does not combine with it"):
        tiny_recipe(four_classes, tmp_path, method="bigan", model={"minibatch_discrimination": {"kernels": 4}})
