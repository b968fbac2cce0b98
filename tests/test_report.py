"""The HTML report: a fake run directory in, one self-contained page out."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from synthgen.errors import SynthgenError
from synthgen.report import load_log, pick_strip, render_report

DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def make_run(run_dir: Path, grid_steps=(200, 400, 600)) -> Path:
    run_dir.mkdir(parents=True)
    lines = []
    for i in range(1, 49):
        step = i * 20
        lines.append(json.dumps({
            "step": step, "time": step * 0.06, "img_per_s": 400 + 10 * math.sin(i),
            "d_loss": 1.2 + 0.2 * math.sin(i / 3), "g_loss": 0.9 + 0.3 * math.cos(i / 4),
            "d_aux": 0.3 / i, "gp": 0.01, "lr_g": 2e-4, "lr_d": 2e-4,
        }))
    lines.insert(30, json.dumps({"step": 200, "d_loss": 9.0, "g_loss": 9.0}))  # resumed: repeats step 200
    lines.append(json.dumps({"step": 960, "metrics": {"fid": 35.2, "kid": 0.012, "coverage": 0.8}}))
    lines.append(json.dumps({"step": 480, "metrics": {"fid": 50.0, "kid": 0.02, "coverage": 0.6}}))
    lines.append('{"step": 980, "d_loss": 1.1, "g_lo')  # crash mid-write
    (run_dir / "log.jsonl").write_text("\n".join(lines), encoding="utf-8")
    (run_dir / "grids").mkdir()
    for step in grid_steps:
        Image.new("L", (28 * 4, 28 * 3), color=step % 256).save(run_dir / "grids" / f"step-{step:07d}.png")
    (run_dir / "recipe.yaml").write_text("name: <mnist>\ntrain:\n  steps: 1000\n", encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps({"name": "mnist-run", "class_names": ["zero", "one"], "step": 960}))
    return run_dir


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in DATA_URI.findall(page)]


def test_report_is_a_self_contained_page(tmp_path):
    run_dir = make_run(tmp_path / "mnist-run")
    out = render_report(run_dir)
    assert out == run_dir / "report.html" and out.is_file()
    assert not (run_dir / "report.html.tmp").exists()
    page = out.read_text(encoding="utf-8")
    assert "mnist-run" in page
    for step in (200, 400, 600):
        assert f"step {step}" in page
    pngs = embedded_pngs(page)
    assert len(pngs) >= 3
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.format == "PNG"
    assert "&lt;mnist&gt;" in page and "<mnist>" not in page  # recipe text escaped
    assert "<details>" in page and "pixelated" in page
    assert "zero" in page and "960" in page


def test_log_keeps_last_value_per_step_and_skips_broken_lines(tmp_path):
    log = load_log(make_run(tmp_path / "run") / "log.jsonl")
    assert log.train["d_loss"][200] == 9.0  # the later (resumed) line wins
    assert 980 not in log.train.get("d_loss", {})  # truncated last line ignored
    assert log.metrics["fid"] == {480: 50.0, 960: 35.2}
    assert max(log.steps()) == 960


def test_strip_is_evenly_spaced_and_capped():
    grids = [(i * 100, Path(f"step-{i}.png")) for i in range(1, 21)]
    picked = pick_strip(grids)
    assert len(picked) == 6 and picked[0] == grids[0] and picked[-1] == grids[-1]
    assert pick_strip(grids[:3]) == grids[:3]


def test_grids_only_without_run_json(tmp_path):
    run_dir = tmp_path / "bare"
    (run_dir / "grids").mkdir(parents=True)
    Image.new("RGB", (56, 28), "red").save(run_dir / "grids" / "step-0000100.png")
    out = render_report(run_dir, out=tmp_path / "elsewhere.html")
    page = out.read_text(encoding="utf-8")
    assert "bare" in page and "step 100" in page and len(embedded_pngs(page)) == 1


def test_empty_dir_is_not_a_run(tmp_path):
    with pytest.raises(SynthgenError, match="not a synthgen run"):
        render_report(tmp_path)
