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
SET_BASELINES = ("resample", "smote", "oracle")  # synthetic sets (and the oracle's fresh real images) besides RoentGen@N
SCHEMES = ("plain", "balanced", "logit-adjusted")  # how Table 1's classifier is trained (ltaug.evaluation.schemes)
REAL_ROWS = {"plain": "baseline", "balanced": "balanced", "logit-adjusted": "logit-adjusted"}  # a scheme's real-only row
SCHEME_NAMES = {"plain": "", "balanced": "Balanced", "logit-adjusted": "Logit-adjusted"}  # row prefix of a scheme
LABEL_POLICIES = ("union", "neighbour", "tail_only", "classifier")  # fusion.label_policy besides auto
METHOD = re.compile(r"^(?P<family>[a-z][a-z0-9-]*)(@(?P<steps>[0-9]+))?$")
ROW = re.compile(r"^(?:(?P<scheme>balanced|logit-adjusted)\+)?(?P<set>[a-z][a-z0-9-]*(?:@[0-9]+)?)$")


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


def set_name(method: str) -> str:
    """resample -> Resample, roentgen@75 -> RoentGen@75, ours@5 -> Ours@5, ours-paper@0 -> Ours-paper@0, oracle ->
    Oracle: the name of a synthetic set (or of the oracle's fresh real images)."""
    names = {"resample": "Resample", "smote": "SMOTE", "roentgen": "RoentGen", "oracle": "Oracle"}
    match = METHOD.match(method)
    family = match["family"] if match else None
    if family in names and (family == "roentgen") == (match["steps"] is not None):
        text = names[family]
    elif family is not None and NAME.match(family) and match["steps"] is not None:
        text = "O" + family[1:]
    else:
        raise ValueError(f"unknown set {method!r}; sets are resample, smote, oracle, roentgen@N and <variant>@s for a "
                         f"variant ours or ours-<word>")  # fmt: skip
    return text + (f"@{match['steps']}" if match["steps"] is not None else "")


def parse_row(row: str) -> tuple[str, str | None]:
    """(scheme, set) of a row of Table 1: baseline -> (plain, None), balanced -> (balanced, None), ours@1 -> (plain,
    ours@1), balanced+ours@1 -> (balanced, ours@1), logit-adjusted+oracle -> (logit-adjusted, oracle). A ValueError
    for anything else."""
    for scheme, real in REAL_ROWS.items():
        if row == real:
            return scheme, None
    match = ROW.match(row)
    try:
        if match and set_name(match["set"]):
            return match["scheme"] or "plain", match["set"]
    except ValueError:
        pass
    raise ValueError(f"unknown row {row!r}; rows are baseline, balanced, logit-adjusted, a set (resample, smote, oracle, "
                     f"roentgen@N, <variant>@s) or <scheme>+<set> for the schemes balanced and logit-adjusted")  # fmt: skip


def row_id(scheme: str, synthetic: str | None) -> str:
    """The row of ``synthetic`` (None: the real images alone) trained under ``scheme`` (the inverse of parse_row)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; schemes are {', '.join(SCHEMES)}")
    if synthetic is None:
        return REAL_ROWS[scheme]
    return synthetic if scheme == "plain" else f"{scheme}+{synthetic}"


def display_name(row: str) -> str:
    """A row's name in Table 1: baseline -> Baseline, balanced -> Balanced, logit-adjusted -> Logit-adjusted,
    roentgen@75 -> RoentGen@75, ours@5 -> Ours@5, balanced+ours@1 -> Balanced+Ours@1."""
    scheme, synthetic = parse_row(row)
    if synthetic is None:
        return SCHEME_NAMES[scheme] or "Baseline"
    prefix = SCHEME_NAMES[scheme]
    return (prefix + "+" if prefix else "") + set_name(synthetic)


def variant_of(method: str) -> str | None:
    """ours-paper@5 (or balanced+ours-paper@5) -> ours-paper; None for a baseline, the oracle or a real-only row."""
    try:
        _, synthetic = parse_row(method)
    except ValueError:
        return None
    match = METHOD.match(synthetic or "")
    return match["family"] if match and NAME.match(match["family"]) and match["steps"] is not None else None


def expand_sets(methods: Sequence[str], variants: Mapping[str, Mapping], num_steps: int) -> list[str]:
    """The synthetic sets of eval.methods, in order: roentgen -> roentgen@{num_steps} (roentgen@N stays), a variant's
    name -> one <name>@<s> per s of its generate.steps. A name that is neither is a ConfigError, and so are baseline
    and balanced, which are real-only rows of the training schemes (eval.schemes), not sets."""
    out = []
    for entry in methods:
        if entry in SET_BASELINES or re.fullmatch(r"roentgen@[1-9][0-9]*", entry):
            out.append(entry)
        elif entry == "roentgen":
            out.append(f"roentgen@{num_steps}")
        elif entry in variants:
            out += [f"{entry}@{s}" for s in variants[entry]["generate"]["steps"]]
        elif entry in ("baseline", "balanced", "logit-adjusted"):
            raise ConfigError(
                f"eval.methods: {entry!r} is the real-only row of a training scheme, which Table 1 always has for every "
                f"scheme of eval.schemes (plain: Baseline, balanced: Balanced, logit-adjusted: Logit-adjusted); list "
                f"only synthetic sets in eval.methods and the schemes in eval.schemes."
            )
        else:
            raise ConfigError(
                f"eval.methods: {entry!r} is neither a set (resample, smote, oracle, roentgen, roentgen@N) nor a "
                f"variant; the variants are {', '.join(variants)} (config key variants)."
            )
    return out


def expand_methods(
    methods: Sequence[str], variants: Mapping[str, Mapping], num_steps: int, schemes: Sequence[str] = ("plain",)
) -> list[str]:
    """Table 1's rows in order: per scheme of ``schemes`` (eval.schemes), its real-only row, then one row per set of
    eval.methods (:func:`expand_sets`) trained under it (ours@1, balanced+ours@1, ...)."""
    sets = expand_sets(methods, variants, num_steps)
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        raise ConfigError(f"eval.schemes: {unknown[0]!r} is not a training scheme; the schemes are {', '.join(SCHEMES)}.")
    return [row_id(scheme, synthetic) for scheme in schemes for synthetic in (None, *sets)]


def effective_policy(policy: str, tail_mask: str) -> str:
    """The label policy a fused sample gets: ``auto`` is neighbour for a region mask (the rest of the image is the
    head neighbour's) and union for the paper's whole-image cells; any other policy as given."""
    if policy == "auto":
        return "neighbour" if tail_mask == "region" else "union"
    if policy not in LABEL_POLICIES:
        raise ValueError(f"label policy {policy!r} is not one of auto, {', '.join(LABEL_POLICIES)}")
    return policy


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
        f"labels {effective_policy(fusion['label_policy'], fusion.get('tail_mask', 'cells'))}"
        + (" (auto)" if fusion["label_policy"] == "auto" else ""),
        f"neighbour among the {pairing['k']} nearest in {pairing['space']} space",
        f"UNet prompt: {prompt}, guidance {generate['guidance_scale']:g}, of {generate['num_steps']} steps",
    ]
    text = f"{display_name(name + '@0')[:-2]}: " + "; ".join(parts)
    own = sections.get("description")
    return text + (f" ({own})" if own else "")
