"""Real printed text-line crops for the zoo's OCR models, cut from scikit-image's scanned page."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def page_chunks(max_aspect: float, min_words: int = 1) -> list[np.ndarray]:
    """Grayscale uint8 crops of `skimage.data.page()`: each text line (found by row-ink projection)
    cut at word gaps into groups of words no wider than `max_aspect` × the line's height."""
    from scipy import ndimage
    from skimage import data, filters

    page = data.page()
    ink = page < filters.threshold_local(page.astype(float), 31, offset=10)
    rows = ndimage.uniform_filter1d(ink.sum(1).astype(float), 3) > 25
    chunks = []
    for top, bottom in _runs(rows):
        if bottom - top < 8:  # a ruled line, not text
            continue
        top, bottom = max(top - 2, 0), min(bottom + 2, page.shape[0])
        columns = ndimage.binary_dilation(ink[top:bottom].any(0), iterations=3)  # letters → words
        words = [(a, b) for a, b in _runs(columns) if b - a > 4]
        group: list[tuple[int, int]] = []
        for word in words + [None]:
            if word is None or (group and word[1] - group[0][0] > max_aspect * (bottom - top)):
                if len(group) >= min_words:
                    chunks.append(page[top:bottom, max(group[0][0] - 2, 0):group[-1][1] + 2])
                group = []
            if word is not None:
                group.append(word)
    return chunks


def fit_line(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize `crop` to `height` keeping its aspect (at most `width` wide), then pad on the right by
    repeating its last column (EasyOCR's NormalizePAD); uint8 [height, width]."""
    scaled = min(width, max(1, round(crop.shape[1] * height / crop.shape[0])))
    line = np.asarray(Image.fromarray(crop).resize((scaled, height), Image.BICUBIC))
    return np.concatenate([line, np.repeat(line[:, -1:], width - scaled, axis=1)], axis=1)
