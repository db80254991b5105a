"""ltaug.method.generate: ours@0 is the VAE decode of z_F, ours@s the shared sampler's last s steps; the set layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import synthetic_latents, write_latent_store
from PIL import Image
from helpers.stage_models import CLASSES, SPLIT, cam_store_for, save_tiny_il, save_tiny_sd

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.diffusion import prompt, sample_latents
from ltaug.backbone.latents import decode_latents, open_latents
from ltaug.backbone.model_dir import fingerprint, load_stable_diffusion
from ltaug.common.errors import ConfigError, InputError
from ltaug.data.synthetic import read_synthetic_set
from ltaug.method.fused_store import fuse_latents
from ltaug.method.fusion import FusionConfig
from ltaug.method.generate import PROVENANCE_COLUMNS, GenerateConfig, generate_set, sample_seed
from ltaug.method.pairing import PairingConfig, pair_neighbours

CPU = torch.device("cpu")
TINY_SD = BootstrapConfig(
    image_size=32, vae_channels=(8, 8, 8, 8), vae_norm_groups=4, unet_channels=(16, 32), unet_cross_attention=(True, True),
    unet_norm_groups=8, unet_attention_heads=2, text_hidden_size=16, text_layers=1, text_heads=2,
)  # fmt: skip
N_PER_CLASS = 3


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """An untrained tiny SD directory and a fused store made from latents of it: (root, model dir, fused store)."""
    root = tmp_path_factory.mktemp("generate")
    model = save_tiny_sd(root / "sd", TINY_SD, CLASSES)
    fp = fingerprint(model)
    z, labels = synthetic_latents(40, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 4, 4), seed=4)
    latents = write_latent_store(root / "train.zarr", z, labels, CLASSES, chunk=16, model_fingerprint=fp)
    il = save_tiny_il(root / "model.pt", latent_shape=(4, 4, 4), fingerprint=fp)
    cams = cam_store_for(latents, il, root / "cam.zarr")
    pair_neighbours(latents, cams, il, SPLIT, root / "pairs.csv", PairingConfig(k=2), N_PER_CLASS)
    fuse_latents(root / "pairs.csv", latents, cams, il, SPLIT, root / "fused.zarr",
                 FusionConfig(n_per_class=N_PER_CLASS, tau_h=0.4, tau_l=0.6))  # fmt: skip
    return root, model, root / "fused.zarr"


def images_of(set_dir) -> np.ndarray:
    manifest = pd.read_csv(set_dir / "manifest.csv")
    return np.stack([np.asarray(Image.open(set_dir / p)) for p in manifest["path"]])


def test_steps_0_is_the_vae_decode_of_the_fused_latents(fused, tmp_path):
    root, model, store = fused
    manifest = generate_set(store, model, tmp_path / "ours@0", 0, GenerateConfig(batch_size=4), CPU)
    group = open_latents(store)
    sd = load_stable_diffusion(model, CPU)
    want = decode_latents(sd.vae, torch.from_numpy(group["z"][:]))  # (6, 32, 32, 3)
    assert np.array_equal(images_of(tmp_path / "ours@0"), want)
    assert manifest["fused_id"].tolist() == group["ids"][:].tolist()
    assert np.array_equal(manifest[CLASSES].to_numpy(), group["labels"][:])


def test_set_layout(fused, tmp_path):
    root, model, store = fused
    generate_set(store, model, tmp_path / "ours@0", 0, GenerateConfig(), CPU)
    frame = pd.read_csv(tmp_path / "ours@0" / "manifest.csv")
    assert list(frame.columns) == ["dicom_id", *PROVENANCE_COLUMNS, "path", *CLASSES]
    assert frame["tail_class"].value_counts().to_dict() == {"Nodule": N_PER_CLASS, "Fracture": N_PER_CLASS}
    assert frame["dicom_id"].iloc[0] == "ours@0-nodule-00000" and frame["dicom_id"].is_unique
    assert frame["path"].iloc[0] == "images/ours@0-nodule-00000.png" and (frame["steps"] == 0).all()
    group = open_latents(store)
    assert frame["tail_id"].tolist() == group["tail_id"][:].tolist()
    assert frame["tail_share"].to_numpy() == pytest.approx(group["tail_share"][:], abs=1e-6)
    info = json.loads((tmp_path / "ours@0" / "set.json").read_text())
    assert info["method"] == "ours@0" and info["n_per_class"] == N_PER_CLASS and info["tail"] == SPLIT.tail
    assert info["classes"] == CLASSES and info["provenance_columns"] == PROVENANCE_COLUMNS
    image = Image.open(tmp_path / "ours@0" / frame["path"].iloc[0])
    assert image.mode == "RGB" and image.size == (32, 32)
    read_synthetic_set(tmp_path / "ours@0", CLASSES, SPLIT.tail, N_PER_CLASS)  # the evaluation's reader accepts it


@pytest.mark.parametrize("add_noise", [True, False])
def test_steps_s_runs_the_last_s_steps_of_the_shared_sampler(fused, tmp_path, add_noise):
    root, model, store = fused
    cfg = GenerateConfig(steps=[2], num_steps=4, guidance_scale=2.0, add_noise=add_noise, seed=7, batch_size=4)
    generate_set(store, model, tmp_path / "ours@2", 2, cfg, CPU)
    group = open_latents(store)
    sd = load_stable_diffusion(model, CPU)
    labels = group["tail_labels"][:]  # the prompt names the tail image's classes (generate.prompt_labels: tail)
    generators = [torch.Generator().manual_seed(sample_seed(7, i)) for i in range(len(labels))]
    z = sample_latents(sd, [prompt(row, CLASSES) for row in labels], 4, 2.0, generators,
                       z_start=torch.from_numpy(group["z"][:]), last_steps=2, add_noise=add_noise)  # fmt: skip
    got = images_of(tmp_path / "ours@2").astype(int)
    assert np.abs(got - decode_latents(sd.vae, z).astype(int)).max() <= 1  # batches of 4 vs 6: float regrouping
    assert not np.array_equal(got, decode_latents(sd.vae, torch.from_numpy(group["z"][:])))  # the UNet did act
    info = json.loads((tmp_path / "ours@2" / "set.json").read_text())
    assert info["steps"] == 2 and info["num_steps"] == 4 and info["add_noise"] is add_noise


def test_batch_size_does_not_change_the_images(fused, tmp_path):
    root, model, store = fused
    for batch in (1, 6):
        generate_set(store, model, tmp_path / f"b{batch}", 1, GenerateConfig(steps=[1], num_steps=3, batch_size=batch), CPU)
    assert np.abs(images_of(tmp_path / "b1").astype(int) - images_of(tmp_path / "b6").astype(int)).max() <= 1


def test_fused_latents_of_another_model_are_refused(fused, tmp_path):
    root, model, store = fused
    (model / "scheduler" / "scheduler_config.json").rename(tmp_path / "kept.json")
    try:
        config = json.loads((tmp_path / "kept.json").read_text()) | {"num_train_timesteps": 999}
        (model / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
        with pytest.raises(InputError, match=r"fused\.zarr: these latents were made by model"):
            generate_set(store, model, tmp_path / "ours@0", 0, GenerateConfig(), CPU)
    finally:
        (tmp_path / "kept.json").replace(model / "scheduler" / "scheduler_config.json")
    assert not (tmp_path / "ours@0").exists()


def test_config_errors():
    with pytest.raises(ConfigError, match=r"generate\.steps: 80 is more than generate\.num_steps = 75"):
        GenerateConfig(steps=[0, 80])
    with pytest.raises(ConfigError, match=r"generate\.steps"):
        GenerateConfig(steps=[-1])


def test_fig2_panels_one_figure_per_tail_class(fused, tmp_path):
    from ltaug.evaluation.fig2 import fig2_panels

    root, model, store = fused
    rows = []
    for i, labels in enumerate(open_latents(root / "train.zarr")["labels"][:]):
        path = tmp_path / "images" / f"train-{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 32), 6 * i, dtype=np.uint8)).save(path)
        rows.append({"id": f"train-{i:05d}", "path": str(path), "split": "train", **dict(zip(CLASSES, labels.tolist()))})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    sets = []
    for s in (0, 1):
        generate_set(store, model, tmp_path / f"ours@{s}", s, GenerateConfig(steps=[s], num_steps=2), CPU)
        sets.append(tmp_path / f"ours@{s}")
    paths = fig2_panels(tmp_path / "manifest.csv", SPLIT, root / "train.zarr", root / "cam.zarr", store,
                        root / "model.pt", sets, tmp_path / "fig2")  # fmt: skip
    assert [p.name for p in paths] == ["Nodule.png", "Fracture.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 400


SD1_PNDM = {"skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012}  # the scheduler_config.json SD 1.x / RoentGen ship  # fmt: skip


@pytest.mark.parametrize("name,overrides", [
    ("DDIMScheduler", {}),
    ("PNDMScheduler", SD1_PNDM),
    ("EulerDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("DDIMScheduler", {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}),  # SD 2.x 768-v
])  # fmt: skip
@pytest.mark.parametrize("s", [1, 5])
def test_the_last_s_steps_are_exactly_s_unet_calls_for_every_scheduler(tmp_path, name, overrides, s):
    import diffusers

    model = save_tiny_sd(tmp_path / "sd", TINY_SD, CLASSES)
    sd = load_stable_diffusion(model, CPU)
    sd.scheduler = getattr(diffusers, name).from_config(sd.scheduler.config, **overrides)
    calls = []
    forward = sd.unet.forward
    sd.unet.forward = lambda x, t, **kw: (calls.append((x.shape[0], float(t))), forward(x, t, **kw))[1]
    n, num_steps = 3, 75
    z = sample_latents(sd, ["nodule", "", "fracture"], num_steps, 2.0, torch.Generator().manual_seed(0),
                       z_start=torch.randn(n, 4, 4, 4), last_steps=s)  # fmt: skip
    assert z.shape == (n, 4, 4, 4) and torch.isfinite(z).all()
    assert len(calls) == s and all(batch == 2 * n for batch, _ in calls)  # one guided evaluation per step
    reference = getattr(diffusers, name).from_config(sd.scheduler.config)
    reference.set_timesteps(num_steps)
    distinct = sorted({float(t) for t in reference.timesteps}, reverse=True)  # PNDM lists one of them twice
    assert len(distinct) == num_steps
    assert [t for _, t in calls] == distinct[num_steps - s :]  # from the first of the last s of N steps to the end
    if name == "PNDMScheduler":  # what slicing the scheduler's own list gave: s + 1 steps from one level too high
        assert len(reference.timesteps[num_steps - s :]) == s + 1


def test_a_scheduler_with_two_evaluations_a_step_is_refused(tmp_path):
    import diffusers

    sd = load_stable_diffusion(save_tiny_sd(tmp_path / "sd", TINY_SD, CLASSES), CPU)
    sd.scheduler = diffusers.HeunDiscreteScheduler.from_config(sd.scheduler.config)
    with pytest.raises(ConfigError, match=r"HeunDiscreteScheduler evaluates the UNet 2 times a step"):
        sample_latents(sd, ["nodule"], 10, 2.0, None, z_start=torch.randn(1, 4, 4, 4), last_steps=2)


def test_prompt_template_is_what_the_unet_reads(fused, tmp_path, monkeypatch):
    import ltaug.method.generate

    root, model, store = fused
    seen = []
    real = ltaug.method.generate.sample_latents
    monkeypatch.setattr(ltaug.method.generate, "sample_latents", lambda sd, prompts, *a, **k: (seen.extend(prompts), real(sd, prompts, *a, **k))[1])
    cfg = GenerateConfig(steps=[1], num_steps=4, batch_size=8, prompt_template="chest x-ray showing {classes}")
    generate_set(store, model, tmp_path / "ours@1", 1, cfg, CPU)
    labels = open_latents(store)["tail_labels"][:]
    assert seen == [prompt(row, CLASSES, "chest x-ray showing {classes}") for row in labels]
    assert all(p.startswith("chest x-ray showing ") for p in seen)
    assert json.loads((tmp_path / "ours@1" / "set.json").read_text())["prompt_template"] == "chest x-ray showing {classes}"


@pytest.mark.parametrize("whose", ["tail", "fused"])
def test_the_prompt_names_the_tail_image_s_classes_unless_asked_for_the_fused_label(fused, tmp_path, monkeypatch, whose):
    import ltaug.method.generate

    root, model, store = fused
    seen = []
    real = ltaug.method.generate.sample_latents
    monkeypatch.setattr(ltaug.method.generate, "sample_latents", lambda sd, prompts, *a, **k: (seen.extend(prompts), real(sd, prompts, *a, **k))[1])
    generate_set(store, model, tmp_path / "ours@1", 1, GenerateConfig(steps=[1], num_steps=4, prompt_labels=whose), CPU)
    group = open_latents(store)
    tail_ids = group["tail_id"][:]
    manifest = dict(zip(open_latents(root / "train.zarr")["ids"][:], open_latents(root / "train.zarr")["labels"][:]))
    own = [prompt(manifest[i], CLASSES) for i in tail_ids]  # the tail image's own labels, from the latent store
    union = [prompt(row, CLASSES) for row in group["labels"][:]]  # the fused sample's (union) labels
    assert own != union  # some head neighbour adds a class the tail image does not show
    assert seen == (own if whose == "tail" else union)
    assert json.loads((tmp_path / "ours@1" / "set.json").read_text())["prompt_labels"] == whose


def test_a_composite_puts_the_masked_region_into_the_head_image():
    from ltaug.method.generate import composite

    decoded = np.full((1, 16, 16, 3), 200, dtype=np.uint8)
    head = np.full((1, 16, 16, 3), 10, dtype=np.uint8)
    tail = np.full((1, 16, 16, 3), 90, dtype=np.uint8)
    mask = np.zeros((1, 2, 2), dtype=np.uint8)
    mask[0, 0, 1] = 1  # the top-right latent cell: pixels [0:8, 8:16]
    hard = composite(decoded, mask, head, tail, "head", feather=0)
    assert (hard[0, :8, 8:] == 200).all() and (hard[0, 8:] == 10).all() and (hard[0, :8, :8] == 10).all()
    paste = composite(decoded, mask, head, tail, "paste", feather=0)
    assert (paste[0, :8, 8:] == 90).all() and (paste[0, 8:] == 10).all()
    soft = composite(decoded, mask, head, tail, "head", feather=2.0)
    assert 10 < soft[0, 7, 8, 0] < 200 and soft[0, 15, 0, 0] == 10  # a feathered edge, the far corner untouched
    assert composite(decoded, mask, head, tail, "none", 2.0) is decoded


def test_a_composite_set_keeps_the_head_image_outside_the_fused_region(fused, tmp_path):
    from ltaug.common.images import load_image
    from ltaug.data.image_store import ImagesConfig, ImageStores, decode_split, store_path

    root, model, store = fused
    group = open_latents(store)
    ids = open_latents(root / "train.zarr")["ids"][:]
    paths = []
    for i in ids:  # real images for the latent store's ids (32 px, as the tiny model decodes)
        path = tmp_path / "real" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(len(paths)).integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
        paths.append(str(path))
    manifest = pd.DataFrame({"id": [str(i) for i in ids], "path": paths, "split": "train"})
    decode_split(manifest, "train", 32, store_path(tmp_path / "images", "train", 32), ImagesConfig())
    cfg = GenerateConfig(composite="paste", feather=0.0)
    generate_set(store, model, tmp_path / "ours@0", 0, cfg, CPU, stores=ImageStores(tmp_path / "images"))
    images = images_of(tmp_path / "ours@0")
    where = dict(zip(manifest["id"], manifest["path"]))
    for f in range(len(images)):
        mask = np.kron(group["from_tail"][f], np.ones((8, 8), dtype=np.uint8)).astype(bool)  # (32, 32)
        head, tail = (load_image(where[str(group[c][f])], 32)[..., None].repeat(3, -1) for c in ("head_id", "tail_id"))
        assert np.array_equal(images[f][~mask], head[~mask]) and np.array_equal(images[f][mask], tail[mask])
    with pytest.raises(ConfigError, match="generate.composite: paste puts real pixels together .* needs the image stores"):
        generate_set(store, model, tmp_path / "again", 0, cfg, CPU)
    assert not (tmp_path / "again").exists()
