"""A folder of images → a Dataset: decode with Pillow, resize, center-crop, normalize, lay out.

Images in class subfolders get labels: the sorted subfolder names are the classes 0, 1, 2 …
Images directly in the folder (and no subfolders with images) get no labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgekit.data.dataset import Dataset, fit_to_specs
from edgekit.errors import MissingBackend, UserError
from edgekit.spec import TensorSpec

MAX_PIXELS = 50_000_000  # decoded once as float32: 50 Mpx of RGB is 600 MB; Pillow's own limit is 89 Mpx
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where the images are and how to turn each into the model's input.

    `size` (height, width) defaults to the input's static spatial dims. With `resize`, the
    shorter side is first scaled to `resize` pixels and the center `size` cropped; without
    it, the image is scaled to `size` directly. Pixels are multiplied by `scale`, then
    `(x - mean) / std` per channel (one value applies to every channel).
    """

    images: str
    input: str | None = None  # the model input fed; default: the model's only input
    size: tuple[int, ...] = ()
    resize: int | None = field(default=None, metadata={"range": (1, 16384)})
    mode: Literal["auto", "RGB", "L"] = "auto"  # auto: L for 1 channel, RGB for 3
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["auto", "NCHW", "NHWC"] = "auto"  # auto: from where the 1/3-channel axis is
    dtype: Literal["auto", "float32", "float16", "uint8", "int8"] = "auto"  # auto: the input's dtype
    limit: int | None = field(default=None, metadata={"range": (1, 10_000_000)})


def load_images(source: ImageSource, specs: tuple[TensorSpec, ...], origin: str) -> Dataset:
    """Decode and preprocess every image under `source.images` into feeds for `specs`."""
    folder = Path(source.images)
    if not folder.is_dir():
        raise UserError(f"{origin}: image folder not found: {folder}")
    spec = _input_spec(source, specs, origin)
    layout = _layout(source, spec, origin)
    channel_axis = 1 if layout == "NCHW" else 3
    channels = spec.shape[channel_axis]
    if not isinstance(channels, int) or channels not in (1, 3):
        raise UserError(f"{origin}: input '{spec.name}' [{spec.shape_text()}] has {channels} channels on the "
                        f"{layout} channel axis; images give 1 or 3: set layout")
    mode = source.mode if source.mode != "auto" else ("L" if channels == 1 else "RGB")
    if (mode == "L") != (channels == 1):
        raise UserError(f"{origin}: mode {mode} gives {1 if mode == 'L' else 3} channel(s), input '{spec.name}' takes {channels}")
    size = _size(source, spec, layout, origin)
    files, labels, classes = image_files(folder, origin)
    if source.limit:
        files, labels = files[: source.limit], (labels[: source.limit] if labels is not None else None)
    mean, std = _per_channel(source.mean, channels, "mean", origin), _per_channel(source.std, channels, "std", origin)
    if np.any(std == 0):
        raise UserError(f"{origin}: std holds a zero")
    pixels = np.stack([_decode(path, mode, size, source.resize) for path in files]).astype(np.float32)
    batch = (pixels * source.scale - mean) / std  # N, H, W, C
    if layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    dtype = spec.dtype if source.dtype == "auto" else source.dtype
    fitted = fit_to_specs({spec.name: _to_dtype(batch, dtype)}, (spec,), origin)
    if classes:
        origin = f"{origin} (classes: {', '.join(f'{i}={name}' for i, name in enumerate(classes))})"
    return Dataset(fitted, labels, origin)


def image_files(folder: Path, origin: str) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """(files, labels or None, class names): class subfolders when any hold images, else the folder's own images."""
    def images_in(path: Path) -> list[Path]:
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and images_in(p))
    top = images_in(folder)
    if classes and top:
        raise UserError(f"{origin}: {folder} holds images both at its top level and in class subfolders; keep one layout")
    if not classes:
        if not top:
            raise UserError(f"{origin}: no images ({', '.join(EXTENSIONS)}) in {folder} or its subfolders")
        return top, None, []
    files, labels = [], []
    for index, name in enumerate(classes):
        found = images_in(folder / name)
        files += found
        labels += [index] * len(found)
    return files, np.asarray(labels, dtype=np.int64), classes


def _input_spec(source: ImageSource, specs: tuple[TensorSpec, ...], origin: str) -> TensorSpec:
    if source.input is None:
        if len(specs) != 1:
            raise UserError(f"{origin}: the model has inputs {', '.join(s.name for s in specs)}; name the image one with input")
        return specs[0]
    for spec in specs:
        if spec.name == source.input:
            return spec
    raise UserError(f"{origin}: input '{source.input}' is not one of the model's inputs: {', '.join(s.name for s in specs)}")


def _layout(source: ImageSource, spec: TensorSpec, origin: str) -> str:
    if len(spec.shape) != 4:
        raise UserError(f"{origin}: input '{spec.name}' is [{spec.shape_text()}]; images need a 4-d input (N,C,H,W or N,H,W,C)")
    if source.layout != "auto":
        return source.layout
    if spec.shape[1] in (1, 3):
        return "NCHW"
    if spec.shape[3] in (1, 3):
        return "NHWC"
    raise UserError(f"{origin}: cannot tell the layout of input '{spec.name}' [{spec.shape_text()}]: set layout NCHW or NHWC")


def _size(source: ImageSource, spec: TensorSpec, layout: str, origin: str) -> tuple[int, int]:
    spatial = spec.shape[2:4] if layout == "NCHW" else spec.shape[1:3]
    if source.size:
        if len(source.size) != 2:
            raise UserError(f"{origin}: size must be [height, width], got {list(source.size)}")
        for want, got in zip(spatial, source.size):
            if isinstance(want, int) and want != got:
                raise UserError(f"{origin}: size {list(source.size)} does not fit input '{spec.name}' [{spec.shape_text()}]")
        return source.size[0], source.size[1]
    if not all(isinstance(d, int) for d in spatial):
        raise UserError(f"{origin}: input '{spec.name}' [{spec.shape_text()}] has symbolic height/width: give size [h, w]")
    return int(spatial[0]), int(spatial[1])


def _per_channel(values: tuple[float, ...], channels: int, name: str, origin: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise UserError(f"{origin}: {name} has {len(values)} values; give 1 or {channels} (one per channel)")
    return np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,))


def _decode(path: Path, mode: str, size: tuple[int, int], resize: int | None) -> np.ndarray:
    """One image as float HWC pixels in [0, 255]."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingBackend("Pillow", "images", "image folders") from None
    try:
        with Image.open(path) as opened:  # reads the header; Pillow refuses over twice its own limit here
            if opened.size[0] * opened.size[1] > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{opened.size[0]}x{opened.size[1]}")
            image = opened.convert(mode)
    except Image.DecompressionBombError:
        raise UserError(f"image {path} holds over {MAX_PIXELS:,} pixels: edgekit does not decode it (a decompression "
                        "bomb, or far larger than any model input); resize it first") from None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None
    height, width = size
    if resize is None:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    else:
        factor = resize / min(image.size)
        scaled = (max(width, round(image.size[0] * factor)), max(height, round(image.size[1] * factor)))
        image = image.resize(scaled, Image.Resampling.BILINEAR)
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _to_dtype(batch: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("uint8", "int8"):
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
    return batch.astype(dtype)
