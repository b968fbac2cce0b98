"""Text-to-image (GAN-CLS, GAN-INT, conditioning augmentation): the losses against their definitions, the vocabulary,
the captioned-folder loader's errors, a short real training on Fashion-MNIST captioned with class + bright/dark
(D prefers matched captions; the bright/dark word changes the images' measured intensity), exact resume, and
`synthgen sample --text / --captions` with its manifest and imagefolder metadata."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from synthgen.checkpoint import latest_checkpoint, restore_network
from synthgen.cli import app
from synthgen.data.captions import CaptionedImages, Vocabulary, caption_labelled_folder, load_captioned, read_captions
from synthgen.errors import SynthgenError
from synthgen.models.text_encoder import kl_to_standard_normal
from synthgen.recipe import validate
from synthgen.sample import TrainedGenerator
from synthgen.train.loop import train
from synthgen.train.text2image import CaptionBatches, Text2Image, gan_cls_discriminator_loss
from tests.conftest import read_manifest, tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

SMALL = {"embed_dim": 16, "text_dim": 32, "c_dim": 8, "d_text_dim": 16}


def text_recipe(root: Path, out: Path, name: str = "t2i", steps: int = 6, **train_keys):
    return tiny_recipe(
        root, out, name, method="text2image", conditioning={"type": "projection"}, options=SMALL,
        model={"g_channels": 16, "d_channels": 16, "z_dim": 32},
        train={"steps": steps, "batch_size": 32, "precision": "fp32", **train_keys},
    )


@pytest.fixture(scope="session")
def captioned(four_classes, tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Four Fashion-MNIST classes, 200 images each, captioned 'a bright bag' / 'bag, bright' (or dark, below the class median)."""
    out = tmp_path_factory.mktemp("captioned")
    return out, caption_labelled_folder(four_classes, out, per_class=200)


@pytest.fixture(scope="module")
def text_run(captioned, tmp_path_factory) -> Path:
    root, _ = captioned
    return train(text_recipe(root, tmp_path_factory.mktemp("t2i"), steps=STEPS, lr_g=5e-4, lr_d=5e-4, log_every=50, sample_every=STEPS, checkpoint_every=STEPS)).run_dir


STEPS = 150


# --- definitions ------------------------------------------------------------------------


def test_gan_cls_loss_and_kl_match_their_definitions():
    torch.manual_seed(0)
    right, wrong, fake = torch.randn(3, 16)
    reference = -(torch.log(torch.sigmoid(right)) + 0.5 * torch.log(1 - torch.sigmoid(wrong)) + 0.5 * torch.log(1 - torch.sigmoid(fake))).mean()
    assert torch.allclose(gan_cls_discriminator_loss(right, wrong, fake, 0.5), reference, atol=1e-6)
    as_bce = F.binary_cross_entropy_with_logits(right, torch.ones(16)) + 0.5 * F.binary_cross_entropy_with_logits(torch.cat([wrong, fake]), torch.zeros(32)) * 2
    assert torch.allclose(gan_cls_discriminator_loss(right, wrong, fake), as_bce, atol=1e-6)
    mu, logvar = torch.randn(2, 8, 4)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_to_standard_normal(mu, logvar), expected, atol=1e-6)


def test_vocabulary_round_trip_and_unknown_words():
    vocabulary = Vocabulary.build(["a bright Bag", "bag, dark", "a dark T-shirt"])
    assert vocabulary.tokens[:2] == ("<pad>", "<unk>")
    assert vocabulary.tokens[2:5] == ("a", "bag", "dark")  # by frequency, ties alphabetical
    ids = vocabulary.encode(["A dark bag!", "a purple bag", ""], max_words=4)
    assert vocabulary.decode(ids) == ["a dark bag", "a <unk> bag", "<unk>"]
    assert ids[0, 3] == 0  # padded
    again = Vocabulary.from_json(json.loads(json.dumps(vocabulary.to_json())), "state.json")
    assert again == vocabulary
    with pytest.raises(SynthgenError, match="state.json: vocabulary"):
        Vocabulary.from_json(["bag"], "state.json")


# --- the captioned folder ----------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    for name in ("a.png", "sub/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 200 if name == "a.png" else 20).save(tmp_path / name)
    return tmp_path


def test_several_captions_per_image_from_jsonl_lists_and_csv_rows(tmp_path):
    root = _folder(tmp_path / "j")
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": ["a light square", "light"]}\n\n{"file_name": "sub/b.png", "text": "a dark square"}\n')
    assert read_captions(root) == [("a.png", "a light square"), ("a.png", "light"), ("sub/b.png", "a dark square")]
    data = load_captioned(root, 8, 1, "crop")
    assert isinstance(data, CaptionedImages) and len(data) == 2 and data.caption_image.tolist() == [0, 0, 1]
    root = _folder(tmp_path / "c")
    with open(root / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file_name", "text"], ["sub/b.png", "dark"], ["a.png", "light"], ["sub/b.png", "a dark square"]])
    assert load_captioned(root, 8, 1, "crop").caption_image.tolist() == [1, 0, 1]  # images sorted by file name


@pytest.mark.parametrize("name, content, message", [
    ("metadata.jsonl", '{"file_name": "a.png", "text": "x"}\n{"file_name": "a.png"\n', r"metadata.jsonl line 2: not JSON"),
    ("metadata.jsonl", '{"file_name": "a.png", "caption": "x"}\n', r"metadata.jsonl line 1: expected the columns file_name and text"),
    ("metadata.jsonl", '{"file_name": "gone.png", "text": "x"}\n', r"metadata.jsonl line 1: file_name 'gone.png': no such file"),
    ("metadata.jsonl", '{"file_name": "../a.png", "text": "x"}\n', r"line 1: file_name '../a.png': expected a path relative to"),
    ("metadata.jsonl", '{"file_name": "a.png", "text": "!!"}\n', r"line 1: text '!!': expected a caption with at least one word"),
    ("metadata.csv", "file_name,text\na.png,light\nsub/b.png\n", r"metadata.csv line 3: expected 2 columns \(file_name, text\)"),
    ("metadata.csv", "file_name,text\n", r"metadata.csv: no captions"),
])
def test_bad_metadata_is_a_one_line_error_naming_file_and_row(tmp_path, name, content, message):
    root = _folder(tmp_path)
    (root / name).write_text(content)
    with pytest.raises(SynthgenError, match=message) as error:
        read_captions(root)
    assert "\n" not in str(error.value)


def test_a_folder_without_or_with_two_metadata_files_is_refused(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(SynthgenError, match="no metadata.jsonl or metadata.csv"):
        read_captions(root)
    (root / "metadata.csv").write_text("file_name,text\na.png,x\n")
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n')
    with pytest.raises(SynthgenError, match="both metadata.jsonl and metadata.csv"):
        read_captions(root)


def test_the_caption_helper_says_bright_for_the_brighter_half_of_each_class(captioned):
    root, thresholds = captioned
    data = load_captioned(root, 28, 1, "crop")
    bright = torch.tensor(["bright" in c for c in data.captions])
    means = data.images[data.caption_image].float().mean(dim=(1, 2, 3))
    assert means[bright].mean() > means[~bright].mean() + 10
    assert 0.45 < bright.float().mean() < 0.55 and set(thresholds) == {"Bag", "Sneaker", "T-shirt-top", "Trouser"}


# --- training ------------------------------------------------------------------------------


def _networks(run_dir: Path):
    checkpoint = latest_checkpoint(run_dir)
    recipe = validate(checkpoint.recipe)
    G, D = Text2Image.build_networks(recipe, 1)
    for name, net in (("G", G), ("D", D)):
        restore_network(net, checkpoint.weights(name), checkpoint.path / f"{name}.safetensors")
    return recipe, G.eval(), D.eval(), Text2Image.prompt_vocabulary(checkpoint)


def test_matching_aware_d_scores_matched_pairs_above_mismatched(text_run, captioned):
    recipe, G, D, vocabulary = _networks(text_run)
    data = load_captioned(captioned[0], 28, 1, "crop")
    assert data.vocabulary == vocabulary
    batches = CaptionBatches(data, 256, seed=123, max_words=recipe.options["max_words"])  # a seed training never drew
    real, right, wrong = batches.real(0, 0, "cpu")
    with torch.no_grad():
        matched, mismatched = D(real, G.encoder(right)), D(real, G.encoder(wrong))
    assert (matched > mismatched).float().mean() > 0.75, f"matched above mismatched in {(matched > mismatched).float().mean():.2f} of pairs"


def test_prompts_differing_only_in_bright_or_dark_differ_in_mean_intensity(text_run):
    generator = TrainedGenerator(text_run, device="cpu")
    seeds = list(range(64))
    gaps = {}
    for noun in ("trouser", "sneaker", "bag", "t shirt top"):
        bright = generator.generate_prompt(f"a bright {noun}", seeds, None).float().mean(dim=(1, 2, 3))
        dark = generator.generate_prompt(f"a dark {noun}", seeds, None).float().mean(dim=(1, 2, 3))
        gaps[noun] = float((bright - dark).mean() / (bright - dark).std() * len(seeds) ** 0.5)  # paired t statistic
    assert all(gap > 3 for gap in gaps.values()), gaps


def test_resume_is_bit_exact(captioned, tmp_path):
    """ADA included: p moves (it used to stay at 0, leaving train.diffaugment off, when ada_target was set) and is
    training state, so the resumed run equals the uninterrupted one."""
    root, _ = captioned
    ada = {"diffaugment": ["translation", "cutout"], "ada_target": 0.1, "ada_kimg": 0.05, "ada_interval": 1}
    whole = train(text_recipe(root, tmp_path / "a", steps=6, **ada))
    train(text_recipe(root, tmp_path / "b", steps=3, **ada))
    resumed = train(text_recipe(root, tmp_path / "b", steps=6, **ada), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))
    state = json.loads((latest_checkpoint(whole.run_dir).path / "state.json").read_text())
    assert state["method_state"]["vocabulary"][:2] == ["<pad>", "<unk>"] and state["vocabulary_size"] == len(state["method_state"]["vocabulary"])
    assert 0 < state["method_state"]["augment"]["p"] <= 1
    assert state["method_state"] == latest_checkpoint(resumed.run_dir).state["method_state"]


# --- sample --text / --captions -----------------------------------------------------------


def test_sample_text_and_captions_write_n_per_prompt_with_manifest_and_imagefolder_metadata(text_run, tmp_path):
    from torchvision.datasets import ImageFolder

    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(app, ["sample", "--weights", str(text_run), "--text", "a bright bag", "-n", "5", "--out", str(out)])
    assert done.exit_code == 0, done.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dark sneaker\n\na bright bag\n")
    done = runner.invoke(app, ["sample", "--weights", str(text_run), "--captions", str(prompts), "-n", "7", "--out", str(out)])
    assert done.exit_code == 0, done.output  # continues: a-bright-bag gets 2 more, a-dark-sneaker 7
    rows = read_manifest(out)
    assert sorted((r["class"], r["prompt"]) for r in rows) == [("a-bright-bag", "a bright bag")] * 7 + [("a-dark-sneaker", "a dark sneaker")] * 7
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(m["file_name"] for m in metadata) == sorted(r["file"] for r in rows)
    assert all((out / m["file_name"]).is_file() and m["prompt"] in ("a bright bag", "a dark sneaker") and "seed" in m for m in metadata)
    folder = ImageFolder(out)
    assert folder.classes == ["a-bright-bag", "a-dark-sneaker"] and len(folder) == 14


def test_text_options_on_a_class_run_and_class_options_on_a_text_run_are_one_line_errors(text_run, four_classes, tmp_path):
    runner = CliRunner()
    class_run = train(tiny_recipe(four_classes, tmp_path, train={"steps": 1})).run_dir
    expected = [
        (["--weights", str(class_run), "--text", "a bag"], "--text: ", "not conditioned on text (text methods: text2image)"),
        (["--weights", str(text_run), "--balanced"], "text2image run", "give --text PROMPT or --captions FILE"),
        (["--weights", str(text_run), "--captions", str(tmp_path / "none.txt")], "--captions ", "cannot read"),
    ]
    for options, start, message in expected:
        done = runner.invoke(app, ["sample", *options, "--out", str(tmp_path / "o")])
        error = str(done.exception or done.output)  # the CLI's entry point prints a SynthgenError as one line
        assert done.exit_code != 0 and isinstance(done.exception, SynthgenError), done.output
        assert start in error and message in error and "\n" not in error, error
    assert not (tmp_path / "o").exists()  # refused before anything is written
