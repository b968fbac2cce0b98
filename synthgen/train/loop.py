"""The one training loop: steps, logging, grids, checkpoints, resume and Ctrl-C.

It reads top to bottom: set up, restore, then for each step train, log,
draw a grid, save. What a step does belongs to the method (cgan.py, ...).
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen import checkpoint as ckpt
from synthgen import distributed
from synthgen.data.loading import refuse_unreadable
from synthgen.errors import SynthgenError, TrainingInterrupted
from synthgen.imaging import remove_stale_temporaries, save_grid, to_uint8, write_atomic
from synthgen.precision import resolve_device, resolve_precision
from synthgen.recipe import Recipe, parse_budget, recipe_to_yaml
from synthgen.speed import build_fast
from synthgen.train.schedule import lr_factor
from synthgen.train.warm_start import init_from
from synthgen.train.nonfinite import ROLLBACKS, NonFiniteGuard


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_per_second: float
    checkpoint: Path


def run_dir_of(recipe: Recipe) -> Path:
    return Path(recipe.train.out_dir) / recipe.name


def train(recipe: Recipe, resume: bool = False, progress=None) -> TrainResult:
    """Train `recipe` to `train.steps`; with `resume`, continue from the run's last checkpoint.

    `progress` (optional) receives `start(total, done)` once and `update(step, stats)`
    per log interval: the CLI passes a rich progress bar, tests pass nothing.
    Under torchrun every process runs this; only the main one writes and reports.
    """
    device = distributed.device_for_rank(resolve_device(recipe.train.device))
    with distributed.process_group(device):
        return _train(recipe, device, resume, progress if distributed.is_main() else None)


def refuse_if_one_process(recipe: Recipe, processes: int) -> None:
    """A method whose networks are not under DDP trains in one process: N processes would train N unsynchronised copies."""
    from synthgen.train import METHODS

    if processes > 1 and not METHODS[recipe.method].distributed:
        raise SynthgenError(f"method {recipe.method} trains in one process; run synthgen train without torchrun or --nproc")


def _train(recipe: Recipe, device: torch.device, resume: bool, progress) -> TrainResult:
    from synthgen.train import METHODS

    run_dir = run_dir_of(recipe)
    previous = ckpt.latest_checkpoint(run_dir)
    if previous and not resume:
        raise SynthgenError(f"{run_dir}: a run with this name exists (step {previous.step}); add --resume or --set name=...")
    if resume and previous is None:  # killed before its first checkpoint: a `--resume` loop after preemption just starts
        resume = False
        if progress:
            progress.note(f"{run_dir}: no checkpoint to resume yet; starting from step 0")

    refuse_if_one_process(recipe, distributed.world_size())
    torch.manual_seed(recipe.seed)  # the same weights in every process
    resolve_precision(recipe.train.precision, device)  # a precision this device cannot run is refused before loading data
    if not recipe.data.root.strip():
        raise SynthgenError("data.root: not set; set it in the recipe or with --set data.root=DIR")
    # The method knows its data layout; `auto` data keys come back as what was chosen,
    # so the run and its checkpoints are self-describing.
    data, recipe = METHODS[recipe.method].load_data(recipe)
    refuse_unreadable(recipe.data.root, data.describe()["unreadable"], recipe.data.strict)
    # train.precision auto / train.compile: measured on copies of the method, in a forked RNG (speed.py).
    earlier = (previous.state.get("speed") or {"precision": previous.state.get("precision")}) if resume else None
    method, speed = build_fast(METHODS[recipe.method], recipe, data, device, recipe.train.steps - (previous.step if resume else 0), earlier)
    precision = method.precision
    distributed.seed_this_rank(recipe.seed)  # ... and different noise
    if resume:
        _refuse_other_recipe(previous, recipe, data.describe()["class_names"])
    start = _restore(method, previous, device) if resume else 0

    main = distributed.is_main()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # half-written grids or logs of a killed run
        write_atomic(run_dir / "recipe.yaml", recipe_to_yaml(recipe).encode())
        _forget_log_after(run_dir / "log.jsonl", start)  # lines of steps a killed run did past its last checkpoint
        if progress and hasattr(progress, "note"):
            progress.note(speed.line())
    state = {
        "name": recipe.name,
        "recipe": recipe.model_dump(mode="json"),
        "precision": precision.name,
        "speed": speed.record(),
        "device": str(device),
        **data.describe(),  # class_names, num_images, unreadable (+ what a method's data adds)
        "world_size": distributed.world_size(),
    }
    if resume and "best" in previous.state:  # the best checkpoint so far survives a resume
        state["best"] = previous.state["best"]
    state[ROLLBACKS] = previous.state.get(ROLLBACKS, 0) if resume else 0
    if resume and EVALS_SINCE_BEST in previous.state:
        state[EVALS_SINCE_BEST] = previous.state[EVALS_SINCE_BEST]
    if resume and "schedule" in previous.state:  # what plan_for_budget measured; the method state holds its result
        state["schedule"] = previous.state["schedule"]
    if not resume and recipe.train.init_from:
        state["init_from"] = init_from(method, recipe.train.init_from, data.describe()["class_names"], device, progress)
    schedule = _plan_for_budget(method, recipe, data, progress)
    if schedule:
        state["schedule"] = schedule
    if main:
        _write_run_json(run_dir, state, start)
    setup = time.perf_counter()
    evaluator = _evaluator(recipe, method, data, run_dir, device, progress) if main else None
    state[EVALUATOR_SETUP_SECONDS] = round(time.perf_counter() - setup, 1)
    # train.budget is training time: the evaluator's one-time setup (a domain classifier, ~4 minutes at 64 px on
    # 2 cores) would otherwise eat a short budget whole. Its cost is in run.json; checkpoint evaluations do count.
    clock = _Budget(recipe, previous.state.get(TRAIN_SECONDS, 0.0) if resume else 0.0)

    total = recipe.train.steps
    if progress:
        progress.start(total, start)
    last = ckpt.latest_checkpoint(run_dir)
    last_path = last.path if last else None
    timer = _Throughput(method.images_per_step)
    logged = _TermMeans()
    guard = NonFiniteGuard(recipe, method, run_dir, device, state, lambda m, c: _restore(m, c, device))
    with _deferred_interrupt() as interrupted:
        step, finished = start, False
        while step < total and not finished:
            step += 1
            prepared = False  # prepare_for_sampling (G_ema's batch-norm recalibration) done for this step's weights
            _decay_learning_rates(method, recipe, step - 1)
            losses = {key: float(value) for key, value in method.train_step(step - 1).items()}
            if (back := guard.check(step, losses)) is not None:  # NaN/inf: rolled back, lower learning rates
                step = back
                logged.clear()
                timer.since_log()
                continue
            logged.add(losses)
            timer.tick()
            stop = distributed.any_rank(interrupted(), device)  # every process stops at the same step
            # The main process's clock decides (only it builds the evaluator); every process stops at the same step.
            out_of_time = clock.budget is not None and distributed.any_rank(main and clock.spent(), device)
            last_step = step == total or out_of_time
            if step % recipe.train.log_every == 0 or last_step:
                stats = distributed.mean_across_ranks(logged.means(), device)
                if main:
                    _log(run_dir, step, timer, stats, progress, clock)
                else:
                    timer.since_log()
                logged.clear()
            if main and (step % recipe.train.sample_every == 0 or last_step):
                method.prepare_for_sampling()
                prepared = True
                _save_grid(method, run_dir, step)
            if step % recipe.train.checkpoint_every == 0 or last_step or stop:
                if (back := guard.check_weights(step)) is not None:  # a NaN weight is never saved
                    step = back
                    logged.clear()
                    continue
                if main and not prepared:
                    method.prepare_for_sampling()  # once per step, for the grid, the evaluation and the checkpoint
                plateaued = False
                if evaluator and not stop:
                    plateaued = _evaluate(evaluator, method, run_dir, step, state, progress, recipe.train.patience)
                plateaued = distributed.any_rank(plateaued, device)
                state[TRAIN_SECONDS] = clock.elapsed()
                last_path = _save(method, run_dir, step, state, recipe, device)
                finished = out_of_time or plateaued
                if main and finished:
                    _note_early_stop(run_dir, step, "budget" if out_of_time else "patience", state, progress)
            if stop:
                raise TrainingInterrupted(last_path)
    return TrainResult(run_dir, step, timer.overall(), last_path)


TRAIN_SECONDS = "train_seconds"  # state.json: wall-clock seconds the run has trained, over every resume
EVALS_SINCE_BEST = "evals_since_best"
EVALUATOR_SETUP_SECONDS = "evaluator_setup_seconds"  # run.json: the domain classifier and calibration, outside train.budget


class _Budget:
    """train.budget: wall-clock seconds from the start of `train`, added up over resumes."""

    def __init__(self, recipe: Recipe, already: float):
        self.budget = parse_budget(recipe.train.budget) if recipe.train.budget else None
        self.already, self.start = already, time.perf_counter()

    def elapsed(self) -> float:
        return self.already + time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.elapsed() >= self.budget

    def left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.elapsed())


def _note_early_stop(run_dir: Path, step: int, reason: str, state: dict, progress) -> None:
    """A run that ended before train.steps says why, in the log and on screen."""
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps({"step": step, "event": "stopped", "reason": reason}) + "\n")
    if progress and hasattr(progress, "note"):
        why = "train.budget is spent" if reason == "budget" else f"mean KID has not improved for {state[EVALS_SINCE_BEST]} evaluations (train.patience)"
        progress.note(f"stopped at step {step}: {why}; best checkpoint: step {state.get('best', {}).get('step', step)}")


def _decay_learning_rates(method, recipe: Recipe, step: int) -> None:
    """train.lr_decay (schedule.py): the recipe's rates times a function of the step alone."""
    if recipe.train.lr_decay == "none":
        return
    factor = lr_factor(recipe, step)
    for optimizer in method.optimizers.values():
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def _plan_for_budget(method, recipe: Recipe, data, progress) -> dict | None:
    """A schedule measured against train.budget on this machine (progan's images_per_stage: auto), before the
    clock starts: on a fresh copy of the method, so the run itself is untouched. None where there is none to plan
    (no such method or key, or --resume brought the planned schedule back with the method's state)."""
    from synthgen.train import METHODS

    plan = getattr(method, "plan_for_budget", None)
    if plan is None or not recipe.train.budget:
        return None
    schedule = plan(parse_budget(recipe.train.budget), lambda: METHODS[recipe.method](recipe, data, method.precision))
    if schedule and progress and hasattr(progress, "note"):
        rates = ", ".join(f"{size} px {rate:.0f}" for size, rate in schedule["real_images_per_s"].items())
        progress.note(f"schedule: images_per_stage auto = {schedule['images_per_stage']:,}, the full size by {schedule['full_size_by_s']:.0f} s "
                      f"of train.budget (real img/s per stage: {rates}; probe {schedule['probe_s']:.1f} s)")
    return schedule


def _restore(method, checkpoint: ckpt.Checkpoint, device: torch.device) -> int:
    for name, network in method.networks.items():
        checkpoint.verified_sha256(name)
        ckpt.restore_network(network, checkpoint.weights(name), checkpoint.path / f"{name}.safetensors")
    rank = distributed.rank() if distributed.is_distributed() else None
    ckpt.restore_training_state(checkpoint, method.optimizers, rank, device)
    if hasattr(method, "load_training_state"):  # a method's own state (ADA's p, LeCam's averages)
        method.load_training_state(checkpoint.state.get(METHOD_STATE, {}))
    return checkpoint.step


METHOD_STATE = "method_state"  # state.json key: what the method keeps beside weights and optimisers

# The data / train / loss / conditioning keys the loop reads for every method; a method declares the others it reads
# (`reads`), and recipe.py refuses a key set away from its default that neither reads.
LOOP_KEYS = frozenset({
    "data.root", "data.image_size", "data.channels", "data.resize", "data.strict", "data.hflip",
    "loss.type", "train.steps", "train.batch_size", "train.lr_g", "train.lr_d", "train.beta1", "train.beta2",
    "train.budget", "train.init_from", "train.precision", "train.compile", "train.device", "train.log_every",
    "train.sample_every", "train.checkpoint_every", "train.keep_checkpoints", "train.out_dir", "train.lr_decay",
    "train.decay_kimg", "train.lr_final_ratio", "train.on_nonfinite", "train.nonfinite_retries", "train.nonfinite_lr_factor",
})

# Keys that say how to run, not what is trained: they may change on --resume.
RESUMABLE_CHANGES = {
    "name", "description", "data.root", "data.strict", "train.steps", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.out_dir", "train.device", "train.precision", "train.compile",
    "train.on_nonfinite", "train.nonfinite_retries", "train.nonfinite_lr_factor", "train.budget", "train.patience",
    "train.init_from",
}


def _refuse_other_recipe(previous: ckpt.Checkpoint, recipe: Recipe, class_names: list[str]) -> None:
    """--resume continues the same training: refuse a recipe (or data) that trains something else."""
    before, now = _flatten(previous.recipe), _flatten(recipe.model_dump(mode="json"))
    changed = [k for k in sorted(before.keys() & now.keys()) if before[k] != now[k] and k not in RESUMABLE_CHANGES and not k.startswith("gate.")]
    where = previous.path / ckpt.STATE_FILE
    if changed:
        listed = "; ".join(f"{k}: {before[k]!r} in the run, {now[k]!r} now" for k in changed[:4]) + ("; ..." if len(changed) > 4 else "")
        raise SynthgenError(f"--resume: the recipe differs from the run's ({where}) in {len(changed)} key(s): {listed}. Start a new run with --set name=...")
    if previous.class_names != class_names:
        raise SynthgenError(f"--resume: data.root has classes {class_names}, the run ({where}) was trained on {previous.class_names}")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _forget_log_after(log: Path, step: int) -> None:
    """Keep the log lines up to `step` (where training continues); drop later ones and any truncated line."""
    if not log.is_file():
        return
    kept = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line + "\n")
    write_atomic(log, "".join(kept).encode())


def _evaluator(recipe: Recipe, method, data, run_dir: Path, device, progress):
    """The gate-based evaluator when the recipe asks for it and the method can generate per class."""
    if not recipe.gate.eval_during_training or getattr(method, "evaluation_images", None) is None:  # None: no per-class G
        return None
    from synthgen.train.evaluation import TrainingEvaluator

    if progress and hasattr(progress, "note"):
        progress.note(f"gate: domain classifier and real-batch calibration for evaluation at checkpoints ({recipe.gate.domain_steps} steps, once per run)")
    return TrainingEvaluator(recipe, data, run_dir, device)


def _evaluate(evaluator, method, run_dir: Path, step: int, state: dict, progress, patience: int = 0) -> bool:
    """Score this checkpoint; remember it as the best when its mean KID is the lowest so far; report collapse.

    Returns whether the run has plateaued: `patience` > 0 evaluations in a row without a new best.
    """
    result = evaluator(method)
    best = state.get("best")
    if best is None or result["kid"] < best["kid"]:
        state["best"] = {"step": step, "kid": result["kid"]}
        state[EVALS_SINCE_BEST] = 0
    else:
        state[EVALS_SINCE_BEST] = state.get(EVALS_SINCE_BEST, 0) + 1
    with open(run_dir / "log.jsonl", "a") as handle:
        # "metrics" is what `synthgen report` plots; the failed checks per class ride along.
        metrics = {"kid": result["kid"], **{f"kid {name}": c["kid"] for name, c in result["classes"].items()}}
        failed = {name: c["failed"] for name, c in result["classes"].items() if c["failed"]}
        handle.write(json.dumps({"step": step, "metrics": metrics, "failed": failed, "collapsed": result["collapsed"]}) + "\n")
    if progress and hasattr(progress, "note"):
        collapsed = f"  WARNING collapse in {', '.join(result['collapsed'])}" if result["collapsed"] else ""
        progress.note(f"eval step {step}: mean KID {result['kid']:.4g} (best: step {state['best']['step']}){collapsed}")
    return patience > 0 and state[EVALS_SINCE_BEST] >= patience


def _save(method, run_dir: Path, step: int, state: dict, recipe: Recipe, device: torch.device) -> Path | None:
    """Rank 0 writes the checkpoint, with every process's RNG state so that --resume is exact."""
    rng = None
    if distributed.is_distributed():
        rng = ckpt.rank_rng_tensors(distributed.gather_tensors(ckpt.own_rng_state(device), device))
    if not distributed.is_main():
        return None
    if hasattr(method, "training_state"):
        state[METHOD_STATE] = method.training_state()
    best_step = state.get("best", {}).get("step")
    path = ckpt.save_checkpoint(run_dir, step, method.networks, method.optimizers, state, recipe.train.keep_checkpoints, rng, protect=best_step)
    _write_run_json(run_dir, state, step)
    return path


def _write_run_json(run_dir: Path, state: dict, step: int) -> None:
    summary = {k: v for k, v in state.items() if k != "recipe"}
    write_atomic(run_dir / "run.json", json.dumps({**summary, "step": step}, indent=1).encode())


def _save_grid(method, run_dir: Path, step: int) -> None:
    """The method's sample grid; the caller has prepared the method for sampling."""
    images, columns = method.grid_images()
    save_grid(to_uint8(images), run_dir / "grids" / f"step-{step:07d}.png", nrow=columns)


def _log(run_dir: Path, step: int, timer: "_Throughput", stats: dict, progress, clock: _Budget | None = None) -> None:
    line = {"step": step, "time": round(timer.elapsed(), 3), "img_per_s": round(timer.since_log(), 2)}
    line.update({k: round(v, 5) for k, v in stats.items()})
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    if progress:
        left = clock.left() if clock else None
        progress.update(step, line if left is None else {**line, BUDGET_LEFT: left})


BUDGET_LEFT = "budget_left_s"  # shown by the progress bar, not logged


class _TermMeans:
    """Each logged term's mean over the steps that reported it since the last log line: a term reported on some
    steps only (lazy R1/R2 every r1_every-th D step, ADA's r_t every ada_interval steps) is its own mean, not diluted
    by the steps without it."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {key: total / self.counts[key] for key, total in self.sums.items()}


class _Throughput:
    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.start = self.mark = time.perf_counter()
        self.steps = self.steps_since_log = 0

    def tick(self) -> None:
        self.steps += 1
        self.steps_since_log += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def since_log(self) -> float:
        now = time.perf_counter()
        rate = self.steps_since_log * self.images_per_step / max(now - self.mark, 1e-9)
        self.mark, self.steps_since_log = now, 0
        return rate

    def overall(self) -> float:
        return self.steps * self.images_per_step / max(self.elapsed(), 1e-9)


@contextmanager
def _deferred_interrupt():
    """The first Ctrl-C finishes the current step and checkpoints; a second one stops at once.

    Under torchrun a Ctrl-C reaches each process twice within moments (from the
    terminal and forwarded by torchrun's agent): that counts as one.
    """
    flag = {"set": False, "at": 0.0}

    def handler(signum, frame):  # noqa: ARG001
        if flag["set"] and time.monotonic() - flag["at"] > 1.0:
            raise KeyboardInterrupt
        if not flag["set"]:
            flag["set"], flag["at"] = True, time.monotonic()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield lambda: flag["set"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
