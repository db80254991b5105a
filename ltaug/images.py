"""Opening images with errors that name the file; shared by every stage that reads pixels."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from ltaug.errors import InputError

CHECKS = ("exists", "header", "full")


def open_image(path: str | os.PathLike, where: str = "") -> Image.Image:
    """Open and fully decode an image; a missing, unreadable or truncated file raises InputError."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(_message(path, exc, where)) from exc


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
