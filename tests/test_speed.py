"""Measured speed choices (speed.py): the precision probe, its cache, torch.compile, and training unchanged by them."""

from __future__ import annotations

import json

import pytest
import torch

from synthgen import speed
from synthgen.data.loading import cache_dir
from synthgen.errors import SynthgenError
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.loop import train
from tests.conftest import tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_clock(monkeypatch):
    """step_rate returns made-up img/s per precision and counts its calls; no step is trained."""
    clock = {"rates": {}, "calls": 0, "cpu_share": None}

    def fake_rate(method, steps, cpu=None):
        clock["calls"] += 1
        if cpu is not None and clock["cpu_share"] is not None:  # what a timed second on the CPU would have got of the threads' CPU time
            cpu.add(1.0, clock["cpu_share"] * torch.get_num_threads())
        return clock["rates"][method.precision.name]

    monkeypatch.setattr(speed, "step_rate", fake_rate)
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(speed, "machine_load", lambda: 0.0)  # a quiet machine, whatever else runs beside the tests
    return clock


def _choose(recipe, data):
    build = lambda name: ConditionalGAN(recipe, data, speed.resolve_precision(name, torch.device("cpu")))  # noqa: E731
    return speed.choose_precision(recipe, torch.device("cpu"), build, remaining=recipe.train.steps, resumed=None)


def _recipe_and_data(root, tmp_path, **train):
    recipe = tiny_recipe(root, tmp_path, train={"steps": 1000, **train})
    data, recipe = ConditionalGAN.load_data(recipe)
    return recipe, data


def test_probe_picks_the_faster_and_caches_it(four_classes, tmp_path, fresh_cache, fake_clock):
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    fake_clock["rates"] = {"fp32": 100.0, "bf16": 250.0}
    choice = _choose(recipe, data)
    assert (choice.precision, choice.how) == ("bf16", "measured")
    assert choice.rates == {"fp32": 100.0, "bf16": 250.0} and fake_clock["calls"] > 0
    assert "bf16" in choice.line() and "250 img/s" in choice.line()
    entries = json.loads((cache_dir() / speed.CACHE_FILE).read_text())["entries"]
    assert [entry["choice"] for entry in entries.values()] == ["bf16"]

    fake_clock["rates"], fake_clock["calls"] = {"fp32": 300.0, "bf16": 100.0}, 0  # the clock changed its mind...
    again = _choose(recipe, data)
    assert (again.precision, again.how, fake_clock["calls"]) == ("bf16", "cached", 0)  # ... but the cached choice is reused, unmeasured

    other, _ = _recipe_and_data(four_classes, tmp_path, batch_size=8)  # another shape is measured on its own
    assert (_choose(other, data).precision, fake_clock["calls"] > 0) == ("fp32", True)


EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
EPYC_BF16 = EPYC_AVX2.replace("model\t\t: 1\n", "model\t\t: 17\n").replace("avx2 fma", "avx2 fma avx512f avx512_bf16")


def test_cpus_sold_under_one_name_are_told_apart():
    assert speed.describe_cpu(EPYC_AVX2) == "AMD EPYC, family 25 model 1, avx2"
    assert speed.describe_cpu(EPYC_BF16) == "AMD EPYC, family 25 model 17, avx512_bf16"
    assert speed.describe_cpu("model name\t: Old\nflags\t: fpu sse2\n").endswith("Old, no avx2")


def test_a_cached_choice_is_not_reused_on_another_cpu_of_the_same_name(four_classes, tmp_path, fresh_cache, fake_clock, monkeypatch):
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    monkeypatch.setattr(speed, "read_cpuinfo", lambda: EPYC_BF16)
    fake_clock["rates"] = {"fp32": 100.0, "bf16": 250.0}
    assert (_choose(recipe, data).precision, _choose(recipe, data).how) == ("bf16", "cached")
    monkeypatch.setattr(speed, "read_cpuinfo", lambda: EPYC_BF16.replace("model\t\t: 17", "model\t\t: 2"))
    fake_clock["rates"], fake_clock["calls"] = {"fp32": 300.0, "bf16": 100.0}, 0
    other = _choose(recipe, data)  # the same name and flags, another generation: measured, not taken from the cache
    assert (other.precision, other.how, fake_clock["calls"] > 0) == ("fp32", "measured", True)


def test_a_cached_choice_is_not_reused_by_other_synthgen_code(four_classes, tmp_path, fresh_cache, fake_clock, monkeypatch):
    """A faster layer can change which precision wins: timings taken with other code are measured again."""
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    fake_clock["rates"] = {"fp32": 100.0, "bf16": 250.0}
    assert (_choose(recipe, data).precision, _choose(recipe, data).how) == ("bf16", "cached")
    monkeypatch.setattr(speed, "code_digest", lambda: "other code")
    fake_clock["rates"], fake_clock["calls"] = {"fp32": 300.0, "bf16": 100.0}, 0
    other = _choose(recipe, data)
    assert (other.precision, other.how, fake_clock["calls"] > 0) == ("fp32", "measured", True)


def test_the_code_digest_follows_the_source(tmp_path, monkeypatch):
    assert speed.code_digest() == speed.code_digest.__wrapped__()  # the same files, the same digest
    package = tmp_path / "synthgen"
    package.mkdir()
    (package / "speed.py").write_text("x = 1\n")
    monkeypatch.setattr(speed, "__file__", str(package / "speed.py"))
    first = speed.code_digest.__wrapped__()
    (package / "layers.py").write_text("y = 2\n")
    assert speed.code_digest.__wrapped__() != first


def test_a_choice_measured_on_a_busy_machine_is_used_but_not_cached(four_classes, tmp_path, fresh_cache, fake_clock, monkeypatch):
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    fake_clock["rates"] = {"fp32": 100.0, "bf16": 250.0}
    monkeypatch.setattr(speed, "machine_load", lambda: 40.0)
    choice = _choose(recipe, data)
    assert (choice.precision, choice.how) == ("bf16", "measured") and "not cached, measured under load 40.0" in choice.line()
    assert not (cache_dir() / speed.CACHE_FILE).exists()
    monkeypatch.setattr(speed, "machine_load", lambda: 0.0)
    fake_clock["calls"] = 0
    assert (_choose(recipe, data).how, fake_clock["calls"] > 0) == ("measured", True)  # measured again, now quietly
    assert (_choose(recipe, data).how) == "cached"


def test_a_probe_that_got_a_fraction_of_the_cores_is_used_but_not_cached(four_classes, tmp_path, fresh_cache, fake_clock):
    """Another job that started just before the probe: the load average does not show it yet, the CPU time does."""
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    fake_clock["rates"], fake_clock["cpu_share"] = {"fp32": 100.0, "bf16": 250.0}, 0.5
    choice = _choose(recipe, data)
    assert (choice.precision, choice.how) == ("bf16", "measured") and "not cached, the probe got 50% of its" in choice.line()
    assert not (cache_dir() / speed.CACHE_FILE).exists()
    fake_clock["cpu_share"] = 0.97  # an idle machine's steps get all but a little of their threads' CPU time
    assert _choose(recipe, data).how == "measured" and _choose(recipe, data).how == "cached"


def test_fp32_without_native_bf16_or_for_a_short_run_unmeasured(four_classes, tmp_path, fresh_cache, fake_clock, monkeypatch):
    recipe, data = _recipe_and_data(four_classes, tmp_path)
    fake_clock["rates"] = {"fp32": 1.0, "bf16": 1000.0}
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    assert (_choose(recipe, data).precision, _choose(recipe, data).how) == ("fp32", "rule")
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    short, _ = _recipe_and_data(four_classes, tmp_path, steps=speed.MIN_STEPS_TO_PROBE - 1)
    assert _choose(short, data).precision == "fp32"
    assert fake_clock["calls"] == 0 and not (fresh_cache / speed.CACHE_FILE).exists()


def test_probe_leaves_training_exact_and_resume_keeps_its_choice(four_classes, tmp_path, fresh_cache, monkeypatch):
    """A real probe (fp32 against bf16, on any CPU) before training: the run equals one with that precision
    pinned, bit for bit, and a run killed half way and resumed with the default settings equals both."""
    monkeypatch.setattr(speed, "MIN_STEPS_TO_PROBE", 0)
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(speed, "machine_load", lambda: 0.0)  # a quiet machine, whatever else runs beside the tests
    probed = train(tiny_recipe(four_classes, tmp_path / "a"))
    run = json.loads((probed.run_dir / "run.json").read_text())
    assert run["speed"]["how"] == "measured" and set(run["speed"]["rates"]) == {"fp32", "bf16"}
    chosen = run["precision"]
    pinned = train(tiny_recipe(four_classes, tmp_path / "b", train={"precision": chosen}))
    assert_same_tensors(final_tensors(probed.run_dir), final_tensors(pinned.run_dir))

    train(tiny_recipe(four_classes, tmp_path / "c", train={"steps": 3}))  # the cached choice
    cache = json.loads((fresh_cache / speed.CACHE_FILE).read_text())
    other = {"fp32": "bf16", "bf16": "fp32"}[chosen]
    cache["entries"] = {key: {**entry, "choice": other} for key, entry in cache["entries"].items()}
    (fresh_cache / speed.CACHE_FILE).write_text(json.dumps(cache))  # --resume keeps the run's own precision, whatever the cache says
    resumed = train(tiny_recipe(four_classes, tmp_path / "c"), resume=True)
    assert json.loads((resumed.run_dir / "run.json").read_text())["precision"] == chosen
    assert_same_tensors(final_tensors(probed.run_dir), final_tensors(resumed.run_dir))


@pytest.mark.slow  # torch.compile warm-up: 3 min on 2 cores shared with other jobs (load ~10); the only test that compiles
def test_compile_on_matches_eager_and_resumes_exactly(four_classes, tmp_path, one_thread):
    small = {"model": {"g_channels": 8, "d_channels": 8, "z_dim": 8, "spectral_norm": False}}
    eager = train(tiny_recipe(four_classes, tmp_path / "eager", train={"precision": "fp32", "compile": "off"}, **small))
    on = {"precision": "fp32", "compile": "on"}
    compiled = train(tiny_recipe(four_classes, tmp_path / "on", train=on, **small))
    assert json.loads((compiled.run_dir / "run.json").read_text())["speed"]["compiled"] is True
    for name, tensor in final_tensors(eager.run_dir).items():
        assert torch.allclose(tensor.float(), final_tensors(compiled.run_dir)[name].float(), atol=1e-4, rtol=1e-3), name
    train(tiny_recipe(four_classes, tmp_path / "half", train={**on, "steps": 3}, **small))
    resumed = train(tiny_recipe(four_classes, tmp_path / "half", train=on, **small), resume=True)
    assert_same_tensors(final_tensors(compiled.run_dir), final_tensors(resumed.run_dir))


def test_compile_reads_yaml_on_and_off():
    from synthgen.recipe import load_recipe

    assert [load_recipe("recipes/acgan.yaml", [f"train.compile={v}"]).train.compile for v in ("on", "off", "auto")] == ["on", "off", "auto"]


@pytest.mark.parametrize(
    ("loss", "penalised"),
    [({"type": "hinge"}, False), ({"type": "wgan-gp"}, True), ({"type": "wgan-gp", "gp_weight": 0}, False), ({"type": "rpgan", "r1_gamma": 0.05}, True), ({"type": "hinge", "r2_gamma": 1}, True)],
)
def test_a_gradient_penalty_trains_eager_under_auto_and_refuses_compile_on(four_classes, tmp_path, fresh_cache, monkeypatch, loss, penalised):
    """torch.compile's graphs cannot be differentiated twice, and every penalty differentiates D's gradient:
    auto trains eager without trying (the trial cost seconds and printed a failure), `on` is refused in one line."""
    from synthgen.recipe import load_recipe

    trials = []
    monkeypatch.setattr(speed, "trial_compile", lambda *args, **kwargs: trials.append(1) or (None, None))
    recipe = tiny_recipe(four_classes, tmp_path, train={"steps": 10 * speed.MIN_STEPS_TO_COMPILE, "compile": "auto"}, loss=loss)
    choice = speed.SpeedChoice("fp32", how="rule", reason="test")
    speed.choose_compile(recipe, torch.device("cpu"), build=None, remaining=recipe.train.steps, choice=choice, resumed=None)
    assert choice.compiled is False and bool(trials) is not penalised
    assert ("gradient penalty" in choice.reason) is penalised
    sets = ["train.compile=on", f"loss.type={loss['type']}"] + [f"loss.{key}={value}" for key, value in loss.items() if key != "type"]
    if penalised:
        with pytest.raises(SynthgenError, match="train.compile: on does not combine with a gradient penalty"):
            load_recipe("recipes/acgan.yaml", sets)
    else:
        assert load_recipe("recipes/acgan.yaml", sets).train.compile == "on"


@pytest.mark.parametrize("method", ["pix2pix", "cyclegan"])
def test_translation_methods_are_probed_too(edge_pairs, tmp_path, fresh_cache, fake_clock, method):
    """The same probe chooses pix2pix's and CycleGAN's precision (a faked clock: only the wiring is tested here)."""
    from synthgen.train import METHODS
    from tests.translate_helpers import tiny_translation_recipe

    recipe = tiny_translation_recipe(method, edge_pairs / "train", tmp_path, train={"steps": 1000, "batch_size": 1})
    data, recipe = METHODS[method].load_data(recipe)
    fake_clock["rates"] = {"fp32": 10.0, "bf16": 30.0}
    built, choice = speed.build_fast(METHODS[method], recipe, data, torch.device("cpu"), remaining=1000)
    assert (choice.precision, choice.how, built.precision.name, choice.compiled) == ("bf16", "measured", "bf16", False)
