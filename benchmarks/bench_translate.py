"""Translate throughput (images/s at 256x256) of recipes/pix2pix.yaml's U-Net: fp32 against the default precision.

A pix2pix run with the recipe's full-size networks (U-Net 64 wide, 8 levels)
is trained for one step on edges -> image pairs made from the embedded demo
images scaled to 256 px (throughput does not depend on how well it is trained);
then a folder of 256x256 images is translated end to end (read, translate,
write) with precision fp32 and auto, interleaved (fp32, auto, fp32, auto) so
drift in the machine's speed hits both alike. The first batch of each
translator is a warm-up, not timed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from synthgen.data.edges import make_edge_pairs  # noqa: E402
from synthgen.data.idx import import_idx, resolve_class_names  # noqa: E402
from synthgen.precision import resolve_device, resolve_precision  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402
from synthgen.train.loop import train  # noqa: E402
from synthgen.translate import Translator, read_for_model, translate_folder  # noqa: E402

SIZE, IMAGES, ROUNDS, BATCH = 256, 32, 2, 8
OUT = REPO / "out" / "bench" / "translate.json"


def demo_images_at(size: int, workdir: Path, count: int) -> Path:
    import_idx(REPO / "demo" / "fashion-mnist", workdir / "fm", resolve_class_names("fashion-mnist"))
    big = workdir / "big"
    for i, path in enumerate(sorted((workdir / "fm" / "test").rglob("*.png"))[:: 10000 // count][:count]):
        big.mkdir(exist_ok=True)
        Image.open(path).resize((size, size), Image.Resampling.BICUBIC).save(big / f"{i:03d}.png")
    return big


def images_per_second(translator: Translator, src: Path, out: Path) -> float:
    warm = sorted(src.glob("*.png"))[:BATCH]
    translator.translate([read_for_model(p, translator.in_channels)[0] for p in warm])
    start = time.perf_counter()
    result = translate_folder(translator, src, out, overwrite=True, batch_size=BATCH)
    return len(result.translated) / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        images = demo_images_at(SIZE, workdir, IMAGES)
        make_edge_pairs(images, workdir / "pairs")
        recipe = load_recipe(REPO / "recipes" / "pix2pix.yaml", [
            f"data.root={workdir / 'pairs' / 'train'}", f"data.image_size={SIZE}", "train.steps=1", "train.batch_size=1",
            f"train.out_dir={workdir / 'runs'}", "name=bench",
        ])
        run = train(recipe).run_dir
        device = resolve_device("auto")
        default = resolve_precision("auto", device).name
        rates: dict[str, list[float]] = {"fp32": [], "auto": []}
        for _ in range(ROUNDS):
            for precision in rates:
                translator = Translator(run, precision=precision)
                rates[precision].append(images_per_second(translator, workdir / "pairs" / "train" / "A", workdir / "out"))
        fp32, auto = (sum(v) / len(v) for v in rates.values())
        table = Table(title=f"synthgen translate, {SIZE}x{SIZE}, pix2pix U-Net (recipes/pix2pix.yaml), {device}")
        table.add_column("precision")
        table.add_column("images/s", justify="right")
        table.add_column("vs fp32", justify="right")
        table.add_row("fp32", f"{fp32:.2f}", "1.00x")
        table.add_row(f"default (auto = {default})", f"{auto:.2f}", f"{auto / fp32:.2f}x")
        Console().print(table)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({
            "benchmark": "translate", "image_size": SIZE, "images": IMAGES, "batch_size": BATCH, "device": str(device),
            "default_precision": default, "images_per_second": {"fp32": fp32, "auto": auto}, "rounds": rates,
            "ratio_auto_over_fp32": auto / fp32,
        }, indent=1))
        if default == "fp32":
            print("auto resolves to fp32 on this device: both rows run the same code, their ratio is the run-to-run noise")
        print(f"written {OUT}")


if __name__ == "__main__":
    main()
