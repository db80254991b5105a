"""Real model directories: SD 1.5 / RoentGen and SD 2.1 as the hub stores them load through the one loader.

The directories are built from the published component configs with tiny widths (tests/helpers/hub_layouts.py):
model_index.json with safety_checker and feature_extractor entries, .bin or .safetensors weights, an
fp16 variant, a PNDM or a v-prediction DDIM scheduler, CLIP tokenizer files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.hub_layouts import write_hub_layout

from ltaug.backbone.diffusion import DiffusionConfig, check_prompt_template, prompt, sample_latents
from ltaug.backbone.model_dir import load_stable_diffusion, load_vae, weight_variant  # fmt: skip
from ltaug.common.config import from_dict
from ltaug.common.errors import ConfigError, InputError
from ltaug.method.generate import GenerateConfig

CPU = torch.device("cpu")


def same_weights(model, state: dict, half: bool = False) -> bool:
    loaded = model.state_dict()
    if loaded.keys() != state.keys():
        return False
    return all(torch.equal(loaded[k], state[k].half().float() if half else state[k]) for k in state)


@pytest.mark.parametrize("family, scheduler, prediction", [("sd15", "PNDMScheduler", "epsilon"),
                                                            ("sd21", "DDIMScheduler", "v_prediction")])  # fmt: skip
@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_hub_layout_loads_and_denoises(tmp_path, one_thread, family, scheduler, prediction, weights):
    states = write_hub_layout(tmp_path / "model", family, weights=weights, variant="fp16")
    sd = load_stable_diffusion(tmp_path / "model", CPU)
    assert type(sd.scheduler).__name__ == scheduler and sd.scheduler.config.prediction_type == prediction
    for name in ("unet", "vae", "text_encoder"):  # the plain files, not the fp16 ones beside them
        assert same_weights(getattr(sd, name), states[name]), name
    assert sd.tokenizer.model_max_length == 77 and type(sd.tokenizer).__name__.startswith("CLIPTokenizer")
    # an image through the VAE, then ours@1: one guided UNet evaluation
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = sd.vae.encode(x).latent_dist.mean * sd.vae.config.scaling_factor
    assert z.shape == (2, 4, 8, 8)
    calls = []
    forward = sd.unet.forward
    sd.unet.forward = lambda x, t, **kw: (calls.append(x.shape[0]), forward(x, t, **kw))[1]
    texts = [prompt(np.array([1, 0]), ["Nodule", "Fracture"], "chest x-ray showing {classes}")] * 2
    out = sample_latents(sd, texts, 75, 3.5, torch.Generator().manual_seed(0), z_start=z, last_steps=1)
    assert calls == [4] and out.shape == z.shape and torch.isfinite(out).all()


def test_fp16_variant_is_read_and_upcast(tmp_path):
    states = write_hub_layout(tmp_path / "model", "sd15", variant="fp16", plain=False)  # an fp16-only download
    with pytest.raises(InputError, match=r"unet: no plain weights file; found diffusion_pytorch_model.fp16"
                                         r".safetensors. Set diffusion.variant to 'fp16'"):  # fmt: skip
        load_stable_diffusion(tmp_path / "model", CPU)
    sd = load_stable_diffusion(tmp_path / "model", CPU, variant="fp16")
    assert sd.unet.dtype == sd.text_encoder.dtype == sd.vae.dtype == torch.float32
    for name in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(sd, name), states[name], half=True), name
    assert same_weights(load_vae(tmp_path / "model", CPU, "fp16"), states["vae"], half=True)


def test_vae_loads_channels_last_and_encodes_and_decodes_as_a_contiguous_copy(tmp_path, one_thread):
    """Channels-last weights (about 1.4x faster encoding on the CPU, benchmarks/memory_format.py) are a
    layout only: the same latents and images as the VAE with contiguous weights, to float rounding."""
    states = write_hub_layout(tmp_path / "model", "sd15")
    vae = load_vae(tmp_path / "model", CPU)
    convs = [m.weight for m in vae.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (a 1x1 kernel is both)
    plain = type(vae).from_config(vae.config).eval()
    plain.load_state_dict(states["vae"])
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z, z_plain = vae.encode(x).latent_dist.mean, plain.encode(x).latent_dist.mean
        assert (z - z_plain).abs().max() < 1e-5
        assert (vae.decode(z).sample - plain.decode(z).sample).abs().max() < 1e-5


def test_missing_variant_names_the_files_and_the_fix(tmp_path):
    write_hub_layout(tmp_path / "model", "sd15", weights="bin")
    with pytest.raises(InputError, match=r"vae: no weights of variant 'fp16' \(diffusion.variant\); found "
                                         r"diffusion_pytorch_model.bin. Set diffusion.variant to \"\""):  # fmt: skip
        load_vae(tmp_path / "model", CPU, "fp16")
    (tmp_path / "model" / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(InputError, match=r"unet: no plain weights file; found no .safetensors or .bin file. Copy"):
        load_stable_diffusion(tmp_path / "model", CPU)


@pytest.mark.parametrize("name, variant", [
    ("diffusion_pytorch_model.safetensors", ""), ("pytorch_model.bin", ""), ("model.fp16.safetensors", "fp16"),
    ("diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "fp16"),
    ("diffusion_pytorch_model-00001-of-00002.safetensors", ""), ("model.safetensors.index.json", ""),
    ("model.safetensors.index.fp16.json", "fp16"), ("config.json", None), ("preprocessor_config.json", None),
])  # fmt: skip
def test_weight_file_variants(name, variant):
    assert weight_variant(name) == variant


def test_prompt_template():
    classes = ["Cardiomegaly", "Edema", "Nodule"]
    assert prompt([1, 0, 1], classes) == "cardiomegaly, nodule"
    assert prompt([1, 0, 1], classes, "chest x-ray showing {classes}") == "chest x-ray showing cardiomegaly, nodule"
    assert prompt([0, 0, 0], classes, "chest x-ray showing {classes}") == ""  # the unconditional prompt stays empty
    assert check_prompt_template("{{literal}} {classes}") == "{{literal}} {classes}"
    with pytest.raises(ConfigError, match=r"generate.prompt_template: 'chest x-ray' does not match .*\{classes\} becomes"):
        GenerateConfig(prompt_template="chest x-ray")  # the schema's pattern: no {classes}
    with pytest.raises(ConfigError, match=r"generate.prompt_template: .* exactly once .*none"):
        check_prompt_template("chest x-ray")  # what a stage's --prompt-template meets, without the schema
    with pytest.raises(ConfigError, match=r"generate.prompt_template: .* exactly once .*\['class'\]"):
        check_prompt_template("{class}")
    for bad, found in (("{classes} and {classes}", "classes', 'classes"), ("{classes} {view}", "view")):
        with pytest.raises(ConfigError, match=rf"generate.prompt_template: .* exactly once .*{found}"):
            GenerateConfig(prompt_template=bad)
    with pytest.raises(ConfigError, match="is not a format string"):
        GenerateConfig(prompt_template="{classes} {")


def test_variant_config():
    assert from_dict(DiffusionConfig, {"variant": "fp16"}, "diffusion").variant == "fp16"
    with pytest.raises(ConfigError, match=r"diffusion.variant: 'fp16.safetensors' does not match .*\(weights variant .*, e.g. fp16"):
        DiffusionConfig(variant="fp16.safetensors")
