"""Speed choices measured on the machine a run trains on: `train.precision: auto` and `train.compile`.

Which precision is fastest differs between CPUs of the same family (issue 12:
bf16 1.6-1.8x fp32 on an AMD EPYC with AVX512-BF16, 30x slower emulated on
one with AVX2 only), so on a CPU with native bf16 `auto` is not a rule but a
measurement: a few steps of the run's own recipe and image shape in fp32 and
in bf16, timed side by side in interleaved rounds, and the faster one wins.
Without native bf16 the answer is known (fp32) and nothing is measured; on
CUDA it is bf16 AMP (fp16 + grad scaling on older GPUs), as before.

`train.compile` (torch.compile, inductor) is treated the same way: `auto`
compiles a trial copy and keeps compilation only when the compiled step is
faster by more than its warm-up costs over the steps the run has left.

The probe trains fresh copies of the method, built in a forked RNG from the
state the run starts in: training then draws exactly what it would have
without the probe (resume and determinism stay bit-exact). The decision and
its figures are cached per CPU (name, family, model, bf16 features), thread
count, torch version, synthgen's code and recipe shape in $SYNTHGEN_CACHE/speed.json, so a
second run of the same shape does not measure again; a choice measured while
other jobs share the cores is used but not cached (busy_machine). A run too
short to pay for the probe is not probed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from synthgen import distributed
from synthgen.data.loading import cache_dir
from synthgen.errors import WriteFailed
from synthgen.imaging import write_atomic
from synthgen.losses import penalises_gradients
from synthgen.precision import cpu_has_native_bf16, resolve_precision
from synthgen.recipe import parse_budget
from synthgen.rng import rng_untouched

PROBE_WARMUP, PROBE_ROUNDS, PROBE_STEPS = 1, 2, 2  # per candidate: 1 untimed step, then 2 rounds of 2 timed steps
SLOW_STEP_S = 1.0
# The probe trains 10 steps (2 candidates); below this many steps it would cost over ~2% of the run.
MIN_STEPS_TO_PROBE = 500
# torch.compile's warm-up is tens of seconds to minutes on 2 cores: only a long run can earn it back.
MIN_STEPS_TO_COMPILE = 5000  # (make demo trains 3,000: not compiled)
MIN_BUDGET_TO_COMPILE_S = 3600  # a train.budget shorter than this trains eager
CACHE_FILE = "speed.json"
CACHE_VERSION = 1


@dataclass
class SpeedChoice:
    """What a run trains with, why, and the figures behind it (run.json "speed", one log line)."""

    precision: str
    compiled: bool = False
    how: str = "requested"  # requested | rule | measured | cached | resumed
    reason: str = ""
    rates: dict[str, float] = field(default_factory=dict)  # img/s per candidate, as measured
    probe_s: float = 0.0  # seconds the measuring took in this run (0 when cached)
    compile_warmup_s: float | None = None  # first compiled steps minus a normal one

    def line(self) -> str:
        measured = ", ".join(f"{name} {rate:.0f} img/s" for name, rate in self.rates.items())
        figures = f" ({measured}{'; cached' if self.how == 'cached' else f'; probe {self.probe_s:.1f} s'})" if measured else ""
        warmup = f", compile warm-up {self.compile_warmup_s:.0f} s" if self.compile_warmup_s is not None else ""
        return f"speed: {self.precision}, {'compiled' if self.compiled else 'eager'}: {self.how}{figures}{warmup}. {self.reason}".rstrip(". ") + "."

    def record(self) -> dict:
        return asdict(self)


def build_fast(method_cls, recipe, data, device: torch.device, remaining: int, resumed: dict | None = None):
    """The method built with the measured (or requested) precision and compilation: (method, SpeedChoice).

    `remaining`: the steps this run has left; `resumed`: the run's earlier "speed" record on --resume
    (an `auto` run keeps what it trained with, so that a resumed run equals an uninterrupted one).
    """
    use_physical_cores()
    build = lambda name: method_cls(recipe, data, resolve_precision(name, device))  # noqa: E731
    choice = choose_precision(recipe, device, build, remaining, resumed)
    choose_compile(recipe, device, build, remaining, choice, resumed)
    method = build(choice.precision)
    if choice.compiled:
        compile_networks(method)
    return method, choice


# --- precision ---------------------------------------------------------------


def choose_precision(recipe, device: torch.device, build, remaining: int, resumed: dict | None) -> SpeedChoice:
    requested = recipe.train.precision
    if requested != "auto":
        return SpeedChoice(resolve_precision(requested, device).name, how="requested", reason="train.precision")
    if resumed and resumed.get("precision"):
        return SpeedChoice(resumed["precision"], how="resumed", reason="the precision this run was trained with")
    if device.type != "cpu":
        return SpeedChoice(resolve_precision("auto", device).name, how="rule", reason="AMP on CUDA")
    if not cpu_has_native_bf16():
        return SpeedChoice("fp32", how="rule", reason="this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 is emulated and many times slower")
    if distributed.is_distributed():
        return SpeedChoice("fp32", how="rule", reason="not measured under torchrun (every process must train alike)")
    if remaining < MIN_STEPS_TO_PROBE:
        return SpeedChoice("fp32", how="rule", reason=f"a run of {remaining} steps is too short to pay for measuring bf16 (from {MIN_STEPS_TO_PROBE})")
    key = cache_key(recipe, device, "precision")
    if (cached := read_cache(key)) is not None:
        return SpeedChoice(cached["choice"], how="cached", rates=cached["rates"], reason=f"measured earlier on this CPU ({cpu_model()})")
    start = time.perf_counter()
    with rng_untouched(device):
        rates, cpu_share = measure({name: build(name) for name in ("fp32", "bf16")})
    best = max(rates, key=rates.get)
    reason = f"the faster on {cpu_model()}"
    if (busy := busy_machine(cpu_share)) is None:
        write_cache(key, {"choice": best, "rates": rates})
    else:
        reason += f"; not cached, {busy}"
    return SpeedChoice(best, how="measured", rates=rates, probe_s=time.perf_counter() - start, reason=reason)


def measure(methods: dict, warmup: int = PROBE_WARMUP, rounds: int = PROBE_ROUNDS, steps: int = PROBE_STEPS) -> tuple[dict[str, float], float | None]:
    """img/s of each method's train_step: warm-up steps, then interleaved rounds (drift hits all alike); the best round counts.
    Also the share of their threads' CPU time the timed steps got (ProbeCpuTime), which says whether to keep the figures.

    Where a step takes over SLOW_STEP_S (pix2pix at 256 px on 2 cores), one round of one step each keeps the probe short.
    """
    for method in methods.values():  # first calls: allocator, oneDNN primitive caches
        if method.images_per_step / step_rate(method, range(warmup)) > SLOW_STEP_S:
            rounds, steps = 1, 1
    cpu = ProbeCpuTime()  # the timed steps only: first calls build oneDNN primitives on one thread
    best: dict[str, float] = {}
    for round_ in range(rounds):
        for name, method in methods.items():
            first = warmup + round_ * steps
            best[name] = max(best.get(name, 0.0), step_rate(method, range(first, first + steps), cpu))
    return best, cpu.share()


def step_rate(method, steps: range, cpu: ProbeCpuTime | None = None) -> float:
    """img/s of `method.train_step` over `steps`, wall clock at the run's own thread count (the probe's one clock;
    tests replace it with fake timings).

    Wall time, as the run will see it: on 2 cores shared with other jobs (load ~16) bf16 used half the CPU time
    of fp32 on one thread, yet ran slower than fp32 on two (bench_train.py, README), so a CPU-time or
    one-thread figure would pick the wrong one there. The CPU time the steps got is added to `cpu` when given.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in steps:
        method.train_step(step)
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)
    wall = time.perf_counter() - start
    if cpu is not None and method.device.type == "cpu":
        cpu.add(wall, time.process_time() - cpu_start)
    return len(steps) * method.images_per_step / max(wall, 1e-9)


class ProbeCpuTime:
    """How much of the cores the timed probe steps got: CPU seconds (all threads) per wall second and thread.

    About 1 on an idle machine (0.99-1.00 for acgan at 32 px, fp32 and bf16, on 2 cores), 0.49-0.64 while one
    other job runs (2026-12-07, AMD EPYC family 26 model 2). The 1-minute load average shows such a job late: 1.5-2.6
    then, under the cores + BUSY_ABOVE that would flag it, while the probe measured a third of the idle rates.
    """

    def __init__(self):
        self.wall = self.cpu = 0.0

    def add(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = self.wall + wall, self.cpu + cpu

    def share(self) -> float | None:
        return self.cpu / (self.wall * torch.get_num_threads()) if self.wall > 0 else None


# --- compile -----------------------------------------------------------------


def choose_compile(recipe, device: torch.device, build, remaining: int, choice: SpeedChoice, resumed: dict | None) -> None:
    """Set choice.compiled (and its figures): off, on (if it works here), or auto (only where it pays)."""
    mode = recipe.train.compile
    if mode == "off":
        return
    if mode == "auto" and resumed is not None and "compiled" in resumed:  # keep what the run trained with (exact resume)
        if not resumed["compiled"]:
            return
        mode = "on"
    if mode == "auto" and recipe.train.unroll_steps:  # see recipe.py: compile does not run the unrolled D
        choice.reason += "; eager: train.unroll_steps runs D on unrolled weights, which torch.compile does not"
        return
    if mode == "auto" and penalises_gradients(recipe.loss):  # recipe.py refuses compile: on with one
        choice.reason += "; eager: D's gradient penalty differentiates a gradient again, which torch.compile does not support"
        return
    if mode == "auto":
        if distributed.is_distributed() or remaining < MIN_STEPS_TO_COMPILE:
            choice.reason += f"; eager: {remaining} steps are too few to earn back torch.compile's warm-up (from {MIN_STEPS_TO_COMPILE})"
            return
        if recipe.train.budget and parse_budget(recipe.train.budget) < MIN_BUDGET_TO_COMPILE_S:
            # The trial and the warm-up (minutes on 2 cores) would be paid out of the budget itself.
            choice.reason += f"; eager: a train.budget under {MIN_BUDGET_TO_COMPILE_S // 60} minutes cannot earn back torch.compile's warm-up"
            return
        key = cache_key(recipe, device, f"compile {choice.precision}")
        if (cached := read_cache(key)) is not None:
            choice.compiled = _pays(cached, remaining)
            choice.compile_warmup_s = cached["warmup_s"]
            choice.rates.update({f"{choice.precision} compiled": cached["compiled"], f"{choice.precision} eager": cached["eager"]})
            return
    start = time.perf_counter()
    figures, cpu_share = trial_compile(build, choice.precision, timed=mode == "auto", device=device)
    choice.probe_s += time.perf_counter() - start
    if figures is None:
        choice.reason += "; torch.compile failed here, training eager"
        return
    choice.compile_warmup_s = figures["warmup_s"]
    if mode == "on":
        choice.compiled = True
        return
    if (busy := busy_machine(cpu_share)) is None:
        write_cache(cache_key(recipe, device, f"compile {choice.precision}"), figures)
    elif "not cached" not in choice.reason:
        choice.reason += f"; not cached, {busy}"
    choice.compiled = _pays(figures, remaining)
    choice.rates.update({f"{choice.precision} compiled": figures["compiled"], f"{choice.precision} eager": figures["eager"]})


def _pays(figures: dict, remaining: int) -> bool:
    """Compiled wins when the time it saves over the remaining steps exceeds its warm-up.

    """
    per_step = lambda rate: figures["images_per_step"] / rate  # noqa: E731
    return remaining * (per_step(figures["eager"]) - per_step(figures["compiled"])) > figures["warmup_s"]


def trial_compile(build, precision: str, timed: bool, device="cpu") -> tuple[dict | None, float | None]:
    """A compiled copy's warm-up (and, `timed`, its img/s beside an eager copy's) and the timed steps' CPU share (measure);
    None (and a one-line note) when compilation fails here.

    The copy also fills inductor's on-disk cache, so that compiling the run's own networks afterwards is mostly cache hits.
    """
    with rng_untouched(device):
        compiled = build(precision)
        compile_networks(compiled)
        try:
            start = time.perf_counter()
            step_rate(compiled, range(2))  # compiles (forward and backward graphs of every network)
            warmup = time.perf_counter() - start
            if not timed:
                return {"warmup_s": warmup}, None
            eager = build(precision)
            rates, cpu_share = measure({"eager": eager, "compiled": compiled})
        except Exception as exc:  # noqa: BLE001 - no compiler, an unsupported op: eager is always there
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            print(f"note: torch.compile failed ({type(exc).__name__}: {first}); training eager")
            return None, None
    eager_step = eager.images_per_step / rates["eager"]
    return {**rates, "warmup_s": max(0.0, warmup - 2 * eager_step), "images_per_step": eager.images_per_step}, cpu_share


def compile_networks(method) -> None:
    """torch.compile every trained network in place (nn.Module.compile: same state dict, checkpoints unchanged)."""
    for network in method.networks.values():
        if any(p.requires_grad for p in network.parameters()):
            network.compile()


# --- threads -----------------------------------------------------------------


def use_physical_cores() -> None:
    """Intra-op threads = physical cores: a second hyperthread per core only contends for the same FMA units.

    Left alone when the user set OMP_NUM_THREADS or called torch.set_num_threads below that.
    """
    cores = physical_cores()
    if cores and "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > cores:
        torch.set_num_threads(cores)


def physical_cores() -> int | None:
    """Distinct (package, core) pairs among the CPUs this process may run on (Linux), else None."""
    try:
        allowed = os.sched_getaffinity(0)
        cores = set()
        for cpu in allowed:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add((topology.joinpath("physical_package_id").read_text().strip(), topology.joinpath("core_id").read_text().strip()))
        return len(cores) or None
    except (AttributeError, OSError):
        return None


# --- cache -------------------------------------------------------------------

BUSY_ABOVE = 1.0  # runnable tasks beyond the cores (1-minute load average) at which timings are not kept
BUSY_BELOW_SHARE = 0.8  # ... or the share of its threads' CPU time the probe's timed steps got (ProbeCpuTime)


def machine_load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_machine(cpu_share: float | None) -> str | None:
    """Why timings taken now should not be cached, or None when the machine is quiet enough to trust them;
    `cpu_share` is what the timed steps got of their threads' CPU time (measure), None where unknown.

    A decision measured while other jobs share the cores is used by this run but not stored for later
    ones: seen here, a probe under a load of 6 on 2 cores cached 23 and 24 img/s for a recipe that
    trains at 220 img/s, and torch.compile at a sixth of eager, and every later run reused them.
    """
    load, cores = machine_load(), physical_cores() or os.cpu_count() or 1
    if load is not None and load > cores + BUSY_ABOVE:
        return f"measured under load {load:.1f} on {cores} cores"
    if cpu_share is not None and cpu_share < BUSY_BELOW_SHARE:
        return f"the probe got {cpu_share:.0%} of its {torch.get_num_threads()} threads' CPU time (other jobs on the cores)"
    return None


# The instruction-set features that decide speed choices, best first: AMX and AVX512-BF16 give oneDNN native bf16.
CPU_FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_model() -> str:
    """This CPU as speed choices must tell it apart, e.g. "AMD EPYC, family 25 model 17, avx512_bf16".

    Cloud VMs often name several generations alike ("AMD EPYC" here for CPUs with AVX2 only and with
    AVX512-BF16), so a cached choice keyed by the name alone could be reused on a CPU it is wrong for.
    """
    return describe_cpu(read_cpuinfo())


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: describe_cpu falls back to what platform knows
        return ""


def describe_cpu(cpuinfo: str) -> str:
    """Name, family, model and best speed-relevant feature of the first processor in /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: the cores of one machine are alike
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    parts = [fields.get("model name") or platform.processor() or platform.machine()]
    if "cpu family" in fields and "model" in fields:
        parts.append(f"family {fields['cpu family']} model {fields['model']}")
    if "flags" in fields:  # unknown elsewhere (not Linux): nothing is claimed
        flags = set(fields["flags"].split())
        parts.append(next((feature for feature in CPU_FEATURES if feature in flags), "no avx2"))
    return ", ".join(parts)


@functools.cache
def code_digest() -> str:
    """A digest of synthgen's own source: a change to the code that runs a step (a faster layer) can change which
    choice is faster, so timings taken with other code are not reused. Read once per process (~150 small files)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(recipe, device: torch.device, what: str) -> str:
    """What a timing depends on: the machine, torch, synthgen's code and the shape of the work (not the data's values)."""
    t = recipe.train
    shape = {
        "method": recipe.method,
        "model": recipe.model.model_dump(mode="json"),
        "conditioning": recipe.conditioning.model_dump(mode="json"),
        "loss": recipe.loss.model_dump(mode="json"),
        "data": [recipe.data.image_size, recipe.data.channels],
        "train": [t.batch_size, t.n_dis, t.ema, t.diffaugment, t.pool_size],
    }
    where = device.type if device.type == "cpu" else torch.cuda.get_device_name(device)
    machine = (f"{cpu_model()} | {torch.get_num_threads()} threads | {where} | torch {torch.__version__} | {torch.backends.cpu.get_cpu_capability()}"
               f" | synthgen code {code_digest()}")
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    return f"{what} | {machine} | {digest}"


def read_cache(key: str) -> dict | None:
    entry = _load_cache().get(key)
    return entry if isinstance(entry, dict) else None


def write_cache(key: str, value: dict) -> None:
    """Best effort, like the data cache: a read-only cache folder only costs the next run a measurement."""
    entries = _load_cache()
    entries[key] = value
    try:
        write_atomic(cache_dir() / CACHE_FILE, json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1).encode())
    except WriteFailed:
        pass


def _load_cache() -> dict:
    try:
        raw = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measured again
    if not isinstance(raw, dict) or raw.get("version") != CACHE_VERSION or not isinstance(raw.get("entries"), dict):
        return {}
    return raw["entries"]
