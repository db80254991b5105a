"""Opening images with errors that name the file; shared by every stage that reads pixels.

Every stage sees 8-bit pixels. Images stored with more bits (16-bit grayscale PNGs, as
PadChest and many radiograph exports are, often holding 12 significant bits: values 0-4095)
are mapped linearly from their own value range (min to max) onto 0-255, so a 12-bit image
in a 16-bit file is not read as nearly black (dividing by 257 gives it 0-16 of 255), and
PIL's plain conversion, which clips every value above 255, does not saturate it. A configured
window (``data.window: [lo, hi]``, in stored values) maps lo..hi onto 0-255 instead, the same for
every image, clipping outside it; :func:`set_window` sets it once per process, from the stage's
``--window`` (python -m ltaug), so that every stage that reads pixels maps them alike. 8-bit
images are never rescaled: the window is for images stored with more bits.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ltaug.common.errors import ConfigError, InputError

CHECKS = ("exists", "header", "full")


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL modes of more than 8 bits per pixel

_window: tuple[float, float] | None = None  # data.window of this process (set_window); None: each image's range


def check_window(window, key: str = "data.window") -> tuple[float, float] | None:
    """``window`` as (lo, hi) with lo < hi, or None; anything else raises ConfigError naming ``key``."""
    if window is None:
        return None
    ok = isinstance(window, (list, tuple)) and len(window) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window) and window[0] < window[1]
    if not ok:
        raise ConfigError(
            f"{key}: {window!r} is not [lo, hi] with lo < hi; give the stored pixel values that map to black and "
            f"white (a 12-bit image in 16 bits: [0, 4095]), or null for each image's own range."
        )
    return float(window[0]), float(window[1])


def set_window(window) -> None:
    """Set the window :func:`open_image` maps high-bit-depth images with (None: each image's own range)."""
    global _window
    _window = check_window(window)


def get_window() -> tuple[float, float] | None:
    """The window of :func:`set_window` (None: each image's own range)."""
    return _window


def to_8bit(image: Image.Image, window: tuple[float, float] | None = None) -> Image.Image:
    """An 8-bit grayscale ("L") image of a high-bit-depth one: ``window`` (lo, hi) mapped linearly onto
    0-255 and clipped, or without one its own value range (a constant image becomes 0); 8-bit images
    (L, RGB, ...) are returned as they are."""
    if image.mode not in HIGH_BIT_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    lo, hi = window if window is not None else (float(values.min()), float(values.max()))
    scaled = np.zeros(values.shape) if hi <= lo else np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def open_image(path: str | os.PathLike, where: str = "") -> Image.Image:
    """Open and fully decode an image as 8-bit pixels (:func:`to_8bit`, with the window of
    :func:`set_window`); a missing, unreadable or truncated file raises InputError."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_8bit(im.copy(), _window)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(_message(path, exc, where)) from exc


def load_image(path: str | os.PathLike, size: int, where: str = "") -> np.ndarray:
    """(S, S) uint8 grayscale: :func:`open_image`, the shorter side resized to S (bilinear, antialiased: PIL's
    filter widens with the scale factor) and centre-cropped; an image of S x S is returned as it is.
    Every image of the data set reaches a stage through this function, once, in stage decode_images."""
    return fit(open_image(path, where), size)


def fit(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """(S, S) uint8 grayscale of an image or (H, W) uint8 array: the shorter side resized to S (bilinear,
    antialiased) and centre-cropped, as :func:`load_image` does; an image of S x S is returned as it is."""
    image = (Image.fromarray(image) if isinstance(image, np.ndarray) else image).convert("L")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def check_image(path: str | os.PathLike, level: str, where: str = "") -> None:
    """Check one image at ``level`` (see :data:`CHECKS`); raise InputError naming the file."""
    if level == "exists":
        if not os.path.isfile(path):
            raise InputError(_message(path, FileNotFoundError("no such file"), where))
        return
    if level == "full":
        open_image(path, where)
        return
    try:
        with Image.open(path) as im:
            im.verify()  # PNG: walks every chunk and its CRC, so truncation shows
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(_message(path, exc, where)) from exc


def _message(path, exc: BaseException, where: str) -> str:
    origin = f" ({where})" if where else ""
    return (
        f"{path}{origin}: cannot read the image: {exc}. The file is missing, not an image or "
        f"truncated; restore it from the original data set or remove its row from the labels file."
    )
