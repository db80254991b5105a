# Config validation (once, at the edge) and input functions. No other logic lives in rules.

import json
import re

from ltaug.commands import stage_command
from ltaug.common.config import section_schema, validate_config
from ltaug.data.classes import LongTailConfig
from ltaug.data.manifest import SPLITS, DataConfig
from ltaug.common.errors import ConfigError
from ltaug.common.seeds import draw_seed
from ltaug.common.variants import (
    describe,
    expand_methods,
    expand_sets,
    on_decoder_path,
    parse_row,
    resolve,
)
from ltaug.evaluation.schemes import RebalancingConfig, check_scheme


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
        DataConfig(
            **values["data"]
        )  # cross-key checks of each section, before any job runs
        LongTailConfig(**values["long_tail"])
        variants = resolve(values)
        rows = expand_methods(
            values["eval"]["methods"],
            variants,
            values["generate"]["num_steps"],
            values["eval"]["schemes"],
        )
        for scheme in values["eval"]["schemes"]:
            check_scheme(scheme, RebalancingConfig(**values["eval"]["rebalancing"]))
        if (
            "oracle" in values["eval"]["methods"]
            and not values["demo"]["enabled"]
            and not values["eval"]["oracle"]["holdout"]
        ):
            raise ConfigError(
                "eval.methods: the oracle row needs fresh real tail images, and on real data they are a held-out "
                "share of each tail class's training images: set eval.oracle.holdout (e.g. 0.2), or remove oracle "
                "from eval.methods."
            )
        for reference in values["eval"]["intervals"]["references"]:
            if reference not in rows:
                raise ConfigError(
                    f"eval.intervals.references: {reference!r} is not a row of Table 1 ({', '.join(rows)}); name a "
                    f"row that eval.methods makes, or add its method to eval.methods."
                )
    except ConfigError as exc:
        raise WorkflowError(f"invalid configuration:\n{exc}") from None
    return values


config.update(_validated(config))
VARIANTS = resolve(
    config
)  # name -> its cam, pairing, fusion and generate sections (ltaug.common.variants)

OUT = config["outdir"]  # results/<stage>/...
DEMO = config["demo"]["outdir"]
ENV = (
    "../../envs/ltaug.yaml"  # one environment for every rule, pins as in pyproject.toml
)


WINDOW = json.dumps(
    config["data"]["window"]
)  # data.window for the rules that read image files (--window)


IMAGES = f"{OUT}/images"  # the image stores of decode_images, results/images/{split}/{size}px.zarr
LATENT_SIZE = config["latents"]["image_size"]
CLASSIFIER_SIZE = config["eval"]["classifier"]["image_size"]
DETECTOR_SIZE = config["demo"][
    "image_size"
]  # the demo's images and boxes (fit_detector)
IMAGE_SIZES = sorted(
    {LATENT_SIZE, CLASSIFIER_SIZE}
    | ({DETECTOR_SIZE} if config["demo"]["enabled"] else set())
)


def image_stores(splits, *sizes):
    """The image stores of ``splits`` at ``sizes`` (written by decode_images), which a stage reads pixels from."""
    return [
        f"{IMAGES}/{split}/{size}px.zarr"
        for split in splits
        for size in dict.fromkeys(sizes)
    ]


def section_json(name, keep=None, drop=()):
    """One config section (dotted, e.g. "diffusion.bootstrap") as JSON, for a rule's params:
    a change reruns exactly the stages that depend on it. ``keep``/``drop`` select keys.
    """
    values = config
    for part in name.split("."):
        values = values[part]
    chosen = {
        k: v for k, v in values.items() if (keep is None or k in keep) and k not in drop
    }
    return json.dumps(chosen, sort_keys=True)


def demo_outputs():
    """Files rule demo_dataset writes (none when the demo is off)."""
    if not config["demo"]["enabled"]:
        return []
    return [f"{DEMO}/{split}.csv" for split in SPLITS] + [
        f"{DEMO}/boxes.csv",
        f"{DEMO}/demo.json",
    ]


def labels_files(wildcards=None):
    """The labels CSV of each split (or of all images) and the split lists; a missing one (that the demo will
    not draw) is a config error."""
    files = dict(config["data"]["labels"])
    files |= {
        f"list_{split}": path for split, path in config["data"]["split_lists"].items()
    }
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


# diffusion.bootstrap's UNet training settings (ltaug.backbone.bootstrap_config.BootstrapConfig): bootstrap_vae reads none of
# them. The UNet's and text encoder's architecture keys stay in its params: it writes their configs.
UNET_TRAINING_KEYS = ("unet_steps", "unet_batch_size", "unet_lr", "unet_snr_gamma", "unet_balance",
                      "empty_prompt_share", "text_embedding_std", "sample_steps", "guidance_scale", "samples_per_class")  # fmt: skip


def bootstrap_params(stage):
    """The bootstrap's hyper-parameters for ``stage`` ("vae" or "unet"), with the image size the latents will
    be encoded at. The VAE stage's leave out the UNet's training settings, so a change to those retrains
    only the UNet and reruns only the stages that use it."""
    values = {
        **config["diffusion"]["bootstrap"],
        "image_size": config["latents"]["image_size"],
    }
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


SYNTHETIC_PATTERN = r"resample|smote|oracle|roentgen@\d+|ours(?:-[a-z0-9]+)*@\d+"  # a synthetic set's {method}
METHOD_PATTERN = rf"baseline|balanced|logit-adjusted|(?:(?:balanced|logit-adjusted)\+)?(?:{SYNTHETIC_PATTERN})"  # a row of Table 1
DRAWS = (
    list(range(len(config["eval"]["classifier"]["seeds"])))
    if config["eval"]["draw_per_seed"]
    else [0]
)  # the draws of every synthetic set: classifier seed i trains with draw i (eval.draw_per_seed)
VARIANT_PATTERN = "|".join(
    re.escape(v) for v in VARIANTS
)  # {variant}: a name of config key variants


def eval_methods():
    """Table 1's rows in order: per scheme of eval.schemes its real-only row, then every set of eval.methods under it
    (roentgen -> roentgen@{generate.num_steps}, a variant's name -> one <name>@<s> per s of its generate.steps;
    ltaug.common.variants.expand_methods)."""
    return expand_methods(
        config["eval"]["methods"],
        VARIANTS,
        config["generate"]["num_steps"],
        config["eval"]["schemes"],
    )


def eval_sets():
    """The synthetic sets of Table 1 (each trained under every scheme), in the order of eval.methods."""
    return expand_sets(
        config["eval"]["methods"], VARIANTS, config["generate"]["num_steps"]
    )


def listed_variants():
    """The variants with rows in Table 1, in the order of config key variants."""
    return [v for v in VARIANTS if v in config["eval"]["methods"]]


def variant_json(variant, section, keep=None, drop=(), draw=None):
    """One section as the variant sets it, as JSON for a rule's params (see section_json); with ``draw``, its seed
    that of that draw of the synthetic sets (ltaug.common.seeds.draw_seed)."""
    values = VARIANTS[variant][section]
    chosen = {
        k: v for k, v in values.items() if (keep is None or k in keep) and k not in drop
    }
    if draw is not None:
        chosen["seed"] = draw_seed(values["seed"], int(draw))
    return json.dumps(chosen, sort_keys=True)


def draw_json(name, draw, keep=None, drop=()):
    """section_json of ``name`` with its seed that of draw ``draw`` (ltaug.common.seeds.draw_seed)."""
    values = json.loads(section_json(name, keep, drop))
    values["seed"] = draw_seed(values["seed"], int(draw))
    return json.dumps(values, sort_keys=True)


CAM_METHODS = "|".join(
    re.escape(m) for m in section_schema("cam")["properties"]["method"]["enum"]
)  # {cam}


def cam_json(wildcards):
    """The cam section for the store of method {cam}: the shared keys, with that method."""
    values = {k: v for k, v in config["cam"].items() if k not in ("splits", "shards")}
    return json.dumps({**values, "method": wildcards.cam}, sort_keys=True)


def stores_root(stores):
    """results/images, for a stage's --images, from the image stores among its inputs ("" when it has none)."""
    return os.path.dirname(os.path.dirname(stores[0])) if stores else ""


def composites(variant):
    """Whether the variant's generate.composite puts real pixels into its sets (they read the image stores)."""
    return VARIANTS[variant]["generate"]["composite"] != "none"


GENERATE_DECODE_KEYS = (
    "batch_size",
    "composite",
    "feather",
)  # the generate keys a decoded set (s = 0) depends on


def cam_store(variant, split="train"):
    """The CAM store a variant reads: that of its CAM method, shared by every variant with the same method."""
    return f"{OUT}/cam/{VARIANTS[variant]['cam']['method']}/{split}.zarr"


def variant_sets(variant, draw=0):
    """Draw ``draw`` of the synthetic sets <variant>@<s> of a variant, one per s of its generate.steps."""
    return [
        synthetic_set(f"{variant}@{s}", draw)
        for s in VARIANTS[variant]["generate"]["steps"]
    ]


def variant_notes():
    """What each variant of Table 1 does, one line each for the report's notes (ltaug.common.variants.describe), and whether
    its images go through D(S(z)) alone (the funnel's il stage is on its path)."""
    return json.dumps({v: {"line": describe(v, VARIANTS[v]), "il_on_path": on_decoder_path(VARIANTS[v])}
                       for v in listed_variants()})  # fmt: skip


def class_name_keys(variant):
    """The config keys of a variant that name a class, with the key a user would fix, as JSON."""
    key, name = "fusion.exclusive_class", variant
    while name is not None:  # the variant that sets it, following extends
        own = config["variants"][name] or {}
        if "exclusive_class" in own.get("fusion", {}):
            key = f"variants.{name}.fusion.exclusive_class"
            break
        name = own.get("extends")
    return json.dumps({key: VARIANTS[variant]["fusion"]["exclusive_class"]})


REBALANCING_KEYS = {  # the eval.rebalancing keys a row's training reads: (scheme, whether it adds a set)
    ("plain", False): (),
    ("plain", True): ("synthetic_weight",),
    ("balanced", False): (),
    ("balanced", True): ("synthetic_share", "synthetic_weight"),
    ("logit-adjusted", False): ("tau",),
    ("logit-adjusted", True): ("synthetic_share", "synthetic_weight", "tau"),
}


def rebalancing_json(row):
    """The eval.rebalancing keys row ``row`` is trained with, as JSON: a change reruns only the rows it reaches."""
    scheme, synthetic = parse_row(row)
    return section_json(
        "eval.rebalancing", keep=REBALANCING_KEYS[(scheme, synthetic is not None)]
    )


def synthetic_set(method, draw=0):
    """results/synthetic/{method}/draw{draw}: draw ``draw`` of a baseline's set, the oracle's or, for <variant>@<s>,
    rule generate's."""
    return f"{OUT}/synthetic/{method}/draw{draw}"


def classifier_inputs(wildcards, draws=DRAWS):
    """evaluate_classifier: the manifest and classes, and every draw of the row's synthetic set (none for a
    real-only row)."""
    _, synthetic = parse_row(wildcards.method)
    return {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "images": image_stores(SPLITS, CLASSIFIER_SIZE),
        "synthetic": [synthetic_set(synthetic, d) for d in draws] if synthetic else [],
    }


def export_inputs(wildcards):
    """export_training_set: classifier_inputs with the first draw of the set alone."""
    return classifier_inputs(wildcards, draws=[0])


def fid_inputs(wildcards):
    """evaluate_fid of a set: its first draw, the judge classifier and its features of the training images and, on
    the demo, the finding detector."""
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "synthetic": synthetic_set(
            wildcards.method
        ),  # draw 0: every set's quality is measured on its first draw
        "judge": f"{OUT}/eval/judge/judge.pt",
        "real_features": f"{OUT}/eval/real_features.npz",
        "images": real_image_stores(["train", *config["eval"]["fid"]["real_splits"]])
        + (
            image_stores(config["eval"]["fid"]["real_splits"], DETECTOR_SIZE)
            if config["demo"]["enabled"]
            else []
        ),
    }
    if config["demo"]["enabled"]:
        inputs["detector"] = f"{OUT}/eval/detector.json"
    return inputs


def real_image_stores(splits):
    """The stores the distances read real images of ``splits`` from: the judge's size and, for InceptionV3
    (eval.fid.inception_weights), the latent size."""
    sizes = [CLASSIFIER_SIZE] + (
        [LATENT_SIZE] if config["eval"]["fid"]["inception_weights"] else []
    )
    return image_stores(splits, *sizes)


def report_inputs(wildcards):
    """report: every method's classifier results, distance results and synthetic set, the judge's results and, on
    the demo, the detector and every listed variant's fidelity funnel."""
    methods = eval_methods()
    synthetic = eval_sets()
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "classifier": [f"{OUT}/eval/classifier/{m}.json" for m in methods],
        "fid": [f"{OUT}/eval/fid/{m}.json" for m in synthetic],
        "intervals": f"{OUT}/eval/intervals.json",
        "sets": [synthetic_set(m) for m in synthetic],
        "judge": f"{OUT}/eval/judge/judge.json",
        "funnels": (
            [f"{OUT}/eval/funnel/{v}.csv" for v in listed_variants()]
            if config["demo"]["enabled"]
            else []
        ),
    }
    if config["demo"]["enabled"] and synthetic:
        inputs["detector"] = f"{OUT}/eval/detector.json"
    return inputs


def funnel_inputs(wildcards):
    """fidelity_funnel of a variant: the training latents, the variant's CAMs and fused store, the IL model, the
    variant's synthetic sets, and the judge: the demo's detector and boxes, or the judge classifier.
    """
    inputs = {
        "manifest": f"{OUT}/data/manifest.csv",
        "classes": f"{OUT}/data/classes.json",
        "latents": f"{OUT}/latents/train.zarr",
        "cams": cam_store(wildcards.variant),
        "model": f"{OUT}/il/model.pt",
        "fused": f"{OUT}/fused/{wildcards.variant}/draw0/latents.zarr",
        "diffusion_model": vae_model(),
        "sets": variant_sets(wildcards.variant),
        "images": image_stores(
            ["train"], LATENT_SIZE
        ),  # the tail samples, as the VAE sees them
    }
    if config["demo"]["enabled"]:
        inputs |= {
            "detector": f"{OUT}/eval/detector.json",
            "boxes": f"{DEMO}/boxes.csv",
        }
    else:  # the judge's false-positive rate: on the real test images
        inputs["classifier"] = f"{OUT}/eval/judge/judge.pt"
        inputs["images"] = inputs["images"] + image_stores(["test"], CLASSIFIER_SIZE)
    return inputs


def get_final_output():
    """Everything `snakemake` with no target builds; later stages extend this list."""
    outputs = [f"{OUT}/data/manifest.csv", f"{OUT}/data/classes.json"]
    outputs += [
        f"{OUT}/latents/{split}.zarr" for split in ("train", "val")
    ]  # test: no stage reads its latents
    outputs += [f"{OUT}/il/model.pt", f"{OUT}/il/history.csv"]
    variants = listed_variants()
    for method in dict.fromkeys(
        VARIANTS[v]["cam"]["method"] for v in variants
    ):  # each CAM method once
        outputs += [
            f"{OUT}/cam/{method}/{split}.zarr" for split in config["cam"]["splits"]
        ]
    for v in variants:
        outputs += [
            f"{OUT}/pairs/{v}/draw0/pairs.csv",
            f"{OUT}/fused/{v}/draw0/latents.zarr",
            *variant_sets(v),
        ]
        outputs.append(f"{OUT}/figures/fig2/{v}")
    if not config["diffusion"]["pretrained"]:
        outputs += [f"{OUT}/diffusion/vae_samples", f"{OUT}/diffusion/samples"]
    outputs += [
        f"{OUT}/report/table1.csv",
        f"{OUT}/report/table1.md",
    ]  # Table 1: every evaluation before it
    if config["demo"][
        "enabled"
    ]:  # ground-truth boxes exist: where each stage loses the tail finding
        outputs += [f"{OUT}/eval/funnel/{v}.csv" for v in variants]
    return outputs
