"""Reading pixels: every stage sees 8-bit images, whatever the file stores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def test_a_12_bit_image_in_a_16_bit_png_is_read_full_range_by_every_reader(tmp_path):
    """Radiograph exports store 12 significant bits (0-4095) in 16-bit PNGs: no stage may read them nearly black."""
    from ltaug.common.images import load_image, open_image, to_8bit
    from ltaug.backbone.latents import to_vae_input

    ramp = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (64, 1))  # 0..4095 across
    path = tmp_path / "twelve_bit.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16" and np.asarray(raw).max() == 4095  # stored as 16 bits
    im = open_image(path)
    pixels = np.asarray(im)
    assert im.mode == "L" and pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_array_equal(pixels[0], np.round(ramp[0] / 4095 * 255).astype(np.uint8))  # linear
    stored = load_image(str(path), 32)  # what decode_images stores for every later stage
    assert stored.min() <= 5 and stored.max() >= 250  # full range (the resize averages the end columns a little)
    x = to_vae_input(stored[None])  # the VAE's input (encode_latents)
    assert x.min() < -0.95 and x.max() > 0.95
    flat = Image.fromarray(np.full((4, 4), 700, np.uint16))
    assert np.asarray(to_8bit(flat)).max() == 0  # a constant image has no range: black, not a division by zero
    eight = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert to_8bit(eight) is eight  # 8-bit images are left as they are


@pytest.fixture
def window():
    """set_window for one test, reset after it (the window is per process)."""
    from ltaug.common.images import set_window

    yield set_window
    set_window(None)


def test_a_configured_window_maps_lo_hi_onto_0_255_for_every_image_alike(tmp_path, window):
    from ltaug.common.images import load_image
    from ltaug.common.images import open_image, to_8bit

    values = np.array([[0, 1000, 1500, 2000, 5000, 65535]], np.uint16)  # 0 below the window, 5000 and 65535 above
    im = Image.fromarray(values)
    expected = np.array([[0, 0, 128, 255, 255, 255]], np.uint8)  # (v - 1000) * 255 / 1000, clipped
    np.testing.assert_array_equal(np.asarray(to_8bit(im, (1000.0, 2000.0))), expected)
    dim = np.full((4, 4), 2048, np.uint16)  # a dim image: its own range would make 2048 white
    dim[0, 0] = 0
    path = tmp_path / "dim.png"
    Image.fromarray(dim).save(path)
    assert np.asarray(open_image(path)).max() == 255  # no window: the image's own range
    window([0, 4095])
    pixels = np.asarray(open_image(path))
    assert pixels[0, 0] == 0 and (pixels.ravel()[1:] == 128).all()  # the window: one value, one grey, in every image
    assert load_image(str(path), 4).max() == 128  # the classifier, FID and detector read through open_image
    eight = tmp_path / "eight.png"
    Image.fromarray(np.array([[3, 200]], np.uint8)).save(eight)
    assert np.asarray(open_image(eight)).tolist() == [[3, 200]]  # 8-bit images (synthetic sets) are never windowed
    window(None)
    assert np.asarray(open_image(path)).max() == 255


ORDER = r"data\.window: .* is not \[lo, hi\] with lo < hi; give the stored pixel values"  # the data section's own check
SHAPE = r"data\.window(\.0)?: .* \(\[lo, hi\] stored pixel values mapped to black and white"  # the schema's


@pytest.mark.parametrize("bad, pattern", [([5, 1], ORDER), ([3, 3], ORDER), ([0], SHAPE), ([0, 1, 2], SHAPE), (["0", 4095], SHAPE),
                                          ([True, 4095], SHAPE), ("0-4095", SHAPE)])  # fmt: skip
def test_a_bad_window_is_a_config_error_naming_the_key(bad, pattern):
    from ltaug.data.manifest import DataConfig
    from ltaug.common.errors import ConfigError
    from ltaug.common.images import set_window

    with pytest.raises(ConfigError, match=pattern):
        DataConfig(window=bad)
    with pytest.raises(ConfigError, match=ORDER):  # a stage's --window, read without the schema
        set_window(bad)


def test_every_stage_that_reads_image_files_takes_the_window_and_every_rule_passes_it():
    """The window must reach every reader of real pixels, or stages would see different images."""
    import re

    from helpers.data import REPO

    from ltaug.commands import READS_IMAGES, build_parser

    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices
    for name, sub in stages.items():
        has = any("--window" in a.option_strings for a in sub._actions)
        assert has == (name in READS_IMAGES), name
    rules = REPO / "workflow" / "rules"
    called = set()
    for smk in rules.glob("*.smk"):
        for block in re.split(r"(?m)^(?=\s*rule \w+:)", smk.read_text()):
            stage = re.search(r'stage_command\("(\w+)"', block)
            if stage and stage[1] in READS_IMAGES:
                called.add(stage[1])
                assert "window=WINDOW" in block, (smk.name, stage[1])  # the command passes --window={params.window:q}
    assert called == READS_IMAGES
