# Config validation (once, at the edge) and input functions. No other logic lives in rules.

import json

from ltaug.config import validate_config
from ltaug.data import SPLITS, DataConfig, LongTailConfig
from ltaug.errors import ConfigError


def _validated(config):
    """Config with schema defaults, or a WorkflowError naming the bad key."""
    try:
        values = validate_config(
            config,
            f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
            source=" + ".join(os.path.normpath(f) for f in workflow.configfiles)
            or "config",
            overrides=workflow.config_settings.overwrite_config,  # --config: typed by the schema
        )
        DataConfig(**values["data"])  # cross-key checks of each section, before any job runs
        LongTailConfig(**values["long_tail"])
    except ConfigError as exc:
        raise WorkflowError(f"invalid configuration:\n{exc}") from None
    return values


config.update(_validated(config))

OUT = config["outdir"]  # results/<stage>/...
DEMO = config["demo"]["outdir"]
ENV = "../../envs/ltaug.yaml"  # one environment for every rule, pins as in pyproject.toml


WINDOW = json.dumps(config["data"]["window"])  # data.window for the rules that read image files (--window)


def section_json(name, keep=None, drop=()):
    """One config section (dotted, e.g. "diffusion.bootstrap") as JSON, for a rule's params:
    a change reruns exactly the stages that depend on it. ``keep``/``drop`` select keys."""
    values = config
    for part in name.split("."):
        values = values[part]
    chosen = {k: v for k, v in values.items() if (keep is None or k in keep) and k not in drop}
    return json.dumps(chosen, sort_keys=True)


def demo_outputs():
    """Files rule demo_dataset writes (none when the demo is off)."""
    if not config["demo"]["enabled"]:
        return []
    return [f"{DEMO}/{split}.csv" for split in SPLITS] + [f"{DEMO}/boxes.csv", f"{DEMO}/demo.json"]


def labels_files(wildcards=None):
    """The labels CSV of each split (or of all images) and the split lists; a missing one (that the demo will
    not draw) is a config error."""
    files = dict(config["data"]["labels"])
    files |= {f"list_{split}": path for split, path in config["data"]["split_lists"].items()}
    made = {os.path.normpath(p) for p in demo_outputs()}
    for key, path in files.items():
        if not os.path.exists(path) and os.path.normpath(path) not in made:
            what = (f"split list of {key[5:]} (data.split_lists.{key[5:]})" if key.startswith("list_")
                    else f"labels CSV of the {key} split (data.labels.{key})")  # fmt: skip
            raise WorkflowError(
                f"{path}: {what} does not exist; point it at the file the data set ships, or set "
                f"demo.enabled: true to draw the demo data set there."
            )
    return files


# diffusion.bootstrap's UNet training settings (ltaug.bootstrap.BootstrapConfig): bootstrap_vae reads none of
# them. The UNet's and text encoder's architecture keys stay in its params: it writes their configs.
UNET_TRAINING_KEYS = ("unet_steps", "unet_batch_size", "unet_lr", "unet_snr_gamma", "unet_balance",
                      "empty_prompt_share", "text_embedding_std", "sample_steps", "guidance_scale", "samples_per_class")  # fmt: skip


def bootstrap_params(stage):
    """The bootstrap's hyper-parameters for ``stage`` ("vae" or "unet"), with the image size the latents will
    be encoded at. The VAE stage's leave out the UNet's training settings, so a change to those retrains
    only the UNet and reruns only the stages that use it."""
    values = {**config["diffusion"]["bootstrap"], "image_size": config["latents"]["image_size"]}
    if stage == "vae":
        values = {k: v for k, v in values.items() if k not in UNET_TRAINING_KEYS}
    return json.dumps(values, sort_keys=True)


def diffusion_model():
    """The diffusers Stable Diffusion directory: diffusion.pretrained, or the bootstrapped one."""
    pretrained = config["diffusion"]["pretrained"]
    if not pretrained:
        return f"{OUT}/diffusion/model"
    if not os.path.isdir(pretrained):
        raise WorkflowError(
            f"{pretrained}: diffusion.pretrained is not a directory; point it at a local diffusers "
            f"Stable Diffusion directory (e.g. RoentGen: model_index.json, vae/, unet/, text_encoder/, "
            f"tokenizer/, scheduler/), or leave it empty to train the small demo model."
        )
    return pretrained


def vae_model():
    """The directory the stages that need only the VAE read: diffusion.pretrained, or bootstrap_vae's
    (same layout and fingerprint as the bootstrapped model, VAE weights only)."""
    if not config["diffusion"]["pretrained"]:
        return f"{OUT}/diffusion/vae"
    return diffusion_model()


METHOD_PATTERN = r"baseline|resample|smote|roentgen@\d+|ours@\d+"  # evaluate_classifier's {method}
SYNTHETIC_PATTERN = r"resample|smote|roentgen@\d+|ours@\d+"  # methods with a synthetic set


def eval_methods():
    """Table 1's rows in order: eval.methods with roentgen -> roentgen@{generate.num_steps} (roentgen@N
    stays), ours -> one ours@{s} per generate.steps."""
    methods = []
    for family in config["eval"]["methods"]:
        if family == "roentgen":
            methods.append(f"roentgen@{config['generate']['num_steps']}")
        elif family == "ours":
            methods += [f"ours@{s}" for s in config["generate"]["steps"]]
        else:
            methods.append(family)
    return methods


def synthetic_set(method):
    """results/synthetic/{method}: a baseline's set or, for ours@{s}, rule generate's."""
    return f"{OUT}/synthetic/{method}"


def classifier_inputs(wildcards):
    """evaluate_classifier: the manifest and classes, and the method's synthetic set (none for the baseline)."""
    inputs = {"manifest": f"{OUT}/data/manifest.csv", "classes": f"{OUT}/data/classes.json"}
    if wildcards.method != "baseline":
        inputs["synthetic"] = synthetic_set(wildcards.method)
    return inputs


def fid_inputs(wildcards):
    """evaluate_fid: the synthetic set, the real-data classifier and, on the demo, the finding detector."""
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "synthetic": synthetic_set(wildcards.method),
        "classifier": f"{OUT}/eval/classifier/baseline.pt",
        "real_features": f"{OUT}/eval/real_features.npz",
    }
    if config["demo"]["enabled"]:
        inputs["detector"] = f"{OUT}/eval/detector.json"
    return inputs


def report_inputs(wildcards):
    """report: every method's classifier results, distance results and synthetic set."""
    methods = eval_methods()
    synthetic = [m for m in methods if m != "baseline"]
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "classifier": [f"{OUT}/eval/classifier/{m}.json" for m in methods],
        "fid": [f"{OUT}/eval/fid/{m}.json" for m in synthetic],
        "intervals": f"{OUT}/eval/intervals.json",
        "sets": [synthetic_set(m) for m in synthetic],
    }
    if config["demo"]["enabled"] and synthetic:
        inputs["detector"] = f"{OUT}/eval/detector.json"
    return inputs


def funnel_inputs(wildcards):
    """fidelity_funnel: the training latents, CAMs, IL model and fused store, every synthetic set of
    Table 1, and the judge: the demo's detector and boxes, or the real-data classifier."""
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "latents": f"{OUT}/latents/train.zarr",
        "cams": f"{OUT}/cam/train.zarr",
        "model": f"{OUT}/il/model.pt",
        "fused": f"{OUT}/fused/latents.zarr",
        "diffusion_model": vae_model(),
        "sets": [synthetic_set(m) for m in eval_methods() if m != "baseline"],
    }
    if config["demo"]["enabled"]:
        inputs |= {"detector": f"{OUT}/eval/detector.json", "boxes": f"{DEMO}/boxes.csv"}
    else:
        inputs["classifier"] = f"{OUT}/eval/classifier/baseline.pt"
    return inputs


def get_final_output():
    """Everything `snakemake` with no target builds; later stages extend this list."""
    outputs = [f"{OUT}/data/manifest.csv", f"{OUT}/data/classes.json"]
    outputs += [f"{OUT}/latents/{split}.zarr" for split in ("train", "val")]  # test: no stage reads its latents
    outputs += [f"{OUT}/il/model.pt", f"{OUT}/il/history.csv"]
    outputs += [f"{OUT}/cam/{split}.zarr" for split in config["cam"]["splits"]]
    outputs += [f"{OUT}/pairs/pairs.csv", f"{OUT}/fused/latents.zarr"]
    outputs += [f"{OUT}/synthetic/ours@{s}" for s in config["generate"]["steps"]] + [f"{OUT}/figures/fig2"]
    if not config["diffusion"]["pretrained"]:
        outputs += [f"{OUT}/diffusion/vae_samples", f"{OUT}/diffusion/samples"]
    outputs += [f"{OUT}/report/table1.csv", f"{OUT}/report/table1.md"]  # Table 1: every evaluation before it
    if config["demo"]["enabled"]:  # ground-truth boxes exist: where each stage loses the tail finding
        outputs.append(f"{OUT}/eval/funnel.csv")
    return outputs
