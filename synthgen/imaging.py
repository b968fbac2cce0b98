"""Every conversion between image files, uint8 tensors and model tensors lives here.

On disk images are uint8; in the models they are float in [-1, 1].
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from synthgen.errors import SynthgenError, WriteFailed

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}  # gif: the first frame
SAVE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
# zlib's fastest level: the same pixels (PNG is lossless), about a third less encoding time for 64 px RGB images and
# a tenth for 28-32 px grey ones, for 3-5% more bytes than Pillow's default 6 (`benchmarks/bench_sample.py`, 600 real
# images each of flowers5 and Fashion-MNIST, AMD EPYC lscpu model 49, 2026-12-06). Sampling is CPU-bound; disk seldom is.
PNG_LEVEL = 1

# Transparent pixels are composited onto this colour: a product photo on a
# transparent background then looks as it does in a viewer with a white page.
ALPHA_BACKGROUND = (255, 255, 255)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()  # the stat last: it is the costly part


# --- opening files: one set of rules for every reader ----------------------------------


class UnreadableImage(SynthgenError, OSError):
    """A file that is not a decodable image; the message names the file and says why.

    Readers of a dataset list and skip these (or refuse them with `strict`);
    a command given one image stops with the message.
    """

    def __init__(self, path: Path, exc: BaseException):
        self.path, self.reason = path, _why_unreadable(path, exc)
        super().__init__(f"{path}: {self.reason}")


def _why_unreadable(path: Path, exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow's guard (Image.MAX_IMAGE_PIXELS) is kept: a few KB of PNG can claim gigapixels.
        return f"refused as a possible decompression bomb (Pillow's limit, Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels): {exc}"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).replace(f"'{path}'", "").strip() or type(exc).__name__
    return f"not a readable image ({text})"


@contextmanager
def reading(path: Path):
    """Any failure inside the block (reading or converting `path`) raised as UnreadableImage.

    Pillow signals a damaged file with many exception types (OSError,
    SyntaxError, ValueError, EOFError, struct.error, ...); callers catch one.
    """
    try:
        yield
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a malformed file makes Pillow raise
        raise UnreadableImage(Path(path), exc) from None


@contextmanager
def opened(path: Path):
    """`Image.open(path)` (header only until loaded; an animation at its first frame), failures as UnreadableImage."""
    with reading(path), Image.open(path) as image:
        yield image


def open_image(path: Path) -> Image.Image:
    """The decoded image (first frame), EXIF orientation applied (phone photos store their rotation there)."""
    with opened(path) as image:
        image.load()
        return ImageOps.exif_transpose(image)  # a copy, detached from the file


def to_8bit(image: Image.Image) -> Image.Image:
    """Bring any PIL mode to L, LA, RGB or RGBA without losing alpha or range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        return image.convert("RGBA")
    if image.mode in ("1",):
        return image.convert("L")
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...


def flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode not in ("LA", "RGBA"):
        return image
    rgba = image.convert("RGBA")
    page = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(page, rgba).convert("RGB")


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Any mode -> L (channels=1) or RGB (channels=3)."""
    image = flatten_alpha(to_8bit(image))
    return image.convert("L" if channels == 1 else "RGB")


def fit(image: Image.Image, size: int, policy: str) -> Image.Image:
    """Resize to size x size: `crop` keeps the centre, `pad` letterboxes in black, `stretch` distorts."""
    if image.size == (size, size):
        return image
    if policy == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)
    if policy == "pad":
        return ImageOps.pad(image, (size, size), Image.Resampling.LANCZOS, color=0)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def load_image(path: Path, channels: int, size: int, policy: str) -> torch.Tensor:
    """Decode one file into a uint8 tensor [C, size, size]. Raises UnreadableImage."""
    with reading(path):  # conversion failures of an odd file count as unreadable too
        image = fit(to_channels(open_image(path), channels), size, policy)
    return pil_to_tensor(image)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit L or RGB picture as uint8 [C, H, W] (torchvision's function of that name, without
    importing torchvision: that costs ~3 s, torch._dynamo included, in every command that reads images)."""
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def load_native(path: Path) -> np.ndarray:
    """Decode one file into uint8 [H, W, C] at its own size: C = 1 for grey images, else 3 (alpha flattened)."""
    with reading(path):
        image = flatten_alpha(to_8bit(open_image(path)))
    grey = image.mode == "L"
    array = np.asarray(image if grey else image.convert("RGB"), dtype=np.uint8)
    return array[:, :, None] if grey else array


def to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped), on the CPU."""
    return images.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


def encode(image: torch.Tensor, fmt: str, png_level: int = PNG_LEVEL) -> bytes:
    """uint8 [C, H, W] -> file bytes in png, jpg or webp."""
    return encode_array(image.permute(1, 2, 0).numpy(), fmt, png_level)


def encode_array(array: np.ndarray, fmt: str, png_level: int = PNG_LEVEL) -> bytes:
    """uint8 [H, W, C] (or [H, W]) -> file bytes in png (at zlib level png_level), jpg or webp."""
    array = np.ascontiguousarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    pil = Image.fromarray(array)
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt in ("jpg", "webp") else {"compress_level": png_level}
    pil.save(buffer, format=SAVE_FORMATS[fmt], **options)
    return buffer.getvalue()


def _write_synced(path: Path, data: bytes, mode: str, sync: bool = True) -> None:
    with open(path, mode) as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written file.

    `durable=False` skips the fsync (about 4 ms a file on these disks, ten times the write): for many small
    files whose caller makes them durable together with `make_durable` before recording them anywhere.
    A killed process loses nothing either way (the page cache survives it); only a power cut could.
    """
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(tmp, data, "wb", sync=durable)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only folder: the previous file (if any) is untouched
        tmp.unlink(missing_ok=True)
        raise WriteFailed(path, exc) from None


def make_durable(paths: list[Path]) -> None:
    """Put files written with `write_atomic(..., durable=False)` on disk: one sync() for all of them where
    the OS has it (one journal commit instead of one per file), an fsync per file elsewhere."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for path in paths:
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())


def append_synced(path: Path, data: bytes) -> None:
    """Append `data` to `path` (created when missing) and fsync: once this returns, the bytes survive a kill."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(path, data, "ab")
    except OSError as exc:  # disk full, read-only folder: what was appended before is intact
        raise WriteFailed(path, exc) from None


TEMP_PREFIX = "."  # temporary files are hidden: `.name.tmp-PID`


def remove_stale_temporaries(folder: Path) -> int:
    """Delete `.*.tmp-PID` files below `folder` left by a process that was killed (its PID is gone); returns how many."""
    removed = 0
    for tmp in Path(folder).rglob(f"{TEMP_PREFIX}*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[-1]
        if tmp.is_file() and pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def copy_atomic(src: Path, dst: Path, link: bool = False) -> bool:
    """Copy (or hard-link) src to dst through a temporary name; returns whether it linked.

    A link that the file system refuses (another device, no links allowed) falls back to a copy.
    """
    tmp = dst.with_name(f"{TEMP_PREFIX}{dst.name}.tmp-{os.getpid()}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        linked = False
        if link:
            try:
                os.link(src, tmp)
                linked = True
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        if not linked:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:  # disk full, read-only folder: as write_atomic
        tmp.unlink(missing_ok=True)
        raise WriteFailed(dst, exc) from None
    return linked


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """uint8 [N, C, H, W] -> one PNG grid (torchvision's make_grid), written atomically."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, padding=2, pad_value=255)
    if images.shape[1] == 1:
        grid = grid[:1]
    write_atomic(path, encode(grid, "png"))
