"""Tests for recipes: bundled files, --set overrides and one-line error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml

from synthgen.errors import SynthgenError
from synthgen.recipe import (
    BUNDLED_RECIPES,
    ConditioningConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    Recipe,
    TrainConfig,
    apply_override,
    bundled_recipes,
    describe_keys,
    load_recipe,
    recipe_to_yaml,
    validate,
)
from synthgen.models.registry import get_backbone, known_backbones
from synthgen.train import METHODS
from synthgen.train.loop import LOOP_KEYS
from tests.cli import synthgen

REPO = Path(__file__).resolve().parents[1]
SYNTHGEN = Path(sys.executable).with_name("synthgen")
BUNDLED = bundled_recipes()


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def recipe_error(path: Path, overrides: list[str] = ()) -> str:
    with pytest.raises(SynthgenError) as info:
        load_recipe(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message, f"error is not one line: {message!r}"
    assert str(path) in message, f"error does not name the file: {message!r}"
    return message


# --- bundled recipes ---------------------------------------------------------------


def test_the_bundled_recipes_are_there():
    names = {p.stem for p in BUNDLED}
    assert {"acgan", "cgan-projection", "dcgan-wgan-gp", "demo", "small-data"} <= names
    assert bundled_recipes() == BUNDLED


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_recipe_loads_and_validates(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name == path.stem
    assert recipe.description.strip(), "bundled recipes need a description for `synthgen recipes`"
    assert recipe.train.batch_size % recipe.model.pack == 0
    # Every key the file sets survives into the recipe (nothing silently dropped).
    raw = yaml.safe_load(path.read_text())
    dumped = recipe.model_dump()
    for section, value in raw.items():
        if isinstance(value, dict):
            for key, given in value.items():
                assert dumped[section][key] == given, f"{path.name}: {section}.{key}"
        else:
            assert dumped[section] == value
    # The dumped YAML is itself a valid recipe with the same content.
    assert Recipe.model_validate(yaml.safe_load(recipe_to_yaml(recipe))) == recipe


def test_a_bundled_recipe_is_found_by_name():
    by_name = load_recipe("acgan")
    by_path = load_recipe(BUNDLED_RECIPES / "acgan.yaml")
    assert by_name == by_path
    assert by_name.conditioning.type == "acgan"
    assert by_name.loss.type == "ns"


def test_the_wgan_gp_recipe_keeps_its_critic_unnormalised():
    recipe = load_recipe("dcgan-wgan-gp")
    assert recipe.loss.type == "wgan-gp"
    assert recipe.model.d_norm == "none"
    assert recipe.loss.gp_weight == 10


def test_an_empty_file_is_the_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, ""))
    assert recipe == Recipe()
    assert recipe.data.image_size == "auto"
    assert recipe.data.channels == "auto"


# --- the key reference -------------------------------------------------------------


def test_every_key_has_a_description():
    rows = describe_keys()
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys))
    for key, _, description in rows:
        assert description.strip(), f"{key} has no description"
    for expected in ("name", "seed", "data.root", "data.image_size", "model.pack", "loss.type", "train.steps", "train.diffaugment"):
        assert expected in keys


def test_describe_keys_reports_the_defaults():
    defaults = {key: default for key, default, _ in describe_keys()}
    recipe = Recipe()
    assert defaults["train.steps"] == recipe.train.steps
    assert defaults["data.resize"] == "crop"
    assert defaults["train.diffaugment"] == []
    assert defaults["name"] == "run"


# --- --set overrides ---------------------------------------------------------------


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = write(tmp_path, "name: base\ntrain:\n  steps: 100\n")
    recipe = load_recipe(path, ["train.steps=7", "data.root=/x", "train.diffaugment=[color]"])
    assert recipe.train.steps == 7
    assert isinstance(recipe.train.steps, int)
    assert recipe.data.root == "/x"
    assert recipe.train.diffaugment == ["color"]
    assert recipe.name == "base"


def test_apply_override_creates_sections_and_parses_types():
    raw: dict = {"train": {"steps": 1}}
    apply_override(raw, "train.lr_g=0.001")
    apply_override(raw, "train.ema=false")
    apply_override(raw, "model.pack=4")
    apply_override(raw, "data.root=")
    apply_override(raw, "name = spaced")
    assert raw["train"] == {"steps": 1, "lr_g": 0.001, "ema": False}
    assert raw["model"] == {"pack": 4}
    assert raw["data"] == {"root": ""}
    assert raw["name"] == "spaced"


def test_exponent_floats_reach_the_recipe_as_floats():
    # YAML 1.1 reads 1e-3 as a string; validation must still turn it into a number.
    recipe = load_recipe("acgan", ["train.lr_g=1e-3"])
    assert recipe.train.lr_g == pytest.approx(0.001)


def test_an_override_can_put_a_bundled_recipe_to_work():
    recipe = load_recipe("acgan", ["data.root=some/folder", "train.steps=10", "data.image_size=32"])
    assert recipe.data.root == "some/folder"
    assert recipe.train.steps == 10
    assert recipe.data.image_size == 32


@pytest.mark.parametrize("item", ["train.steps", "", "=5"])
def test_an_override_without_key_and_value_is_an_error(item):
    with pytest.raises(SynthgenError, match="expected key=value"):
        apply_override({}, item)


def test_an_override_below_a_value_is_an_error():
    with pytest.raises(SynthgenError, match="'name' is not a section"):
        apply_override({"name": "x"}, "name.sub=1")


def test_an_override_with_broken_yaml_is_one_line():
    with pytest.raises(SynthgenError) as info:
        load_recipe("acgan", ["train.diffaugment=[color"])
    assert "--set train.diffaugment=[color" in str(info.value)
    assert "\n" not in str(info.value)


def test_an_override_is_validated_like_the_file():
    with pytest.raises(SynthgenError, match=r"train\.steps"):
        load_recipe("acgan", ["train.steps=abc"])
    with pytest.raises(SynthgenError, match=r"train\.stepz.*train\.steps"):
        load_recipe("acgan", ["train.stepz=5"])


# --- errors: one line naming the file and the key ----------------------------------


def test_an_unknown_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "train:\n  step: 100\n")
    message = recipe_error(path)
    assert "unknown key 'train.step'" in message
    assert "did you mean 'train.steps'?" in message


def test_an_unknown_top_level_key(tmp_path):
    message = recipe_error(write(tmp_path, "trainig:\n  steps: 3\n"))
    assert "unknown key 'trainig'" in message
    assert "'train'" in message


def test_an_unknown_key_far_from_any_lists_the_valid_ones(tmp_path):
    message = recipe_error(write(tmp_path, "model:\n  zzzzzzzz: 1\n"))
    assert "unknown key 'model.zzzzzzzz'" in message
    assert "valid keys:" in message and "z_dim" in message and "pack" in message


def test_a_wrong_type(tmp_path):
    message = recipe_error(write(tmp_path, "train:\n  steps: abc\n"))
    assert "train.steps:" in message
    assert "integer" in message
    assert "'abc'" in message


def test_a_bad_choice(tmp_path):
    message = recipe_error(write(tmp_path, "data:\n  resize: zoom\n"))
    assert "data.resize:" in message
    assert "zoom" in message
    assert "crop" in message and "pad" in message and "stretch" in message


def test_an_image_size_without_a_base_states_the_rule(tmp_path):
    message = recipe_error(write(tmp_path, "data:\n  image_size: 30\n"))
    assert "data.image_size:" in message
    assert "30" in message
    assert "base*2^k" in message and "base 4..8" in message and "k >= 2" in message


@pytest.mark.parametrize("size", [28, 32, 48, 64, 96, 128, "auto"])
def test_image_sizes_with_a_base_are_accepted(tmp_path, size):
    assert load_recipe(write(tmp_path, f"data:\n  image_size: {size}\n")).data.image_size == size


def test_a_non_number_image_size_names_the_key_without_pydantic_tags(tmp_path):
    message = recipe_error(write(tmp_path, "data:\n  image_size: big\n"))
    assert "data.image_size:" in message
    assert "data.image_size." not in message  # no union member tag such as .int


def test_a_bad_list_item_names_its_key(tmp_path):
    message = recipe_error(write(tmp_path, "train:\n  diffaugment: [colour]\n"))
    assert "train.diffaugment" in message
    assert "colour" in message


def test_a_batch_size_that_is_not_a_multiple_of_pack(tmp_path):
    message = recipe_error(write(tmp_path, "model:\n  pack: 2\ntrain:\n  batch_size: 63\n"))
    assert "train.batch_size" in message and "model.pack" in message
    assert "63" in message
    assert "{" not in message, f"the whole recipe should not be dumped into the error: {message!r}"
    assert ": :" not in message, f"an empty key: {message!r}"


def test_wgan_gp_with_batch_norm_in_d(tmp_path):
    message = recipe_error(write(tmp_path, "loss:\n  type: wgan-gp\nmodel:\n  d_norm: batch\n"))
    assert "model.d_norm" in message
    assert "wgan-gp" in message
    assert "{" not in message and ": :" not in message, message


def test_batch_norm_in_d_is_fine_without_wgan_gp(tmp_path):
    recipe = load_recipe(write(tmp_path, "loss:\n  type: hinge\nmodel:\n  d_norm: batch\n"))
    assert recipe.model.d_norm == "batch"


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ntrain:\n  steps: 5\n   batch_size: 3\n")
    message = recipe_error(path)
    assert "not valid YAML" in message
    assert "line 4" in message


def test_a_recipe_that_is_not_a_mapping(tmp_path):
    message = recipe_error(write(tmp_path, "- a\n- b\n"))
    assert "mapping" in message
    assert "list" in message


def test_a_missing_recipe_file_lists_the_bundled_ones(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SynthgenError) as info:
        load_recipe(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "no such recipe" in message
    for path in BUNDLED:
        assert path.stem in message


def test_an_unknown_recipe_name_lists_the_bundled_ones():
    with pytest.raises(SynthgenError, match="acgan.*demo"):
        load_recipe("no-such-recipe")


def test_a_bad_run_name(tmp_path):
    message = recipe_error(write(tmp_path, "name: ../escape\n"))
    assert "name:" in message and "folder name" in message


# --- the command line --------------------------------------------------------------


def test_train_with_a_bad_recipe_is_one_error_line(tmp_path):
    """Through the installed `synthgen` script in a process of its own, as a user runs it."""
    bad = write(tmp_path, "train:\n  step: 100\n", name="bad.yaml")
    result = subprocess.run([str(SYNTHGEN), "train", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "train.step" in lines[0] and "train.steps" in lines[0]
    assert "bad.yaml" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_train_with_a_broken_set_is_one_error_line():
    result = synthgen("train", "acgan", "--set", "train.diffaugment=[color")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr


# --- a method's own keys (options.*) ----------------------------------------------


def test_an_unknown_method_lists_the_known_ones(tmp_path):
    message = recipe_error(write(tmp_path, "method: stylegan9\n"))
    assert "method: unknown method" in message and "cgan" in message and "cyclegan" in message


def test_options_are_validated_by_the_methods_own_schema(tmp_path, monkeypatch):
    from pydantic import Field

    from synthgen.recipe import Section
    from synthgen.train import METHODS, ConditionalGAN

    class Options(Section):
        info_weight: float = Field(1.0, ge=0, description="How much the test method's extra term weighs.")

    monkeypatch.setitem(METHODS, "withkeys", type("WithKeys", (ConditionalGAN,), {"Options": Options}))
    path = write(tmp_path, "method: withkeys\noptions:\n  info_weight: 2\n")
    assert load_recipe(path).options == {"info_weight": 2.0}
    assert load_recipe(write(tmp_path, "method: withkeys\n", "d.yaml")).options == {"info_weight": 1.0}, "defaults filled in"
    assert "options.info_weight: " in recipe_error(path, ["options.info_weight=-1"])
    message = recipe_error(path, ["options.info_wieght=1"])
    assert "options.info_wieght: not an option of method withkeys (its options: info_weight)" in message
    assert "not an option of method cgan (its options: none)" in recipe_error(path, ["method=cgan"])
    assert ("options.info_weight", 1.0, "How much the test method's extra term weighs. (method withkeys)") in describe_keys()


@pytest.mark.parametrize("key, value, backbone, readers", [
    ("g_upsample", "resize", "r3", "dcgan backbone"),
    ("group_width", 8, "dcgan", "r3 backbone"),
    ("g_cond_bn", True, "stylegan", "dcgan and resnet backbones"),
    ("mapping_layers", 8, "resnet", "stylegan and stylegan-growing backbones"),
])
def test_a_model_key_the_backbone_would_ignore_is_an_error(tmp_path, key, value, backbone, readers):
    message = recipe_error(write(tmp_path, f"model:\n  backbone: {backbone}\n  {key}: {value}\n"))
    assert f"model.{key}" in message and readers in message and f"model.backbone is {backbone}" in message, message
    assert "{" not in message, message


@pytest.mark.parametrize("method, model, key", [
    ("stargan", "translator: resnet\n  norm: batch\n  z_dim: 64", "z_dim"),
    ("cyclegan", "translator: resnet\n  backbone: r3", "backbone"),
    ("pix2pix", "translator: unet\n  n_blocks: 6", "n_blocks"),  # a resnet translator's key on a unet one
    ("pix2pix", "minibatch_discrimination: {kernels: 100}", "minibatch_discrimination"),
])
def test_a_model_key_a_translation_method_would_ignore_is_an_error(tmp_path, method, model, key):
    message = recipe_error(write(tmp_path, f"method: {method}\nloss:\n  type: {'wgan-gp' if method == 'stargan' else 'lsgan'}\nmodel:\n  {model}\n"))
    assert f"model.{key}: not read by {method}'s networks" in message, message


@pytest.mark.parametrize("key, value", [("n_blocks", 6), ("translator", "resnet"), ("norm", "batch"), ("d_layers", 4), ("dropout", 0.2)])
def test_a_translation_only_key_on_a_generating_method_is_an_error(tmp_path, key, value):
    message = recipe_error(write(tmp_path, f"model:\n  {key}: {value}\n"))
    assert f"model.{key}: read only by the translation methods" in message and "method is cgan" in message, message


@pytest.mark.parametrize("method, setting, key", [
    ("cgan", "loss:\n  l1_weight: 50", "loss.l1_weight"),  # pix2pix's
    ("cgan", "train:\n  pool_size: 0", "train.pool_size"),  # cyclegan's
    ("pix2pix", "train:\n  diffaugment: [translation]", "train.diffaugment"),
    ("pix2pix", "train:\n  n_dis: 2", "train.n_dis"),
    ("cyclegan", "train:\n  ema: false", "train.ema"),  # the translators keep no EMA copy
    ("cyclegan", "conditioning:\n  type: acgan", "conditioning.type"),
    ("stargan", "loss:\n  type: wgan-gp\n  cycle_weight: 5", "loss.cycle_weight"),  # stargan's is options.lambda_rec
    ("stargan", "loss:\n  type: wgan-gp\n  r1_gamma: 1", "loss.r1_gamma"),
    ("stargan", "loss:\n  type: wgan-gp\ntrain:\n  patience: 3", "train.patience"),  # no evaluation at checkpoints
    ("cgan", "data:\n  jitter: 1.2", "data.jitter"),  # the translators' random crop
    ("cgan", "data:\n  dir_a: edges", "data.dir_a"),  # pix2pix's folders
    ("cyclegan", "data:\n  direction: BtoA", "data.direction"),  # CycleGAN trains both ways
    ("pix2pix", "data:\n  sampling: natural", "data.sampling"),  # pairs have no classes
    ("text2image", "data:\n  sampling: natural", "data.sampling"),  # captions are drawn uniformly
    ("lapgan", "loss:\n  r1_gamma: 1", "loss.r1_gamma"),  # a family that narrows ConditionalGAN's keys
    ("stackgan", "train:\n  diffaugment: [cutout]", "train.diffaugment"),
    ("sgan", "loss:\n  lecam_weight: 0.1", "loss.lecam_weight"),
    ("text2image", "loss:\n  r1_gamma: 1", "loss.r1_gamma"),
])
def test_a_train_or_loss_key_the_method_would_ignore_is_an_error(tmp_path, method, setting, key):
    model = "model:\n  translator: resnet\n  norm: batch\n" if method == "stargan" else ""
    message = recipe_error(write(tmp_path, f"method: {method}\n{model}{setting}\n"))
    assert f"{key}: not read by method {method}; remove the key" in message, message


@pytest.mark.parametrize("method, setting, expected", [
    ("cgan", "gate:\n  eval_during_training: false", "which gate.eval_during_training: false turns off"),
    ("sgan", "options:\n  unlabelled: elsewhere", "which sgan's unconditional G does not have"),
])
def test_patience_without_an_evaluation_to_stop_on_is_an_error(tmp_path, method, setting, expected):
    message = recipe_error(write(tmp_path, f"method: {method}\n{setting}\ntrain:\n  patience: 3\n"))
    assert "train.patience: 3 stops on the" in message and expected in message, message


def test_every_data_train_loss_and_conditioning_key_is_read_by_the_loop_or_a_method():
    """A new key that nothing declares would be refused everywhere: declare it in loop.LOOP_KEYS or a method's `reads`."""
    declared = LOOP_KEYS.union(*(method.reads for method in METHODS.values()))
    sections = {"data": DataConfig, "conditioning": ConditioningConfig, "loss": LossConfig, "train": TrainConfig}
    every = {f"{name}.{key}" for name, config in sections.items() for key in config.model_fields}
    assert every - declared == set() and declared - every == set()


def test_a_methods_own_train_and_loss_keys_are_accepted(tmp_path):
    star = load_recipe(write(tmp_path, "method: stargan\nmodel:\n  translator: resnet\n  norm: batch\nloss:\n  type: wgan-gp\n  gp_weight: 5\n"
                                       "train:\n  n_dis: 3\n  diffaugment: [translation, cutout]\n  ada_target: 0.6\n  lr_decay: linear\n"))
    assert (star.train.n_dis, star.train.ada_target, star.loss.gp_weight) == (3, 0.6, 5)
    cycle = load_recipe(write(tmp_path, "method: cyclegan\nloss:\n  type: lsgan\n  cycle_weight: 5\ntrain:\n  pool_size: 0\n  budget: 10m\n"))
    assert (cycle.loss.cycle_weight, cycle.train.pool_size) == (5, 0)
    assert load_recipe(write(tmp_path, "loss:\n  r1_gamma: 1\ntrain:\n  ema: false\n  patience: 2\n")).train.patience == 2


def test_a_translators_own_keys_and_the_widths_are_accepted(tmp_path):
    star = load_recipe(write(tmp_path, "method: stargan\nloss:\n  type: wgan-gp\nmodel:\n  translator: resnet\n  norm: batch\n  n_blocks: 2\n  g_upsample: resize\n  g_channels: 16\n"))
    assert (star.model.n_blocks, star.model.g_upsample, star.model.g_channels) == (2, "resize", 16)
    assert load_recipe(write(tmp_path, "method: pix2pix\nloss:\n  type: lsgan\nmodel:\n  dropout: 0.2\n  d_layers: 2\n")).model.dropout == 0.2


def test_a_backbone_key_at_its_default_or_on_its_own_backbone_is_accepted(tmp_path):
    assert load_recipe(write(tmp_path, "model:\n  backbone: r3\n  g_upsample: transposed\n")).model.backbone == "r3"
    assert load_recipe(write(tmp_path, "model:\n  backbone: r3\n  group_width: 8\n")).model.group_width == 8
    for backbone in known_backbones():  # every backbone's own keys, all set away from their defaults, pass its check
        reads = get_backbone(backbone).reads
        assert reads, f"{backbone} declares none of the keys only some backbones read"
        own = "".join(f"  {key}: {yaml.safe_dump(_not_default(key)).splitlines()[0]}\n" for key in sorted(reads))
        model = load_recipe(write(tmp_path, f"model:\n  backbone: {backbone}\n{own}")).model
        assert all(getattr(model, key) == _not_default(key) for key in reads), (backbone, own)


def _not_default(key: str):
    """A valid value of model.<key> other than its default."""
    field = ModelConfig.model_fields[key]
    default = field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return next(choice for choice in get_args(field.annotation) if choice != default)
    return default / 2 if isinstance(default, float) else default + 1


def test_a_trained_runs_recipe_with_an_ignored_key_still_loads():
    """Runs saved before the check keep working: only a recipe about to be trained is refused."""
    recipe = validate({"model": {"backbone": "r3", "g_upsample": "resize"}}, source="state.json")
    assert recipe.model.g_upsample == "resize"
