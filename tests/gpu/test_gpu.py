"""The GPU tier: what only a CUDA device exercises. Skipped, each with the reason, without one.

Half precision for the UNet and text encoder (diffusion.dtype) beside a float32 VAE, CUDA generators
that make every draw reproducible, the DenseNet trained under bfloat16 autocast
(eval.classifier.precision) and iterated learning, in float32 and under autocast (il.precision), all on CUDA. Run them alone with
``make test PYTEST_MARK=gpu``; ``python benchmarks/gpu.py`` measures the full-size architectures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.data import synthetic_latents, write_latent_store
from helpers.hub_layouts import write_hub_layout

from ltaug.backbone.diffusion import sample_latents
from ltaug.backbone.latents import decode_latents, encode_images
from ltaug.backbone.model_dir import load_stable_diffusion
from ltaug.evaluation.classifier import ClassifierConfig, predict, train_classifier
from ltaug.evaluation.schemes import TrainingPool
from ltaug.method.iterated import ILConfig
from ltaug.method.train_il import train_iterated

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    """SD 1.5's hub layout (RoentGen's) at tiny widths, random weights."""
    path = tmp_path_factory.mktemp("sd") / "sd15"
    write_hub_layout(path, "sd15", widths="tiny")
    return path


def images(n: int = 4, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_unet_and_text_encoder_beside_a_float32_vae(sd15, dtype):
    half, full = load_stable_diffusion(sd15, CUDA, dtype), load_stable_diffusion(sd15, CUDA, torch.float32)
    assert half.unet.dtype == dtype and half.text_encoder.dtype == dtype and half.vae.dtype == torch.float32
    x = images().to(CUDA)
    with torch.no_grad():
        z = encode_images(half.vae, x, "mean", 0, 0)
        assert torch.equal(z, encode_images(full.vae, x, "mean", 0, 0))  # the VAE is float32 in both
        runs = [sample_latents(sd, ["nodule"] * 4, 10, 3.5, torch.Generator(CUDA).manual_seed(0), z_start=z, last_steps=3)
                for sd in (half, full)]  # fmt: skip
    assert all(r.dtype == torch.float32 and torch.isfinite(r).all() for r in runs)
    # half precision changes the numbers a little, not the result
    assert torch.corrcoef(torch.stack([runs[0].flatten(), runs[1].flatten()]))[0, 1] > 0.99
    pixels = decode_latents(half.vae, runs[0], batch_size=2)
    assert pixels.shape == (4, 64, 64, 3) and pixels.dtype == np.uint8


def test_cuda_generators_make_every_draw_reproducible(sd15):
    sd = load_stable_diffusion(sd15, CUDA, torch.float16)
    x = images().to(CUDA)
    with torch.no_grad():
        # posterior samples: one seeded generator per image, so the batch does not matter
        z = encode_images(sd.vae, x, "sample", 7, 0)
        halves = torch.cat([encode_images(sd.vae, x[:2], "sample", 7, 0), encode_images(sd.vae, x[2:], "sample", 7, 2)])
        assert torch.equal(z, halves)

        def draw(seed, **kwargs):
            return sample_latents(sd, ["nodule"] * 4, 10, 3.5, torch.Generator(CUDA).manual_seed(seed), **kwargs)

        for kwargs in ({}, {"z_start": z, "last_steps": 2}):  # text-to-image, and denoising a given latent
            assert torch.equal(draw(0, **kwargs), draw(0, **kwargs))
            assert not torch.equal(draw(0, **kwargs), draw(1, **kwargs))


class TensorSource:
    """The ImageSource interface over uint8 images held in memory."""

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices) -> torch.Tensor:
        return self.pixels[torch.as_tensor(np.asarray(list(indices)), dtype=torch.long)]


def labelled_images(n: int, seed: int) -> tuple[TensorSource, np.ndarray]:
    """Images whose class is a bright square in a known quarter: a DenseNet learns it in a few steps."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    pixels = rng.integers(0, 60, (n, 3, 32, 32), dtype=np.uint8)
    pixels[labels[:, 0] == 1, :, :16, :16] = 255
    pixels[labels[:, 1] == 1, :, 16:, 16:] = 255
    return TensorSource(torch.from_numpy(pixels)), labels


def test_the_classifier_trains_under_bfloat16_autocast_on_cuda():
    (train, y), (val, yv) = labelled_images(128, 0), labelled_images(64, 1)
    cfg = ClassifierConfig(image_size=32, growth_rate=8, block_config=[2, 2], num_init_features=16, steps=60,
                           batch_size=32, eval_every=20, lr=0.005, seeds=[0], precision="bfloat16")  # fmt: skip
    pool = TrainingPool(y.astype(np.uint8), len(y), np.zeros(0, dtype=np.int64))
    model, info = train_classifier(train, pool, val, yv, ["a", "b"], cfg, 0, CUDA)
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay float32
    scores = predict(model, val, CUDA)
    assert np.isfinite(scores).all() and info["val_map"] > 0.9
    again, _ = train_classifier(train, pool, val, yv, ["a", "b"], cfg, 0, CUDA)
    assert np.allclose(predict(again, val, CUDA), scores, atol=1e-3)  # seeded on CUDA too


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_iterated_learning_trains_on_cuda(tmp_path, precision):
    classes = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Fracture"]
    from ltaug.data.classes import ClassSplit

    split = ClassSplit(classes=classes, head=classes[:2], tail=classes[2:], medium=[], train_counts={}, prevalence={}, n={})
    z, y = synthetic_latents(128, [0.4, 0.3, 0.05, 0.05], seed=0)
    zv, yv = synthetic_latents(64, [0.4, 0.3, 0.05, 0.05], seed=1)
    train = write_latent_store(tmp_path / "train.zarr", z, y, classes, "train")
    val = write_latent_store(tmp_path / "val.zarr", zv, yv, classes, "val")
    cfg = ILConfig(generations=2, interaction_epochs=2, embed_channels=8, student_width=8, student_depth=1,
                   decoder_width=8, decoder_depth=1, classifier_width=8, classifier_depth=2, precision=precision)  # fmt: skip
    result = train_iterated(train, val, split, tmp_path / "il", cfg, CUDA)
    assert next(result.model.parameters()).device.type == CUDA.type and result.generation == 2
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast: float32 weights
    again = train_iterated(train, val, split, tmp_path / "il-again", cfg, CUDA)
    for a, b in zip(result.model.parameters(), again.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
