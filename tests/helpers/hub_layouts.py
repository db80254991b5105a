"""Stable Diffusion directories laid out as the Hugging Face hub stores them, built locally.

The component configs are those the hub publishes for SD 1.5 (``runwayml/stable-diffusion-v1-5``,
which RoentGen fine-tunes) and SD 2.1 (``stabilityai/stable-diffusion-2-1``): model_index.json with
the safety_checker and feature_extractor entries, a PNDM (SD 1.5) or v-prediction DDIM (SD 2.1)
scheduler, CLIP tokenizer files. ``widths="tiny"`` shrinks only the widths and depths (the layout is
what is tested, not the weights); ``widths="full"`` keeps the published architecture (random
weights: about 1.07 billion parameters for SD 1.5). Nothing is downloaded.

    write_hub_layout(path, "sd15", widths="tiny", weights="bin", variant="fp16", plain=False)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

CROSS_ATTN_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
CROSS_ATTN_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

PUBLISHED = {
    "sd15": {
        "model_index": {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.6.0",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "scheduler": {
            "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
            "clip_sample": False,
        },
        "unet": {
            "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
            "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
            "cross_attention_dim": 768, "down_block_types": CROSS_ATTN_DOWN, "downsample_padding": 1,
            "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
            "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
            "sample_size": 64, "up_block_types": CROSS_ATTN_UP,
        },
        "vae": {
            "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
        },
        "text_encoder": {
            "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
            "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
            "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
        },
        "pad_token": "<|endoftext|>",
    }
}


def _changed(base: dict, changes: dict) -> dict:
    """A deep copy of ``base`` with ``changes`` applied one level down (component -> key -> value)."""
    out = json.loads(json.dumps(base))
    for name, values in changes.items():
        if isinstance(values, dict):
            out[name].update(values)
        else:
            out[name] = values
    return out


# SD 2.1 (768 px) as published: what differs from SD 1.5.
PUBLISHED["sd21"] = _changed(PUBLISHED["sd15"], {
    "model_index": {"_diffusers_version": "0.10.0.dev0", "requires_safety_checker": False, "safety_checker": [None, None],
                    "scheduler": ["diffusers", "DDIMScheduler"]},
    "scheduler": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "prediction_type": "v_prediction"},
    "unet": {"_diffusers_version": "0.10.0.dev0", "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
             "dual_cross_attention": False, "num_class_embeds": None, "only_cross_attention": False, "sample_size": 96,
             "use_linear_projection": True},
    "vae": {"_diffusers_version": "0.10.0.dev0", "sample_size": 768},
    "text_encoder": {"hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                     "num_hidden_layers": 23, "projection_dim": 512},
    "pad_token": "!",
})  # fmt: skip

# Only widths and depths change; every other key stays as published.
TINY = {
    "unet": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 8,
             "sample_size": 8},
    "vae": {"block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 64},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                     "projection_dim": 32},  # the vocabulary stays 49408: CLIP token ids index it
}  # fmt: skip
TINY_HEADS = {"sd15": 8, "sd21": [2, 4, 8, 8]}  # attention_head_dim that divides the tiny widths
TINY_CROSS = {"sd15": 32, "sd21": 32}  # cross_attention_dim = the tiny text encoder's width

WORDS = ["nodule", "fracture", "cardiomegaly", "effusion", "chest", "x-ray", "showing", ","]


def component_configs(family: str, widths: str = "tiny") -> dict:
    """The published configs of ``family`` ('sd15' | 'sd21'), shrunk when ``widths`` is 'tiny'."""
    published = json.loads(json.dumps(PUBLISHED[family]))  # a deep copy
    if widths == "full":
        return published
    for name, changes in TINY.items():
        published[name].update(changes)
    published["unet"]["attention_head_dim"] = TINY_HEADS[family]
    published["unet"]["cross_attention_dim"] = TINY_CROSS[family]
    return published


def write_clip_tokenizer(folder: Path, pad_token: str, model_max_length: int = 77) -> None:
    """CLIPTokenizer files (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json)
    with a small vocabulary: every word of WORDS one token, the rest spelled by characters."""
    folder.mkdir(parents=True)
    chars = sorted({c for w in WORDS for c in w} | set("abcdefghijklmnopqrstuvwxyz!"))
    tokens = chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:  # merge left to right into one word token
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if " ".join(pair) not in merges:
                merges.append(" ".join(pair))
            pieces = ["".join(pair)] + pieces[2:]
            tokens.append(pieces[0])
    vocab = {}
    for token in ["<|startoftext|>", "<|endoftext|>", *tokens]:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}  # fmt: skip
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": model_max_length,
              "tokenizer_class": "CLIPTokenizer", **special}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def save(model, folder: Path, weights: str, variant: str) -> None:
    """save_pretrained, with .bin files as older hub snapshots hold them (transformers 5 writes only
    .safetensors, so the text encoder's pytorch_model.bin is written by hand, under its hub name)."""
    model.save_pretrained(folder, safe_serialization=weights == "safetensors", **({"variant": variant} if variant else {}))
    written = folder / (f"model.{variant}.safetensors" if variant else "model.safetensors")
    if weights == "bin" and written.exists():
        written.unlink()
        torch.save(model.state_dict(), folder / (f"pytorch_model.{variant}.bin" if variant else "pytorch_model.bin"))


def write_hub_layout(
    path: Path, family: str = "sd15", widths: str = "tiny", weights: str = "safetensors",
    variant: str | None = None, plain: bool = True, seed: int = 0,
) -> dict:  # fmt: skip
    """Write a hub-style SD directory at ``path``; return each component's float32 state dict as written.

    ``weights``: 'safetensors' or 'bin' files; ``variant`` (e.g. 'fp16'): also write half-precision
    files of that variant (``*.fp16.safetensors`` / ``*.fp16.bin``), and with ``plain=False`` only those,
    as an fp16-only download has them.
    """
    cfgs = component_configs(family, widths)
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps(cfgs["model_index"], indent=2))
    (path / "scheduler").mkdir()
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfgs["scheduler"], indent=2))
    write_clip_tokenizer(path / "tokenizer", cfgs["pad_token"], cfgs["text_encoder"]["max_position_embeddings"])
    torch.manual_seed(seed)
    models = {
        "unet": UNet2DConditionModel.from_config(cfgs["unet"]),
        "vae": AutoencoderKL.from_config(cfgs["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"])),
    }
    states = {name: {k: v.clone() for k, v in model.state_dict().items()} for name, model in models.items()}
    for name, model in models.items():
        model.eval()
        if plain:
            save(model, path / name, weights, "")
        if variant:
            save(model.half(), path / name, weights, variant)
            model.float()
    (path / "feature_extractor").mkdir()
    (path / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
    }))  # fmt: skip
    if cfgs["model_index"]["safety_checker"][0]:  # SD 1.5 ships one; its weights are never read
        (path / "safety_checker").mkdir()
        (path / "safety_checker" / "config.json").write_text(json.dumps({"architectures": ["StableDiffusionSafetyChecker"],
                                                                         "model_type": "clip"}))  # fmt: skip
        torch.save({"unused": torch.zeros(1)}, path / "safety_checker" / "pytorch_model.bin")
    return states
