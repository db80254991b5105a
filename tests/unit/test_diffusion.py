"""ltaug.backbone.diffusion: device and dtype choice, the checks before loading, fingerprint, prompts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from helpers.stage_models import save_tiny_sd
from transformers import CLIPTokenizer

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.diffusion import DiffusionConfig, encode_prompts, pick_device, prompt, torch_dtype
from ltaug.backbone.model_dir import COMPONENTS, fingerprint, load_stable_diffusion
from ltaug.common.errors import ConfigError, InputError

CLASSES = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Calcification of the Aorta", "No Finding"]
TINY = BootstrapConfig(
    image_size=32, vae_channels=(8, 8, 8, 8), vae_norm_groups=4, unet_channels=(16, 32), unet_cross_attention=(True, True),
    unet_norm_groups=8, unet_attention_heads=2, text_hidden_size=16, text_layers=1, text_heads=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained tiny SD directory as the bootstrap writes it."""
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "model", TINY, CLASSES)


@pytest.fixture
def model_copy(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "copy")


# ---------------------------------------------------------------------------- device and dtype


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="diffusion.device"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_pick_device_cuda_without_cuda(name):
    with pytest.raises(ConfigError, match="diffusion.device.*no usable CUDA"):
        pick_device(name)


def test_torch_dtype():
    cpu = torch.device("cpu")
    assert torch_dtype("float32", cpu) is torch.float32
    for half in ("float16", "bfloat16"):
        with pytest.raises(ConfigError, match=f"diffusion.dtype: {half} runs only on CUDA"):
            torch_dtype(half, cpu)
    assert torch_dtype("float16", torch.device("cuda")) is torch.float16  # the name only; no CUDA needed
    with pytest.raises(ConfigError, match="diffusion.dtype: 'int8'"):
        torch_dtype("int8", cpu)
    with pytest.raises(ConfigError, match="diffusion.dtype"):
        DiffusionConfig(dtype="half")


# ---------------------------------------------------------------------------- checks before loading


def test_missing_path(tmp_path):
    missing = tmp_path / "RoentGen"
    with pytest.raises(InputError) as err:
        load_stable_diffusion(missing, torch.device("cpu"))
    assert str(missing) in str(err.value)
    assert "diffusion.pretrained" in str(err.value) and "leave it empty" in str(err.value)


def test_not_a_diffusers_dir(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(InputError, match="not a diffusers directory.*model_index.json"):
        load_stable_diffusion(tmp_path, torch.device("cpu"))


def test_missing_components_all_named(model_copy):
    shutil.rmtree(model_copy / "unet")
    shutil.rmtree(model_copy / "tokenizer")
    with pytest.raises(InputError) as err:
        load_stable_diffusion(model_copy, torch.device("cpu"))
    message = str(err.value)
    assert "unet, tokenizer missing" in message
    assert "vae," not in message.split("missing")[0]  # present components are not blamed


def test_component_without_config_is_missing(model_copy):
    (model_copy / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(InputError, match="scheduler missing"):
        load_stable_diffusion(model_copy, torch.device("cpu"))


def test_unknown_scheduler_class(model_copy):
    path = model_copy / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "_class_name": "NoSuchScheduler"}))
    with pytest.raises(InputError, match="'NoSuchScheduler' is not a diffusers scheduler"):
        load_stable_diffusion(model_copy, torch.device("cpu"))


# ---------------------------------------------------------------------------- loading


def test_load(model_copy):
    # RoentGen-like directories also hold feature_extractor/ and safety_checker/: ignored
    for extra in ("feature_extractor", "safety_checker"):
        (model_copy / extra).mkdir()
        (model_copy / extra / "config.json").write_text("{}")
    sd = load_stable_diffusion(model_copy, torch.device("cpu"))
    assert type(sd.scheduler).__name__ == "DDIMScheduler"
    assert not any(m.training for m in (sd.vae, sd.unet, sd.text_encoder))
    assert sd.device == torch.device("cpu") and sd.dtype == torch.float32 and sd.vae.dtype == torch.float32
    assert sd.latent_size == 4 and sd.path == str(model_copy) and sd.fingerprint == fingerprint(model_copy)
    hidden = encode_prompts(sd.tokenizer, sd.text_encoder, ["nodule", ""])
    assert hidden.shape == (2, TINY.max_prompt_tokens, TINY.text_hidden_size)


def test_load_real_clip_tokenizer(model_copy, tmp_path):
    """A CLIP BPE tokenizer (as in RoentGen / SD 1.x) loads through the same AutoTokenizer path."""
    words = ["nodule</w>", "n", "o", "d", "u", "l", "e</w>", "no", "nod", "nodu", "nodul"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    merges = ["n o", "no d", "nod u", "nodu l", "nodul e</w>"]  # BPE: "nodule" -> one token
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    shutil.rmtree(model_copy / "tokenizer")
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(model_copy / "tokenizer")
    sd = load_stable_diffusion(model_copy, torch.device("cpu"))
    ids = sd.tokenizer("nodule").input_ids
    assert ids == [0, vocab["nodule</w>"], 1]


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_configs_not_weights(model_copy):
    before = fingerprint(model_copy)
    assert len(before) == 64 and before == fingerprint(model_copy)

    weights = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    save_file({k: v + 1 for k, v in state.items()}, weights)  # retrained: same architecture, other weights
    assert fingerprint(model_copy) == before

    config = model_copy / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "layers_per_block": 2}))
    changed = fingerprint(model_copy)
    assert changed != before

    vocab = model_copy / "tokenizer" / "tokenizer.json"
    vocab.write_text(vocab.read_text().replace('"nodule"', '"mass"'))
    assert fingerprint(model_copy) not in (before, changed)


# ---------------------------------------------------------------------------- prompts


def test_prompt():
    assert prompt([1, 0, 1, 0, 0], CLASSES) == "cardiomegaly, nodule"
    assert prompt(np.array([0, 1, 0, 1, 0], dtype=np.uint8), CLASSES) == "pleural effusion, calcification of the aorta"
    assert prompt([0, 0, 0, 0, 1], CLASSES) == "no finding"
    assert prompt([0, 0, 0, 0, 0], CLASSES) == ""
    assert prompt([1, 1, 1, 1, 1], CLASSES).split(", ") == [c.lower() for c in CLASSES]  # manifest order
    with pytest.raises(ValueError, match="does not match 5 classes"):
        prompt([1, 0], CLASSES)


def test_components_constant():
    assert COMPONENTS == ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
