"""Method variants: named configurations of the method's own stages, each a family of Table 1 rows.

Elberg, Parra, Petrache (arXiv 2405.01705) fix one configuration of their method: EigenCAM
maps, tau_h = tau_l = 0.4 (Fig. 2), z_F = D(z_F^s) (Eq. 13), union labels, and the tail
image's class names as the UNet's prompt. A project that recommends other settings must show
them beside the paper's, each under its own name, so that nobody reads one for the other.
``variants`` in config.yaml maps a name to the keys of the method's sections in which that
variant differs from them:

    variants:
      ours: {}                                   # cam, pairing, fusion, generate as configured
      ours-paper:                                # the paper's configuration
        cam: {method: eigencam}
        fusion: {tau_h: 0.4, tau_l: 0.4, decode: d, label_policy: union}
        generate: {prompt_labels: tail}

A name is ``ours`` or ``ours-<word>``; its rows are ``<name>@<s>`` for every s of its
``generate.steps`` (Ours@0, Ours-paper@5). ``extends: <an earlier variant>`` starts from that
variant's sections instead of the configured ones (an ablation changes one key of it). Variants share the latents, the IL model and the
CAM store of their CAM method; pairing, fusion, generation, their evaluation and their fidelity
funnel are the variant's own, under results/<stage>/<name>/, so that changing one variant's
setting reruns that variant's chain and nothing else. ``fusion.n_per_class`` is not a
variant's: every row of Table 1 adds the same number of samples. Of the CAM section a variant
sets only ``method``: the store of each method is built once, with the shared target layer and
sizes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

from ltaug.common.errors import ConfigError

SECTIONS = ("cam", "pairing", "fusion", "generate")  # what a variant may set
FIXED = {"fusion": ("n_per_class",)}  # shared by every row of Table 1
NAME = re.compile(r"^ours(-[a-z0-9]+)*$")
BASELINES = ("baseline", "balanced", "resample", "smote")
REAL_ONLY = ("baseline", "balanced")  # rows trained on the real images alone: no synthetic set
BALANCED = {"baseline": 0.0, "balanced": 1.0}  # their class balancing of the classifier's batches
METHOD = re.compile(r"^(?P<family>[a-z][a-z0-9-]*)(@(?P<steps>[0-9]+))?$")


def resolve(config: Mapping) -> dict[str, dict[str, dict]]:
    """Every variant's effective sections: {name: {section: the section with the variant's keys over it}}, in the
    order of ``config["variants"]``. ``config`` is the validated config (schema defaults filled in)."""
    variants = config.get("variants") or {}
    if not variants:
        raise ConfigError("variants: no variant; define at least one, e.g. variants: {ours: {}}.")
    out = {}
    for name, own in variants.items():
        if not NAME.match(name):
            raise ConfigError(f"variants.{name}: a variant's name is ours or ours-<word> (lower case letters, digits "
                              f"and dashes), so that its rows read Ours@s or Ours-<word>@s.")  # fmt: skip
        own = own or {}
        for section, keys in FIXED.items():
            for key in keys:
                if key in own.get(section, {}):
                    raise ConfigError(
                        f"variants.{name}.{section}.{key}: set for this variant only, but it is shared by every method "
                        f"of Table 1 (every row adds the same number of samples); set {section}.{key} instead."
                    )
        base = own.get("extends")
        if base is not None and base not in out:
            raise ConfigError(f"variants.{name}.extends: {base!r} is not a variant defined before it ({', '.join(out) or 'none'}); "
                              f"a variant extends one listed above it.")  # fmt: skip
        start = out[base] if base else {s: config[s] for s in SECTIONS}
        out[name] = {s: {**copy.deepcopy(start[s]), **copy.deepcopy(own.get(s, {}))} for s in SECTIONS}
        out[name]["description"] = own.get("description", "")
    return out


def display_name(method: str) -> str:
    """baseline -> Baseline, balanced -> Balanced, roentgen@75 -> RoentGen@75, ours@5 -> Ours@5, ours-paper@0 ->
    Ours-paper@0."""
    names = {"baseline": "Baseline", "balanced": "Balanced", "resample": "Resample", "smote": "SMOTE", "roentgen": "RoentGen"}
    match = METHOD.match(method)
    family = match["family"] if match else None
    if family in names:
        text = names[family]
    elif family is not None and NAME.match(family):
        text = "O" + family[1:]
    else:
        raise ValueError(f"unknown method {method!r}; methods are baseline, resample, smote, roentgen@N and "
                         f"<variant>@s for a variant ours or ours-<word>")  # fmt: skip
    return text + (f"@{match['steps']}" if match["steps"] is not None else "")


def variant_of(method: str) -> str | None:
    """ours-paper@5 -> ours-paper; None for a baseline."""
    match = METHOD.match(method)
    return match["family"] if match and NAME.match(match["family"]) and match["steps"] is not None else None


def expand_methods(methods: Sequence[str], variants: Mapping[str, Mapping], num_steps: int) -> list[str]:
    """Table 1's rows in order from eval.methods: roentgen -> roentgen@{num_steps} (roentgen@N stays), a variant's
    name -> one <name>@<s> per s of its generate.steps. A name that is neither is a ConfigError."""
    out = []
    for entry in methods:
        if entry in BASELINES or re.fullmatch(r"roentgen@[1-9][0-9]*", entry):
            out.append(entry)
        elif entry == "roentgen":
            out.append(f"roentgen@{num_steps}")
        elif entry in variants:
            out += [f"{entry}@{s}" for s in variants[entry]["generate"]["steps"]]
        else:
            raise ConfigError(
                f"eval.methods: {entry!r} is neither a baseline (baseline, balanced, resample, smote, roentgen, roentgen@N) nor a "
                f"variant; the variants are {', '.join(variants)} (config key variants)."
            )
    return out


def on_decoder_path(sections: Mapping[str, Mapping]) -> bool:
    """Whether a variant's images carry D(S(z)) alone: Eq. 13 in the sparse space, not the residual decode, the
    latent space or real pixels (the fidelity funnel's il stage is then on its path)."""
    fusion, generate = sections["fusion"], sections["generate"]
    return fusion["decode"] == "d" and fusion.get("space", "sparse") == "sparse" and generate.get("composite", "none") != "paste"


def describe(name: str, sections: Mapping[str, Mapping]) -> str:
    """One line of what a variant does, for Table 1's notes: CAM, masks, space and decode, labels, pairing, prompt."""
    cam, fusion, generate, pairing = sections["cam"], sections["fusion"], sections["generate"], sections["pairing"]
    specific = f"map_t > {fusion['tau_h']:g}"
    if fusion.get("tail_mask", "cells") == "region":
        specific = f"the region of {specific} around its peak, grown by {fusion['region_grow']}"
    masks = f"M^S = {specific}, M^G = map_h < {fusion['tau_l']:g}" + (" (empty)" if fusion["tau_l"] == 0 else "")
    if fusion.get("overlap", "coin") == "tail":
        masks += "; M^S always from the tail"
    if fusion.get("mask_source", "cam") == "random":
        masks += "; positions shuffled (random masks of the same size)"
    if fusion.get("space", "sparse") == "latent":
        decode = "fused on the SD latents, no IL space"
    else:
        decode = {"d": "z_F = D(z_F^s) (Eq. 13)", "residual": "residual decode (D(z_F^s) plus each source's D(S(z)) "
                  "error)"}[fusion["decode"]]  # fmt: skip
    prompt = {"tail": "the tail image's classes", "fused": "the fused sample's labels"}[generate["prompt_labels"]]
    parts = [
        f"{cam['method']} maps",
        masks,
        decode,
        f"labels {fusion['label_policy']}",
        f"neighbour among the {pairing['k']} nearest in {pairing['space']} space",
        f"UNet prompt: {prompt}, guidance {generate['guidance_scale']:g}, of {generate['num_steps']} steps",
    ]
    text = f"{display_name(name + '@0')[:-2]}: " + "; ".join(parts)
    own = sections.get("description")
    return text + (f" ({own})" if own else "")
