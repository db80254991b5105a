"""ltaug.backbone.bootstrap: a tiny bootstrap end to end, save -> load identity, tokenizer, samplers, sampling."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from safetensors.torch import load_file

from ltaug.backbone.bootstrap import bootstrap_diffusion, bootstrap_unet, load_images
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_models import (
    NO_FINDING_PROMPT,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    check_prompt_lengths,
    save_model,
    training_prompts,
)
from ltaug.backbone.bootstrap_training import psnr, random_crops, train_vae, vae_loss
from ltaug.backbone.diffusion import encode_prompts, prompt, sample_latents
from ltaug.backbone.model_dir import COMPONENTS, fingerprint, load_stable_diffusion, load_vae
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.sampling import balanced_indices

CPU = torch.device("cpu")
CLASSES = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Calcification of the Aorta", "No Finding"]
TINY = BootstrapConfig(
    image_size=32, threads=2, vae_channels=(8, 8, 8, 8), vae_norm_groups=4, vae_steps=4, vae_batch_size=4,
    unet_channels=(16, 32), unet_cross_attention=(True, True), unet_norm_groups=8, unet_attention_heads=2,
    text_hidden_size=16, text_layers=1, text_heads=2, unet_steps=4, unet_batch_size=8,
    sample_steps=3, samples_per_class=2, reconstruction_images=2, vae_precision="float32",  # the same on every CPU
)  # fmt: skip


def write_manifest(root, n_train: int = 16, n_val: int = 4) -> str:
    """Images of 32x32 and a manifest in the layout of results/data/manifest.csv (id, path, split, classes)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            labels = {"Cardiomegaly": i % 2, "Pleural Effusion": int(i % 3 == 0), "Nodule": int(i % 4 == 1),
                      "Calcification of the Aorta": int(i % 8 == 5)}  # fmt: skip
            labels["No Finding"] = int(not any(labels.values()))
            pixels = 60 + 40 * np.sin(xx / 5 + i) + 10 * rng.standard_normal((32, 32))
            if labels["Nodule"]:
                pixels[(yy - 12) ** 2 + (xx - 10) ** 2 < 6] = 230
            path = root / "images" / split / f"{split}-{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
            rows.append({"id": f"{split}-{i:03d}", "path": str(path), "split": split, **labels})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return str(manifest)


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    """One tiny bootstrap run, both stages: (manifest, model dir, samples dir, returned metrics); the VAE
    stage's outputs lie beside them (vae/, train_latents.npy, vae_samples/)."""
    root = tmp_path_factory.mktemp("boot")
    manifest = write_manifest(root / "data")
    metrics = bootstrap_diffusion(manifest, root / "out", TINY, CPU)
    return manifest, root / "out" / "model", root / "out" / "samples", metrics


def _pixels(paths) -> torch.Tensor:
    """Independent of load_images: grayscale PNGs as (N, 3, S, S) in [-1, 1]."""
    gray = np.stack([np.asarray(Image.open(p).convert("L")) for p in paths]).astype(np.float32)
    return torch.from_numpy(gray / 127.5 - 1)[:, None].expand(-1, 3, -1, -1)


# ---------------------------------------------------------------------------- the stage


def test_writes_loadable_model_and_samples(boot):
    manifest, model, samples, metrics = boot
    assert sorted(os.listdir(model)) == sorted([*COMPONENTS, "model_index.json"])
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert not [p for p in os.listdir(model.parent) if ".tmp-" in p]  # nothing left of the atomic writes
    sd = load_stable_diffusion(model, CPU)
    assert sd.vae.config.block_out_channels == [8, 8, 8, 8] and sd.unet.config.sample_size == 4
    assert sd.scheduler.config.beta_schedule == "scaled_linear" and sd.scheduler.config.beta_end == 0.012

    assert set(os.listdir(samples)) == {f"{c.replace(' ', '_')}.png" for c in CLASSES} | {"metrics.json"}
    assert set(os.listdir(samples.parent / "vae_samples")) == {"reconstructions.png", "metrics.json"}
    assert Image.open(samples / "Calcification_of_the_Aorta.png").size == (2 * 32 + 2, 32)  # 2 samples, 2 px gap
    recons = Image.open(samples.parent / "vae_samples" / "reconstructions.png")
    assert recons.size == (2 * 32 + 2, 2 * 32 + 2)  # originals over recons
    assert json.loads((samples / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert set(metrics["wall_s"]) == {"vae_stage", "unet_stage"}
    assert set(metrics["wall_s"]["vae_stage"]) == {"load", "vae", "latents", "save", "reconstructions", "total"}
    assert set(metrics["wall_s"]["unet_stage"]) == {"load", "unet", "save", "samples", "total"}
    assert [s for s, _ in metrics["losses"]["vae"]] == [1, 2, 3, 4] and len(metrics["losses"]["unet"]) == 4
    vae_metrics = json.loads((samples.parent / "vae_samples" / "metrics.json").read_text())
    assert metrics["val_psnr_db"] == vae_metrics["val_psnr_db"] and metrics["losses"]["vae"] == vae_metrics["losses"]["vae"]


def test_vae_stage_is_the_model_without_unet_weights(boot):
    """What the VAE-only stages read while the UNet trains: the finished model's configs, tokenizer,
    scheduler and VAE byte for byte, hence its fingerprint; no UNet or text encoder weights."""
    _, model, _, _ = boot
    vae_dir = model.parent / "vae"
    assert fingerprint(vae_dir) == fingerprint(model)
    for part in ("vae", "tokenizer", "scheduler"):
        assert sorted(os.listdir(vae_dir / part)) == sorted(os.listdir(model / part))
        for name in os.listdir(model / part):
            assert (vae_dir / part / name).read_bytes() == (model / part / name).read_bytes(), (part, name)
    for part in ("unet", "text_encoder"):
        assert os.listdir(vae_dir / part) == ["config.json"]
        assert (vae_dir / part / "config.json").read_bytes() == (model / part / "config.json").read_bytes()
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        a, b = load_vae(vae_dir, CPU), load_vae(model, CPU)
        assert torch.equal(a.encode(x).latent_dist.mean, b.encode(x).latent_dist.mean)
    with pytest.raises(InputError, match=r"vae/unet: no plain weights file"):
        load_stable_diffusion(vae_dir, CPU)


def test_unet_trains_on_the_vae_stage_latents(boot):
    """train_latents.npy: the training split's scaled posterior means, in manifest order, as the saved VAE
    encodes them (so the UNet stage needs no VAE)."""
    manifest, model, _, _ = boot
    sd = load_stable_diffusion(model, CPU)
    train = pd.read_csv(manifest).query("split == 'train'")
    stored = np.load(model.parent / "train_latents.npy")
    with torch.no_grad():
        z = sd.vae.encode(_pixels(train["path"])).latent_dist.mode() * sd.vae.config.scaling_factor
    assert stored.dtype == np.float32 and stored.shape == (len(train), 4, 4, 4)
    np.testing.assert_allclose(stored, z.numpy(), atol=1e-5)


def test_unet_stage_refuses_latents_of_another_manifest(boot, tmp_path):
    manifest, model, _, _ = boot
    out = model.parent
    other = write_manifest(tmp_path / "other", n_train=7)
    with pytest.raises(InputError, match=r"train_latents.npy: \d+ latents, but .* has 7 training images; rerun bootstrap_vae"):
        bootstrap_unet(other, out / "vae", out / "train_latents.npy", out / "vae_samples", tmp_path / "m", tmp_path / "s", TINY, CPU)
    assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()


def test_unet_stage_refuses_a_vae_stage_of_other_configs(boot, tmp_path):
    """A UNet architecture that differs from the one the VAE stage wrote would give latents and model
    different fingerprints: an error, and no model directory."""
    manifest, model, _, _ = boot
    out = model.parent
    other = BootstrapConfig(**{**vars(TINY), "text_layers": 2})
    with pytest.raises(InputError, match="other configs than this VAE stage's directory holds.*rerun bootstrap_vae"):
        bootstrap_unet(manifest, out / "vae", out / "train_latents.npy", out / "vae_samples", tmp_path / "m", tmp_path / "s", other, CPU)
    assert not (tmp_path / "m").exists() and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_val_psnr_is_that_of_the_saved_vae(boot):
    manifest, model, _, metrics = boot
    sd = load_stable_diffusion(model, CPU)
    val = pd.read_csv(manifest).query("split == 'val'")
    x = _pixels(val["path"])
    with torch.no_grad():
        y = sd.vae.decode(sd.vae.encode(x).latent_dist.mode()).sample
    recon = ((y.clamp(-1, 1) + 1) * 127.5).round().numpy()
    mse = ((recon - (x.numpy() + 1) * 127.5) ** 2).reshape(len(x), -1).mean(axis=1)
    assert metrics["val_psnr_db"] == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), abs=2e-3)


def test_scaling_factor_is_inverse_latent_std(boot):
    manifest, model, _, _ = boot
    sd = load_stable_diffusion(model, CPU)
    train = pd.read_csv(manifest).query("split == 'train'")
    with torch.no_grad():
        z = sd.vae.encode(_pixels(train["path"])).latent_dist.mode()
    assert sd.vae.config.scaling_factor == pytest.approx(1 / z.std().item(), rel=1e-5)


def test_same_seed_same_model(tmp_path, boot):
    manifest, model, _, _ = boot
    bootstrap_diffusion(manifest, tmp_path / "same", TINY, CPU)
    bootstrap_diffusion(manifest, tmp_path / "other", BootstrapConfig(**{**vars(TINY), "seed": 1}), CPU)
    for part in ("vae", "unet", "text_encoder"):
        file = next(p.name for p in (model / part).iterdir() if p.suffix == ".safetensors")
        a, b, c = (load_file(d / part / file) for d in (model, tmp_path / "same" / "model", tmp_path / "other" / "model"))
        assert all(torch.equal(a[k], b[k]) for k in a), part
        assert not all(torch.equal(a[k], c[k]) for k in a), part


def test_no_val_split(tmp_path):
    manifest = write_manifest(tmp_path, n_val=0)
    with pytest.raises(InputError, match="no val images"):
        bootstrap_diffusion(manifest, tmp_path / "out", TINY, CPU)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- save -> load


def test_save_load_identical(tmp_path):
    torch.manual_seed(0)
    tokenizer = build_tokenizer(CLASSES, TINY.max_prompt_tokens)
    vae, unet, text_encoder = build_vae(TINY).eval(), build_unet(TINY).eval(), build_text_encoder(TINY, tokenizer).eval()
    vae.register_to_config(scaling_factor=0.37)
    save_model(tmp_path / "m", vae, unet, text_encoder, tokenizer, build_scheduler())
    sd = load_stable_diffusion(tmp_path / "m", CPU)
    vae.to(memory_format=torch.channels_last)  # as load_vae lays it out (test_model_dirs: the same values)

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    z = torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(vae.encode(x).latent_dist.mean, sd.vae.encode(x).latent_dist.mean)
        assert torch.equal(vae.encode(x).latent_dist.logvar, sd.vae.encode(x).latent_dist.logvar)
        assert torch.equal(vae.decode(z).sample, sd.vae.decode(z).sample)
        hidden = encode_prompts(tokenizer, text_encoder, ["nodule", "cardiomegaly, pleural effusion"])
        assert torch.equal(hidden, encode_prompts(sd.tokenizer, sd.text_encoder, ["nodule", "cardiomegaly, pleural effusion"]))
        assert torch.equal(unet(z, t, encoder_hidden_states=hidden).sample, sd.unet(z, t, encoder_hidden_states=hidden).sample)
    assert sd.vae.config.scaling_factor == 0.37


# ---------------------------------------------------------------------------- tokenizer


def test_tokenizer_word_level():
    tok = build_tokenizer(CLASSES, 16)
    vocab = tok.get_vocab()
    words = ["cardiomegaly", "pleural", "effusion", "nodule", "calcification", "of", "the", "aorta", "no", "finding"]
    ids = [tok.convert_tokens_to_ids(w) for w in words]
    assert tok.unk_token_id not in ids and len(set(ids)) == len(words)
    assert set(vocab) == {*words, ",", "<pad>", "<bos>", "<unk>", "<eos>"}

    enc = tok("Nodule, calcification of the aorta").input_ids
    assert enc == [tok.bos_token_id, vocab["nodule"], vocab[","], *(vocab[w] for w in words[4:8]), tok.eos_token_id]
    assert tok("pneumonia nodule").input_ids == [tok.bos_token_id, tok.unk_token_id, vocab["nodule"], tok.eos_token_id]
    padded = tok("", padding="max_length", max_length=16).input_ids
    assert padded == [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * 14
    assert tok.eos_token_id != 2  # CLIPTextTransformer treats eos id 2 as the legacy "argmax" case


def test_saved_tokenizer_gives_same_ids(boot):
    _, model, _, _ = boot
    sd = load_stable_diffusion(model, CPU)
    tok = build_tokenizer(CLASSES, TINY.max_prompt_tokens)
    for text in ("cardiomegaly, nodule", "no finding", "", "fracture"):
        assert sd.tokenizer(text).input_ids == tok(text).input_ids
    assert sd.tokenizer.model_max_length == TINY.max_prompt_tokens


def test_prompt_too_long():
    tok = build_tokenizer(CLASSES, 6)
    labels = np.array([[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]])  # bos + 6 words + eos = 8 tokens
    with pytest.raises(ConfigError, match="diffusion.bootstrap.max_prompt_tokens.*at least 8"):
        check_prompt_lengths(tok, labels, CLASSES)
    check_prompt_lengths(build_tokenizer(CLASSES, 8), labels, CLASSES)


# ---------------------------------------------------------------------------- samplers


def test_training_prompts_empty_share():
    rng = np.random.default_rng(0)
    labels = (rng.random((20_000, len(CLASSES) - 1)) < 0.2).astype(np.uint8)
    labels = np.column_stack([labels, labels.sum(axis=1) == 0]) * np.array([1, 1, 1, 1, 0])  # some all-zero rows
    prompts = training_prompts(labels, CLASSES, 0.15, torch.Generator().manual_seed(0))
    empty = np.array([p == "" for p in prompts])
    # binomial std of the share is sqrt(0.15 * 0.85 / 20000) = 0.0025: 4 std
    assert abs(empty.mean() - 0.15) < 0.01
    for p, row in zip(prompts, labels):
        assert p in ("", prompt(row, CLASSES) or NO_FINDING_PROMPT)
    assert NO_FINDING_PROMPT in prompts
    assert "" not in training_prompts(labels[:1000], CLASSES, 0.0, torch.Generator().manual_seed(0))


def test_balanced_indices():
    labels = np.zeros((1000, 3), dtype=np.uint8)
    labels[:900, 0] = 1  # head
    labels[900:990, 1] = 1  # medium
    labels[990:, 2] = 1  # tail: 10 rows
    g = torch.Generator().manual_seed(0)
    group = lambda idx: np.searchsorted([900, 990], idx.numpy(), side="right")  # noqa: E731
    balanced = np.bincount(group(balanced_indices(labels, 30_000, 1.0, g)), minlength=3) / 30_000
    natural = np.bincount(group(balanced_indices(labels, 30_000, 0.0, g)), minlength=3) / 30_000
    # std of a share p over 30000 draws is <= 0.003: tolerance 0.015
    np.testing.assert_allclose(balanced, [1 / 3] * 3, atol=0.015)
    np.testing.assert_allclose(natural, [0.9, 0.09, 0.01], atol=0.015)
    tail = balanced_indices(labels, 5_000, 1.0, g).numpy()
    assert set(tail[tail >= 990]) == set(range(990, 1000))  # every tail row is used


# ---------------------------------------------------------------------------- sampling


def _manual_ddim(sd, prompts, steps, generator):
    """DDIM with the conditional model alone, written out without guidance."""
    scheduler = DDIMScheduler.from_config(sd.scheduler.config)
    scheduler.set_timesteps(steps)
    hidden = encode_prompts(sd.tokenizer, sd.text_encoder, prompts)
    z = torch.randn((len(prompts), 4, sd.latent_size, sd.latent_size), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(sd.unet(z, t, encoder_hidden_states=hidden).sample, t, z, eta=0.0).prev_sample
    return z


def test_sample_latents_text_to_image(boot):
    _, model, _, _ = boot
    sd = load_stable_diffusion(model, CPU)
    prompts = ["nodule", "cardiomegaly, pleural effusion", "no finding"]

    def sample(guidance, seed):
        return sample_latents(sd, prompts, 4, guidance, torch.Generator().manual_seed(seed))

    z1 = sample(1.0, 7)
    assert z1.shape == (3, 4, 4, 4)
    torch.testing.assert_close(z1, _manual_ddim(sd, prompts, 4, torch.Generator().manual_seed(7)), atol=1e-5, rtol=1e-5)
    # guidance 0 is the unconditional model: the formula's two terms are not swapped
    torch.testing.assert_close(sample(0.0, 7), _manual_ddim(sd, [""] * 3, 4, torch.Generator().manual_seed(7)), atol=1e-5, rtol=1e-5)
    assert torch.equal(sample(3.0, 7), sample(3.0, 7))
    assert not torch.equal(sample(3.0, 7), sample(3.0, 8))
    assert sd.scheduler.num_inference_steps is None  # the loaded scheduler is left as it was


def test_sample_latents_last_steps_of_n(boot):
    """Denoising a given latent runs exactly the last s of N DDIM steps, from z noised to the first of them."""
    _, model, _, _ = boot
    sd = load_stable_diffusion(model, CPU)
    prompts = ["nodule", "fracture"]
    z0 = torch.randn((2, 4, sd.latent_size, sd.latent_size), generator=torch.Generator().manual_seed(1))
    n, s = 10, 3

    scheduler = DDIMScheduler.from_config(sd.scheduler.config)
    scheduler.set_timesteps(n)
    tail = scheduler.timesteps[n - s :]
    assert len(tail) == s and tail[-1] == scheduler.timesteps[-1]
    hidden = encode_prompts(sd.tokenizer, sd.text_encoder, prompts)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
    z = scheduler.add_noise(z0, noise, tail[:1].repeat(2))
    with torch.no_grad():
        for t in tail:
            z = scheduler.step(sd.unet(z, t, encoder_hidden_states=hidden).sample, t, z, eta=0.0).prev_sample

    got = sample_latents(sd, prompts, n, 1.0, torch.Generator().manual_seed(5), z_start=z0, last_steps=s)
    torch.testing.assert_close(got, z, atol=1e-5, rtol=1e-5)
    assert torch.equal(sample_latents(sd, prompts, n, 3.0, None, z_start=z0, last_steps=0), z0)
    # without added noise the first step sees z0 itself
    z = z0.clone()
    with torch.no_grad():
        t = scheduler.timesteps[-1]
        z = scheduler.step(sd.unet(z, t, encoder_hidden_states=hidden).sample, t, z, eta=0.0).prev_sample
    got = sample_latents(sd, prompts, n, 1.0, None, z_start=z0, last_steps=1, add_noise=False)
    torch.testing.assert_close(got, z, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="last_steps"):
        sample_latents(sd, prompts, n, 1.0, None, z_start=z0, last_steps=n + 1)


# ---------------------------------------------------------------------------- helpers and config


def test_load_images(tmp_path):
    exact = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(exact).save(tmp_path / "a.png")
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 200  # the centre square of a 40x20 image
    Image.fromarray(wide).save(tmp_path / "b.png")
    rows = pd.DataFrame({"id": ["a", "b"], "split": "train", "path": [str(tmp_path / "a.png"), str(tmp_path / "b.png")]})
    out = load_images(rows, 32, None, "m.csv")
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.uint8
    assert np.array_equal(out[0, 0].numpy(), exact)
    assert (out[1, 0, :, 2:-2].numpy() > 190).all()  # centre crop keeps the bright middle
    with pytest.raises(InputError, match="missing.png"):
        load_images(pd.DataFrame({"id": ["m"], "split": "train", "path": [str(tmp_path / "missing.png")]}), 32, None, "m.csv")


def test_psnr():
    a = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0] += 1  # MSE 1
    b[1] += 10  # MSE 100
    np.testing.assert_allclose(psnr(a, b), [20 * np.log10(255), 20 * np.log10(255) - 20])


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("image_size", 30, "image_size: 30 is not a multiple of 8"),
        ("vae_channels", (8, 8, 8), r"vae_channels: \[8, 8, 8\] is too short \(.*4 blocks"),
        ("vae_norm_groups", 3, "vae_norm_groups: 3 does not divide"),
        ("unet_cross_attention", (True,), "unet_cross_attention: 1 entries"),
        ("unet_cross_attention", (False,) * len(BootstrapConfig().unet_channels), r"unet_cross_attention: \[False, False, False\] does not contain .*at least one true"),
        ("empty_prompt_share", 1.0, "empty_prompt_share"),
        ("vae_balance", 1.5, "vae_balance: 1.5 is greater than the maximum of 1"),
        ("unet_lr", 0, "unet_lr: 0 is less than or equal to the minimum of 0"),
        ("unet_lr", float("nan"), "unet_lr: nan is not of type 'number'"),
        ("image_size", 64.0, "image_size: 64.0 is not of type 'integer'"),
        ("threads", 0, "threads: 0 is less than the minimum of 1"),
        ("vae_steps", 0, "vae_steps: 0 is less than the minimum of 1 \\(optimiser steps\\)"),
        ("text_heads", 3, "text_heads: 3 does not divide"),
        ("unet_attention_heads", 3, "unet_attention_heads: 3 does not divide"),
        ("vae_crop_size", 12, "vae_crop_size: 12 is not a multiple of 8"),
        ("vae_crop_size", 136, r"vae_crop_size: 136 is larger than the images \(latents.image_size 128\)"),
        ("vae_precision", "float16", r"vae_precision: 'float16' is not one of \['auto', 'float32', 'bfloat16'\]"),
    ],
)
def test_config_errors(key, value, match):
    with pytest.raises(ConfigError, match=f"diffusion.bootstrap.{match}"):
        BootstrapConfig(**{key: value})


def test_config_lists_become_tuples():
    cfg = BootstrapConfig(vae_channels=[8, 8, 8, 8], vae_norm_groups=4, unet_channels=[32, 64], unet_cross_attention=[True, True])
    assert cfg.vae_channels == (8, 8, 8, 8) and cfg.unet_cross_attention == (True, True)


def test_random_crops_are_slices_on_the_latent_grid():
    images = torch.arange(2 * 1 * 32 * 32, dtype=torch.int64).reshape(2, 1, 32, 32)
    generator = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(50):
        crops = random_crops(images, 16, generator)
        assert crops.shape == (2, 1, 16, 16)
        for image, crop in zip(images, crops):
            y, x = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 32)  # the crop's first pixel names its corner
            assert y % 8 == 0 and x % 8 == 0 and y + 16 <= 32 and x + 16 <= 32
            assert torch.equal(crop, image[:, y : y + 16, x : x + 16])
            corners.add((y, x))
    assert corners == {(y, x) for y in (0, 8, 16) for x in (0, 8, 16)}  # every grid corner, none off it
    assert torch.equal(random_crops(images, 32, generator), images)  # a crop of the whole image is the image


def test_train_vae_on_crops_is_seeded_and_sees_crops(monkeypatch):
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    labels = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1, 2]]
    cfg = dataclasses.replace(TINY, vae_crop_size=16, vae_steps=3)
    seen = []
    monkeypatch.setattr("ltaug.backbone.bootstrap_training.vae_loss", lambda vae, x, cfg, g: seen.append(x.shape) or vae(x).sample.mean())
    torch.manual_seed(0)
    first = train_vae(build_vae(cfg), images, labels, cfg, CPU)
    assert seen == [(cfg.vae_batch_size, 3, 16, 16)] * 3
    torch.manual_seed(0)
    assert train_vae(build_vae(cfg), images, labels, cfg, CPU) == first


def test_bfloat16_vae_training_keeps_float32_weights_and_the_float32_loss():
    """bfloat16 autocast changes the numbers of the passes, not what is trained: the loss of the
    same batch and draw agrees with float32 to bfloat16's ~3 digits, the weights stay float32."""
    cfg = dataclasses.replace(TINY, vae_precision="bfloat16", vae_steps=2)
    torch.manual_seed(0)
    vae = build_vae(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        exact = vae_loss(vae, x, cfg, torch.Generator().manual_seed(1)).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approx = vae_loss(vae, x, cfg, torch.Generator().manual_seed(1))
    assert approx.dtype == torch.float32
    assert approx.item() == pytest.approx(exact, rel=0.02)
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    losses = train_vae(vae, images, np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1, 2]], cfg, CPU)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert {p.dtype for p in vae.parameters()} == {torch.float32}


@pytest.mark.parametrize("precision, native, autocast", [("float32", True, False), ("bfloat16", False, True),
                                                       ("auto", False, False), ("auto", True, True)])  # fmt: skip
def test_train_vae_runs_its_passes_in_the_configured_precision(monkeypatch, precision, native, autocast):
    """An explicit precision wins; auto autocasts only where the CPU computes bfloat16 natively (detection faked)."""
    cfg = dataclasses.replace(TINY, vae_precision=precision, vae_steps=2)
    monkeypatch.setattr("ltaug.common.precision.native_bfloat16", lambda device, **probe: native)
    seen = []

    def loss(vae, x, cfg, generator):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return vae(x).sample.float().mean()

    monkeypatch.setattr("ltaug.backbone.bootstrap_training.vae_loss", loss)
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    train_vae(build_vae(cfg), images, np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1, 2]], cfg, CPU)
    assert [on for on, _ in seen] == [autocast] * 2
    if autocast:
        assert {dtype for _, dtype in seen} == {torch.bfloat16}
