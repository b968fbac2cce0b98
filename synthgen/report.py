"""Render a training run (weights/<name>/) into one self-contained HTML page.

Everything the page shows is embedded: charts are drawn with matplotlib's Agg
renderer (Figure objects, no pyplot, so no global state and nothing to leak)
and every image is a base64 PNG data URI, so the file can be mailed or copied
on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from synthgen.errors import SynthgenError

MAIN_LOSSES = {"d_loss": ("D loss", "#1f77b4"), "g_loss": ("G loss", "#ff7f0e")}
NOT_LOSSES = {"step", "time", "img_per_s", "epoch", "kimg", "metrics"}  # and lr_*
LOWER_IS_BETTER = {"fid", "kid", "is_std", "lpips"}
HIGHER_IS_BETTER = {"is", "coverage", "density", "precision", "recall", "accuracy"}
GRID_NAME = re.compile(r"^step-(\d+)\.png$")
STRIP_SIZE = 6
PAGE_WIDTH = 1100  # px; grids narrower than this are upscaled with pixelated rendering


@dataclass
class RunLog:
    """log.jsonl as series: key -> {step: value}, the last value per step winning."""

    train: dict[str, dict[int, float]] = field(default_factory=dict)
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)

    def last(self, key: str) -> float | None:
        series = self.train.get(key)
        return series[max(series)] if series else None

    def steps(self) -> list[int]:
        return sorted({s for d in (*self.train.values(), *self.metrics.values()) for s in d})


# --------------------------------------------------------------------- loading


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def load_log(path: Path) -> RunLog:
    """Parse log.jsonl, skipping any malformed line (a crash mid-write leaves a truncated one)."""
    log = RunLog()
    if not path.is_file():
        return log
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = _number(entry.get("step")) if isinstance(entry, dict) else None
        if step is None:
            continue
        if "event" in entry:  # e.g. a NaN rollback (train/nonfinite.py): not a series to plot
            continue
        metrics = entry.get("metrics")
        if isinstance(metrics, dict):
            _store(log.metrics, metrics, int(step))
        _store(log.train, {k: v for k, v in entry.items() if k not in ("step", "metrics")}, int(step))
    return log


def _store(target: dict[str, dict[int, float]], values: dict, step: int) -> None:
    for key, raw in values.items():
        value = _number(raw)
        if value is not None:
            target.setdefault(str(key), {})[step] = value


def read_run_info(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def find_grids(run_dir: Path) -> list[tuple[int, Path]]:
    grid_dir = run_dir / "grids"
    if not grid_dir.is_dir():
        return []
    found = ((GRID_NAME.match(p.name), p) for p in grid_dir.iterdir() if p.is_file())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def pick_strip(earlier: list[tuple[int, Path]], count: int = STRIP_SIZE) -> list[tuple[int, Path]]:
    """Up to `count` grids evenly spaced over the run, always including the first."""
    if len(earlier) <= count:
        return earlier
    picks = np.linspace(0, len(earlier) - 1, count).round().astype(int)
    return [earlier[i] for i in sorted(set(picks.tolist()))]


# -------------------------------------------------------------------- plotting


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` points; the window shrinks at the ends instead of padding."""
    half = window // 2
    if half < 1:
        return values
    sums = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    lo, hi = np.maximum(0, index - half), np.minimum(len(values), index + half + 1)
    return (sums[hi] - sums[lo]) / (hi - lo)


def _arrays(series: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    steps = sorted(series)
    return np.array(steps, dtype=float), np.array([series[s] for s in steps], dtype=float)


def _new_figure(width: float, height: float, panels: int = 1):
    from matplotlib.figure import Figure  # lazy: keeps `synthgen --help` fast

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=9, colors="#4b5563")
        ax.xaxis.set_major_formatter(_step_formatter())
        ax.set_xlabel("step", fontsize=9, color="#4b5563")
    return fig, axes


def _step_formatter():
    from matplotlib.ticker import FuncFormatter

    def short(x: float, _pos) -> str:
        return f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"

    return FuncFormatter(short)


def _plot_smoothed(ax, series: dict[int, float], label: str, color: str | None = None) -> None:
    """Raw points faint, a moving average over them solid, in the same colour."""
    steps, values = _arrays(series)
    raw = ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.9, marker="." if len(steps) < 60 else None,
                  markersize=3)[0]
    window = max(1, min(200, len(values) // 15))
    if window > 2:
        ax.plot(steps, moving_average(values, window), color=raw.get_color(), linewidth=1.8, label=label)
    else:
        raw.set(alpha=1.0, label=label)


def fig_to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_losses(log: RunLog) -> str | None:
    main = [k for k in MAIN_LOSSES if log.train.get(k)]
    other = sorted(k for k in log.train if k not in MAIN_LOSSES and k not in NOT_LOSSES and not k.startswith("lr_"))
    if not main and not other:
        return None
    panels = [p for p in ((main, "D and G losses"), (other, "Other loss terms")) if p[0]]
    fig, axes = _new_figure(11 if len(panels) == 2 else 10, 3.8, len(panels))
    for ax, (keys, title) in zip(axes, panels):
        for key in keys:
            label, color = MAIN_LOSSES.get(key, (key, None))
            _plot_smoothed(ax, log.train[key], label, color)
        ax.set_title(title, fontsize=11, loc="left")
        ax.legend(fontsize=9, frameon=False, loc="best")
    return fig_to_data_uri(fig)


def plot_throughput(log: RunLog) -> str | None:
    if not log.train.get("img_per_s"):
        return None
    fig, (ax,) = _new_figure(10, 2.6)
    _plot_smoothed(ax, log.train["img_per_s"], "img/s", "#2ca02c")
    ax.set_ylabel("images / s", fontsize=9, color="#4b5563")
    ax.set_ylim(bottom=0)
    return fig_to_data_uri(fig)


def metric_title(name: str) -> str:
    shown = name.upper() if name.lower() in {"fid", "kid", "is", "lpips"} else name.replace("_", " ")
    if name.lower() in LOWER_IS_BETTER:
        return f"{shown}  (lower is better)"
    if name.lower() in HIGHER_IS_BETTER:
        return f"{shown}  (higher is better)"
    return shown


def plot_metric(name: str, series: dict[int, float]) -> str:
    fig, (ax,) = _new_figure(5.2, 3.0)
    steps, values = _arrays(series)
    ax.plot(steps, values, color="#7c3aed", marker="o", markersize=4, linewidth=1.6)
    best = _best_index(name, values)
    if best is not None:
        ax.plot(steps[best], values[best], "o", color="#dc2626", markersize=7, label=f"best {values[best]:.4g}")
        ax.legend(fontsize=9, frameon=False)
    ax.set_title(metric_title(name), fontsize=11, loc="left")
    return fig_to_data_uri(fig)


def _best_index(name: str, values: np.ndarray) -> int | None:
    if name.lower() in LOWER_IS_BETTER:
        return int(np.argmin(values))
    if name.lower() in HIGHER_IS_BETTER:
        return int(np.argmax(values))
    return None


# ---------------------------------------------------------------------- images


def png_to_data_uri(path: Path) -> tuple[str, int] | None:
    """A grid file as (data URI, pixel width); None when the file can't be read as an image."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width = image.width
            if image.format != "PNG":
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width


# ------------------------------------------------------------------------ HTML


CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --card:#fff; --bg:#f6f7f9; --accent:#4f46e5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width:1140px; margin:0 auto; padding:28px 20px 48px; }
h1 { font-size:26px; margin:0 0 4px; letter-spacing:-0.01em; }
h2 { font-size:17px; margin:0 0 12px; }
.sub { color:var(--muted); margin:0 0 18px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px; margin:0 0 18px; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:12px; margin-bottom:14px; }
.tile { background:var(--bg); border-radius:8px; padding:10px 14px; }
.tile .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.tile .v { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.chips { display:flex; flex-wrap:wrap; gap:6px; }
.chip { background:#eef2ff; color:#3730a3; border-radius:999px; padding:2px 10px; font-size:13px; }
img.chart { display:block; max-width:100%; height:auto; margin:0 auto; }
.metrics { display:grid; grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); gap:12px; }
img.latest { display:block; width:100%; max-height:85vh; object-fit:contain; background:#000; border-radius:6px; }
.pixelated { image-rendering:pixelated; }
.strip { display:grid; grid-template-columns:repeat(auto-fill, minmax(160px, 1fr)); gap:12px; margin-top:16px; }
figure { margin:0; }
.strip img { display:block; width:100%; border-radius:4px; background:#000; }
figcaption { color:var(--muted); font-size:13px; text-align:center; margin-top:4px; font-variant-numeric:tabular-nums; }
.empty { color:var(--muted); font-style:italic; }
details summary { cursor:pointer; font-weight:600; font-size:17px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px 16px; border-radius:8px; overflow:auto; font-size:13px; line-height:1.45; }
footer { color:var(--muted); font-size:12px; text-align:center; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def header_html(name: str, info: dict, log: RunLog, last_step: int | None) -> str:
    tiles = [("Last step", "–" if last_step is None else f"{last_step:,}"),
             ("Elapsed", format_duration(log.last("time"))),
             ("Throughput", f"{_fmt(log.last('img_per_s'), ',.0f')} img/s"),
             ("D / G loss", f"{_fmt(log.last('d_loss'))} / {_fmt(log.last('g_loss'))}")]
    tiles_html = "".join(f'<div class="tile"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div></div>'
                         for k, v in tiles)
    classes = [str(c) for c in info.get("class_names") or []] if isinstance(info.get("class_names"), list) else []
    chips = "".join(f'<span class="chip">{_esc(c)}</span>' for c in classes) or '<span class="empty">unknown</span>'
    return (f"<h1>{_esc(name)}</h1><p class=\"sub\">synthgen training report</p>"
            f"<section><div class=\"tiles\">{tiles_html}</div>"
            f"<div class=\"k\" style=\"color:var(--muted);font-size:13px;margin-bottom:6px\">"
            f"{len(classes)} classes</div><div class=\"chips\">{chips}</div></section>")


def chart_section(title: str, uri: str | None, empty: str) -> str:
    body = f'<img class="chart" alt="{_esc(title)}" src="{uri}">' if uri else f'<p class="empty">{_esc(empty)}</p>'
    return f"<section><h2>{_esc(title)}</h2>{body}</section>"


def metrics_section(charts: list[tuple[str, str]]) -> str:
    if not charts:
        return ""
    images = "".join(f'<img class="chart" alt="{_esc(n)}" src="{u}">' for n, u in charts)
    return f'<section><h2>Metrics</h2><div class="metrics">{images}</div></section>'


def grids_section(grids: list[tuple[int, Path]]) -> str:
    encoded = [(step, png_to_data_uri(path)) for step, path in grids]
    encoded = [(step, e) for step, e in encoded if e]
    if not encoded:
        return '<section><h2>Samples</h2><p class="empty">No sample grids yet.</p></section>'
    (last_step, (last_uri, last_width)), earlier = encoded[-1], encoded[:-1]
    pixel = " pixelated" if last_width < PAGE_WIDTH else ""
    parts = [f"<section><h2>Samples at step {last_step:,}</h2>"
             f'<img class="latest{pixel}" alt="samples at step {last_step}" src="{last_uri}">'
             f"<figcaption>step {last_step} · one row per class</figcaption>"]
    if earlier:
        figures = "".join(
            f'<figure><img class="{"pixelated" if width < 240 else ""}" alt="step {step}" src="{uri}">'
            f"<figcaption>step {step}</figcaption></figure>"
            for step, (uri, width) in pick_strip(earlier))
        parts.append(f'<h2 style="margin-top:22px">Earlier samples</h2><div class="strip">{figures}</div>')
    return "".join(parts) + "</section>"


def recipe_section(run_dir: Path) -> str:
    try:
        text = (run_dir / "recipe.yaml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return f"<section><details><summary>Recipe</summary><pre>{_esc(text)}</pre></details></section>"


def compose_html(name: str, body: list[str]) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(name)} · synthgen report</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}<footer>generated by synthgen · {generated}</footer></main></body></html>\n")


# ------------------------------------------------------------------------- API


def render_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's report (default run_dir/report.html) atomically and return its path."""
    run_dir = Path(run_dir)
    grids = find_grids(run_dir)
    if not (run_dir / "log.jsonl").is_file() and not grids:
        raise SynthgenError(f"{run_dir}: not a synthgen run (no log.jsonl or grids/)")
    log = load_log(run_dir / "log.jsonl")
    info = read_run_info(run_dir)
    name = str(info.get("name") or run_dir.resolve().name)
    known_steps = log.steps() + [s for s, _ in grids]
    last_step = max(known_steps) if known_steps else _int_or_none(info.get("step"))
    body = [header_html(name, info, log, last_step),
            chart_section("Losses", plot_losses(log), "No loss values logged yet."),
            chart_section("Throughput", plot_throughput(log), "No throughput logged yet."),
            metrics_section([(metric_title(k), plot_metric(k, v)) for k, v in sorted(log.metrics.items())]),
            grids_section(grids),
            recipe_section(run_dir)]
    out = Path(out) if out is not None else run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(compose_html(name, body), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _int_or_none(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
