"""Reading pixels: every stage sees 8-bit images, whatever the file stores."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_a_12_bit_image_in_a_16_bit_png_is_read_full_range_by_every_reader(tmp_path):
    """Radiograph exports store 12 significant bits (0-4095) in 16-bit PNGs: no stage may read them nearly black."""
    import torch

    from ltaug.evaluate import load_image
    from ltaug.images import open_image, to_8bit
    from ltaug.latents import preprocess

    ramp = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (64, 1))  # 0..4095 across
    path = tmp_path / "twelve_bit.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16" and np.asarray(raw).max() == 4095  # stored as 16 bits
    im = open_image(path)
    pixels = np.asarray(im)
    assert im.mode == "L" and pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_array_equal(pixels[0], np.round(ramp[0] / 4095 * 255).astype(np.uint8))  # linear
    x = preprocess(im, 32)  # the VAE's input (encode_latents, SMOTE)
    assert x.min() < -0.95 and x.max() > 0.95  # full range (the resize averages the end columns a little)
    assert load_image(str(path), 32).max() >= 250  # the classifier, FID and the detector read through open_image too
    flat = Image.fromarray(np.full((4, 4), 700, np.uint16))
    assert np.asarray(to_8bit(flat)).max() == 0  # a constant image has no range: black, not a division by zero
    eight = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert to_8bit(eight) is eight  # 8-bit images are left as they are
