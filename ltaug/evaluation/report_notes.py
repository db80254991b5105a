"""The notes under Table 1: the facts a reader needs beside its numbers (what each variant and scheme does, the
classifier, seeds and test split, the judge, what each column means), from the evaluation files."""

from __future__ import annotations

import numpy as np

from ltaug.data.classes import ClassSplit


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def notes_for(
    split: ClassSplit, classifier: dict[str, dict], fid: dict[str, dict], detector: dict | None, intervals: dict,
    variants: dict[str, dict] | None = None, judge: dict | None = None,
) -> list[str]:  # fmt: skip
    """The facts a reader needs beside the numbers: what each variant does, classifier, seeds, test split, the
    judge, what each column means."""
    base = classifier["baseline"] if "baseline" in classifier else next(iter(classifier.values()))
    seeds = len(intervals["seeds"])
    notes = [f"Variant {v['line']}." for v in (variants or {}).values()]
    notes += [
        f"Intervals: {intervals['level']:.0%} percentile bootstrap over {intervals['resamples']} resamples of the "
        f"{intervals['n_test']} test images, the same resamples for every method, so each Δ is a paired difference "
        + (f"(the {seeds} classifier seeds are resampled too, the same draw for every method: the interval holds the "
           f"seed-to-seed spread of the mean of {seeds} trainings); " if seeds > 1 else "(one classifier seed: the "
           "interval holds the test-set variance only, not the spread between trainings); ")
        + f"p: two-sided bootstrap p-value of a zero difference (≤ {2 / (intervals['resamples'] + 1):.3f}: no "
        "replicate reached zero, the smallest value this many resamples can give); Holm: adjusted over the methods.",
        f"Classifier: {base['classifier']} at {base['config']['image_size']} px, {base['config']['steps']} steps, "
        f"seeds {base['seeds']}; trained on {base['n']['train_real']} real training images (+ the method's synthetic "
        f"set), selected on {base['n']['val']} validation images, scored on the {base['n']['test']} test images only.",
        _schemes_note(classifier),
        f"Head classes: {', '.join(split.head)}. Tail classes: {', '.join(split.tail)} (test positives: "
        + ", ".join(f"{c} {base['test_positives'][c]}" for c in split.tail) + ").",
    ]
    policy = split.labels or {}
    uncertain, blank = policy.get("uncertain", "error"), policy.get("blank", "error")
    parts = [f"uncertain (-1) labels read as {int(uncertain == 'ones')} (U-{uncertain.capitalize()})"] if uncertain != "error" else []
    parts += ["blank labels read as 0"] if blank != "error" else []
    if parts:
        notes.append("Labels: " + "; ".join(parts) + " (data.uncertain, data.blank).")
    if policy.get("ignore_labels"):
        notes.append(f"Labels: names dropped as no class (data.ignore_labels): {', '.join(policy['ignore_labels'])}.")
    any_fid = next(iter(fid.values()), None)
    if judge:
        notes.append(
            f"Judge: {any_fid['judge'] if any_fid else 'a DenseNet'}, trained on the real training images only with "
            f"class-balanced batches (eval.judge.balance {judge.get('balance', 1.0):g}), so that its features see the "
            f"tail; test tail mAP {judge['mean']['map_tail']:.3f}, head mAP {judge['mean']['map_head']:.3f}. Distances, "
            "precision / recall, memorisation and novelty are measured in its features, label fidelity by its scores."
        )
    if any_fid:
        notes.append(
            f"Avg Tail {any_fid['metric']}: Frechet distance per tail class between its generated samples and its real "
            f"images of the {'/'.join(any_fid['real_splits'])} split(s), in the features of {any_fid['features']}, "
            f"averaged over tail classes; KID likewise (unbiased, polynomial kernel)."
            + (" FD-DenseNet is not Inception FID: compare it only within this table." if any_fid["metric"] != "FID" else "")
            + " With a few dozen real images per tail class the Frechet distance is dominated by its small-sample bias;"
            " KID is unbiased and is the headline."
        )
        notes.append(
            "New: share of a set's samples that are at least as far from every real training image of their tail class "
            "as the real images of that class are from their nearest other (the median of those distances, d_real), in "
            "grayscale pixels at the classifier's input size / in the judge's features; d / d_real: the median ratio (0: "
            "a copy). Nearest is its source: share of samples whose nearest training image (of any class) is one they "
            "were made from (tail_id, head_id, source_id, neighbour_id): a near-copy of its source (novelty.png shows "
            "each set's median sample beside its nearest real image)."
        )
        ks = sorted({v["prdc_k"] for v in any_fid["per_class"].values() if v["prdc_k"]})
        k = f"k = {', '.join(map(str, ks))}" if ks else "undefined: fewer than 3 real images per tail class"
        mem = any_fid["memorisation"]
        notes.append(
            f"Precision / recall / coverage (Naeem et al. 2020, {k}; density in table1.csv) of each tail class's "
            f"samples against its real images, averaged. Memorised: share of samples whose nearest training image "
            f"({mem['train']} images) is closer than the {mem['percentile']:g}th percentile ({mem['threshold']:.3f}) of "
            f"{mem['reference']} real test images' nearest-training-image distances; a generator that does not copy "
            f"scores about {mem['percentile'] / 100:.2f}, one that copies training images 1 (memorisation.png shows "
            f"the closest pairs)."
        )
        real = [v["label_rate_real"] for v in any_fid["per_class"].values()]
        notes.append(
            "Label fidelity: share of the samples made for a tail class that the judge scores positive for that class "
            f"(threshold: best F1 on validation); on real held-out images of those classes: {np.mean(real):.3f}."
        )
        if detector:
            parts = []
            for name in split.tail:
                test = detector["classes"].get(name, {}).get("test")
                if test:
                    parts.append(f"{name} sensitivity {_fmt(test['sensitivity'], digits=2)}, specificity "
                                 f"{_fmt(test['specificity'], digits=2)}")  # fmt: skip
            fitted = next(iter(detector["classes"].values()), {}).get("fitted_on", "val")
            notes.append(
                "Detector fidelity: share of the samples made for a tail class in which the demo's pattern detector finds "
                f"its finding, mean over tail classes with a bootstrap interval over the samples; the detector's region "
                f"and threshold are fitted on the {fitted} split only (no training image, which the samples are made "
                "from). Detector FPR, synthetic: its rate on the samples made for the other tail classes, negative for "
                "the class; a fidelity near it means the finding is not there. On real test images: "
                + "; ".join(parts) + "."
            )
    return notes


SCHEME_LINES = {
    "plain": "Plain (shuffled passes over the real images and the set, the paper's; rows named by the set alone)",
    "balanced": "Balanced (class-balanced batches)",
    "logit-adjusted": "Logit-adjusted (plain passes, the logit-adjusted loss of Menon et al. 2021 with the training prior)",
}


def _schemes_note(classifier: dict[str, dict]) -> str:
    """What the training schemes of this run, the mix, the oracle and the draws are, as this run set them."""
    schemes = list(dict.fromkeys(c["scheme"] for c in classifier.values() if "scheme" in c))
    draws = max((len(c.get("draws") or []) for c in classifier.values()), default=0)
    text = ("Schemes: every set is trained under each of " + ", ".join(SCHEME_LINES[s] for s in schemes) + "; each "
            "scheme's real-only row (Baseline, Balanced, Logit-adjusted) is its reference: every row's Δ and share are "
            "taken to the real-only row of its own scheme, and a reference named by a set (Resample) is that set "
            "trained the same way")  # fmt: skip
    mixed = {c["scheme"]: c["rebalancing"] for c in classifier.values() if c.get("rebalancing") and c["n"]["synthetic"]}
    share = mixed.get("balanced") or mixed.get("logit-adjusted")
    if share:
        text += (f". A set is added on top of re-balancing: {share['synthetic_share']:g} of the draws made for a tail "
                 "class go to its synthetic samples" + (" (logit-adjusted: that share of its positives per pass, the "
                 "prior counting them)" if "logit-adjusted" in mixed else "") + ", a synthetic sample's loss weighs "
                 f"{share['synthetic_weight']:g}")  # fmt: skip
    if "logit-adjusted" in mixed:
        text += f"; tau {mixed['logit-adjusted']['tau']:g}"
    text += (". Oracle: fresh real images of each tail class, as many as a set adds, never seen by another row; its gain "
             "over its scheme's real-only row is what a perfect generator could add, and a row's share of it is its "
             "gain divided by the oracle's (per bootstrap replicate for the interval; meaningless where the oracle "
             "gains nothing)")  # fmt: skip
    if draws > 1:
        text += (f". Draws: classifier seed i trains with draw i of every set ({draws} draws: pairing, fusion, "
                 "generation and the baselines' seeds advanced per draw; the oracle's images fresh per draw), so the "
                 "intervals hold the sets' own randomness")  # fmt: skip
    return text + "."


