"""`synthgen translate` of full-size photos against the network's forward-only rate on the same sizes.

A pix2pix run with recipes/pix2pix.yaml's full-size U-Net (64 wide, 8 levels, stride
256) is trained for one step at 256 px (speed does not depend on training);
then IMAGES photos of about 600x400 in five sizes (flowers5 from ../shared, else the
embedded demo images, scaled up; JPEG) are translated, in interleaved rounds:
- forward only: the same images, already decoded and padded, through the network in
  the same batches (what the network alone allows);
- translate_folder end to end (read, pad, translate, crop, encode, write), with the
  process keeping freed memory (synthgen's default, translate.hold_freed_memory);
- the same with glibc's allocator defaults (every big tensor mmapped and unmapped:
  the behaviour that made system time exceed user time).
Each row gives img/s and, per image, user and system CPU seconds and page faults
(getrusage). Goal: translate at least 0.7x the forward-only rate.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch
from benchlib import REPO, interleaved, machine, median, print_table, write_json
from PIL import Image

from synthgen.data.edges import make_edge_pairs
from synthgen.data.idx import import_idx, resolve_class_names
from synthgen.imaging import to_model
from synthgen.recipe import load_recipe
from synthgen.train.loop import train
from synthgen.translate import Translator, hold_freed_memory, pad_to_multiple, read_for_model, translate_folder

FLOWERS = REPO.parent / "shared" / "datasets" / "flowers5" / "daisy"
SIZES = [(600, 400), (640, 427), (612, 408), (576, 384), (400, 600)]  # (width, height): a camera's mix, one portrait
IMAGES, BATCH, ROUNDS = 10, 8, 2


def source_images(work: Path) -> list[Path]:
    if FLOWERS.is_dir():
        return sorted(FLOWERS.glob("*.jpg"))[:IMAGES]
    import_idx(REPO / "demo" / "fashion-mnist", work / "fm", resolve_class_names("fashion-mnist"))
    return sorted((work / "fm" / "test").rglob("*.png"))[::1000][:IMAGES]


def make_photos(sources: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, path in enumerate(sources):
        image = Image.open(path).convert("RGB").resize(SIZES[i % len(SIZES)], Image.Resampling.BICUBIC)
        image.save(folder / f"{i:03d}.jpg", quality=95)
    return folder


def one_step_run(sources: list[Path], work: Path) -> Path:
    """photo -> edge map (BtoA of edge pairs): a 3-channel photo goes in, as in `translate` of a user's photos."""
    small = work / "small"
    small.mkdir()
    for path in sources[:4]:
        Image.open(path).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC).save(small / f"{path.stem}.png")
    make_edge_pairs(small, work / "pairs")
    recipe = load_recipe(REPO / "recipes" / "pix2pix.yaml", [
        f"data.root={work / 'pairs' / 'train'}", "data.image_size=256", "data.direction=BtoA", "train.steps=1",
        "train.batch_size=1", f"train.out_dir={work / 'runs'}", "name=bench",
    ])
    return train(recipe).run_dir


def usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def measured(run, n: int) -> dict:
    (u0, s0, f0), start = usage(), time.perf_counter()
    run()
    (u1, s1, f1), wall = usage(), time.perf_counter() - start
    return {"img_per_s": n / wall, "user_s": (u1 - u0) / n, "sys_s": (s1 - s0) / n, "faults_k": (f1 - f0) / n / 1000}


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = source_images(work)
        photos = make_photos(sources, work / "photos")
        translator = Translator(one_step_run(sources, work))
        decoded = [read_for_model(p, translator.in_channels)[0] for p in sorted(photos.glob("*.jpg"))]
        batches: dict[tuple[int, int], list[torch.Tensor]] = {}
        for image in decoded:
            batches.setdefault(translator.padded_size(*image.shape[-2:]), []).append(image)

        def forward_only():
            for members in batches.values():
                for i in range(0, len(members), BATCH):
                    translator._forward(torch.cat([pad_to_multiple(to_model(m[None]), translator.stride) for m in members[i : i + BATCH]]))

        def folder(hold: bool):
            hold_freed_memory(hold)
            translate_folder(translator, photos, work / "out", overwrite=True, batch_size=BATCH)
            hold_freed_memory(True)

        candidates = {"forward only (decoded, padded)": forward_only, "translate (synthgen: freed memory held)": lambda: folder(True),
                      "translate, glibc allocator defaults": lambda: folder(False)}
        forward_only()  # warm-up: oneDNN primitives for each padded size
        rounds = interleaved(candidates, lambda run: measured(run, len(decoded)), ROUNDS)
    summary = {name: {key: median([r[key] for r in runs]) for key in runs[0]} for name, runs in rounds.items()}
    forward = summary["forward only (decoded, padded)"]["img_per_s"]
    rows = [[name, f"{s['img_per_s']:.3f}", " ".join(f"{r['img_per_s']:.3f}" for r in rounds[name]), f"{s['img_per_s'] / forward:.2f}x",
             f"{s['user_s']:.2f}", f"{s['sys_s']:.2f}", f"{s['faults_k']:.0f}"] for name, s in summary.items()]
    sizes = ", ".join(f"{w}x{h}" for w, h in SIZES)
    print_table(f"translate, {len(decoded)} photos ({sizes}; padded to the stride {translator.stride}), pix2pix U-Net 64 wide, batch {BATCH}, "
                f"{translator.precision.name}; {machine()}",
                ["", "img/s", "rounds", "vs forward", "user s/img", "sys s/img", "k faults/img"], rows)
    ratio = summary["translate (synthgen: freed memory held)"]["img_per_s"] / forward
    print(f"goal: translate >= 0.7x forward-only: {'reached' if ratio >= 0.7 else 'not reached'} ({ratio:.2f}x)")
    write_json("translate", {"images": len(decoded), "sizes": SIZES, "batch_size": BATCH, "precision": translator.precision.name,
                             "rounds": rounds, "median": summary, "ratio_translate_over_forward": ratio, "goal_reached": ratio >= 0.7})


if __name__ == "__main__":
    main()
