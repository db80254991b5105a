"""Table 1: rows and columns from the evaluation files; an empty set is an error; the real Snakefile on a tiny config."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ltaug.common.errors import InputError
from ltaug.common.variants import describe, display_name, resolve
from ltaug.evaluation.report import build_table, markdown, notes_for
from helpers.workflow import COLUMNS, REFERENCES


def classifier_result(head: list[float], tail: list[float], synthetic: int) -> dict:
    runs = [{"map_head": h, "map_tail": t, "map_all": 0.5, "auroc_macro": 0.8} for h, t in zip(head, tail)]
    std = (lambda v: float(pd.Series(v).std()) if len(v) > 1 else 0.0)
    return {"seeds": list(range(len(head))), "n": {"synthetic": synthetic},
            "mean": {"map_head": sum(head) / len(head), "map_tail": sum(tail) / len(tail), "auroc_macro": 0.8},
            "std": {"map_head": std(head), "map_tail": std(tail), "auroc_macro": 0.0}, "runs": runs}  # fmt: skip


def fid_result(fd: float, new: float = 0.5) -> dict:
    return {"metric": "FD-DenseNet", "avg_tail_fd": fd, "avg_tail_kid": fd / 100, "avg_label_fidelity": 0.5,
            "avg_detector_fidelity": 0.25, "avg_tail_precision": 0.6, "avg_tail_recall": 0.4, "avg_tail_density": 0.9,
            "avg_tail_coverage": 0.5, "avg_memorised": fd / 1000,
            "novelty": {"pixels_new": new, "features_new": new / 2, "pixels_median_ratio": 2 * new,
                        "features_median_ratio": new, "own_source": 1 - new},
            "detector": {"fidelity": {"rate": 0.25, "lo": 0.2, "hi": 0.3}, "fpr_synthetic": {"rate": 0.05}}}  # fmt: skip


def interval(estimate: float, half: float, p: float | None = None) -> dict:
    return {"estimate": estimate, "lo": estimate - half, "hi": estimate + half} | ({"p": p, "p_holm": min(1, 2 * p)} if p is not None else {})


def intervals_result(classifier: dict, references=REFERENCES) -> dict:
    """compare_methods' file for hand-made classifier results: intervals and deltas (to each row's own scheme's
    real-only row and to each reference) of +-0.05, and the share of the scheme's oracle's gain."""
    from ltaug.common.variants import parse_row, row_id
    from ltaug.evaluation.intervals import row_references

    methods = {}
    refs = row_references(list(classifier), references)
    for m, c in classifier.items():
        mean = c["mean"]
        methods[m] = {k: interval(mean[k], 0.05) for k in ("map_head", "map_tail", "auroc_macro")}
        methods[m]["references"] = {name: r for name, r in refs[m].items() if r in classifier}
        methods[m]["delta"] = {
            ref: {k: interval(mean[k] - classifier[ref]["mean"][k], 0.05, 0.5 if abs(mean[k] - classifier[ref]["mean"][k]) < 0.05 else 0.0004)
                  for k in ("map_head", "map_tail")}
            for ref in methods[m]["references"].values()
        }  # fmt: skip
        scheme, synthetic = parse_row(m)
        real, oracle = row_id(scheme, None), row_id(scheme, "oracle")
        if synthetic and oracle in classifier:
            room = classifier[oracle]["mean"]["map_tail"] - classifier[real]["mean"]["map_tail"]
            share = (mean["map_tail"] - classifier[real]["mean"]["map_tail"]) / room
            methods[m]["oracle_share"] = {"estimate": share, "lo": share - 0.5, "hi": share + 0.5, "defined": room > 0.1}
    return {"level": 0.95, "references": list(references), "methods": methods}


def test_table_has_one_row_per_method_with_intervals_and_differences_to_every_reference():
    methods = ["baseline", "resample", "smote", "roentgen@75", "ours@0", "balanced", "balanced+oracle", "balanced+resample",
               "balanced+ours@0"]
    classifier = {"baseline": classifier_result([0.6, 0.8], [0.1, 0.3], 0), "resample": classifier_result([0.7, 0.7], [0.3, 0.3], 400),
                  "smote": classifier_result([0.7, 0.7], [0.2, 0.2], 400), "roentgen@75": classifier_result([0.5, 0.5], [0.1, 0.1], 400),
                  "ours@0": classifier_result([0.9, 0.7], [0.4, 0.2], 400), "balanced": classifier_result([0.7, 0.7], [0.5, 0.5], 0),
                  "balanced+oracle": classifier_result([0.7, 0.7], [0.7, 0.7], 400),
                  "balanced+resample": classifier_result([0.7, 0.7], [0.52, 0.52], 400),
                  "balanced+ours@0": classifier_result([0.7, 0.7], [0.6, 0.6], 400)}  # fmt: skip
    fid = {m: fid_result(10.0 * (i + 1), new=0.1 * i) for i, m in enumerate(["resample", "smote", "roentgen@75", "ours@0", "oracle"])}
    table = build_table(methods, classifier, fid, intervals_result(classifier))
    assert list(table.columns) == COLUMNS
    assert table["row"].tolist() == ["Baseline", "Resample", "SMOTE", "RoentGen@75", "Ours@0", "Balanced", "Balanced+Oracle",
                                     "Balanced+Resample", "Balanced+Ours@0"]  # fmt: skip
    assert table["scheme"].tolist() == ["plain"] * 5 + ["balanced"] * 4
    assert table.loc[0, "head_map"] == pytest.approx(0.7) and table.loc[0, "head_map_std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc[0, "head_map_lo"] == pytest.approx(0.65) and table.loc[0, "head_map_hi"] == pytest.approx(0.75)
    assert table["avg_tail_fd"].tolist()[1:5] == [10.0, 20.0, 30.0, 40.0] and math.isnan(table.loc[0, "avg_tail_fd"])
    assert table.loc[8, "avg_tail_fd"] == 40.0, "a set's quality is the same under every scheme"
    # each row against its own scheme's real-only row: Baseline for plain, Balanced for balanced
    assert table["delta_tail_map_own"].tolist() == pytest.approx([float("nan"), 0.1, 0.0, -0.1, 0.1, float("nan"), 0.2, 0.02,
                                                                  0.1], nan_ok=True)  # fmt: skip
    # and against Resample trained the same way: Resample for plain rows, Balanced+Resample for balanced ones
    assert table["delta_tail_map_resample"].tolist() == pytest.approx([-0.1, float("nan"), -0.1, -0.2, 0.0, -0.02, 0.18,
                                                                       float("nan"), 0.08], nan_ok=True)  # fmt: skip
    assert table.loc[8, "oracle_share"] == pytest.approx(0.5) and table.loc[8, "oracle_share_defined"]
    assert table["novelty_pixels_new"].tolist()[1:5] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    text = markdown(table, ["a note"], references=REFERENCES)
    assert ("| Method | Avg Tail KID ↓ | Avg Tail FD-DenseNet ↓ | Head mAP ↑ [95% CI] | Tail mAP ↑ [95% CI] | Δ Tail mAP vs "
            "its scheme's real-only row [95% CI] | Share of the oracle's gain [95% CI] | Δ Tail mAP vs Resample [95% CI] "
            "(its scheme's) | Macro AUROC ↑ [95% CI] |") in text
    assert "| Baseline | – | – | 0.700 [0.650, 0.750] | 0.200 [0.150, 0.250] | – | – | -0.100 [-0.150, -0.050] | 0.800 [0.750, 0.850] |" in text
    assert ("| Ours@0 | 0.4000 | 40.00 | 0.800 [0.750, 0.850] | 0.300 [0.250, 0.350] | +0.100 [+0.050, +0.150] | – | "
            "+0.000 [-0.050, +0.050] |") in text  # fmt: skip
    assert ("| Balanced+Ours@0 | 0.4000 | 40.00 | 0.700 [0.650, 0.750] | 0.600 [0.550, 0.650] | +0.100 [+0.050, +0.150] | "
            "0.50 [0.00, 1.00] | +0.080 [+0.030, +0.130] |") in text
    # what the samples are, once per set: new (pixels / judge), ratio, own source, memorised, label and detector fidelity, FPR
    assert "| SMOTE | 0.10 / 0.05 | 0.20 | 0.90 | 0.020 | 0.500 | 0.250 [0.200, 0.300] | 0.050 | 0.600 | 0.400 | 0.500 |" in text
    assert text.count("| Ours@0 | 0.30 / 0.15 |") == 1 and "| Oracle | 0.40 / 0.20 |" in text
    # one verdict per method and reference: an interval that excludes 0 is a difference, one that holds it is not
    assert "**SMOTE**: tail mAP +0.000 [-0.050, +0.050] vs Baseline (p 0.500, Holm 1.000): not distinguishable from Baseline" in text
    assert "tail mAP -0.100 [-0.150, -0.050] vs Resample (p < 0.001, Holm < 0.001): lower than Resample" in text
    assert "**RoentGen@75**: tail mAP -0.100 [-0.150, -0.050] vs Baseline (p < 0.001, Holm < 0.001): lower than Baseline" in text
    assert "**Balanced+Ours@0**: tail mAP +0.100 [+0.050, +0.150] vs Balanced (p < 0.001, Holm < 0.001): higher than Balanced" in text
    assert "**Balanced+Ours@0**: tail mAP +0.100 [+0.050, +0.150] vs Balanced" in text
    assert "tail mAP +0.080 [+0.030, +0.130] vs Balanced+Resample (p < 0.001" in text
    assert ("Differences of every row to its scheme's real-only row and to Resample of its scheme (95% paired "
            "bootstrap interval") in text
    assert "- a note" in text


def test_a_variant_s_rows_appear_with_its_settings():
    from ltaug.common.config import validate_config

    config = validate_config({"variants": {"ours": {}, "ours-paper": {"cam": {"method": "eigencam"}, "description": "the paper",
                                                                      "fusion": {"tau_h": 0.4, "tau_l": 0.4, "decode": "d"}}},
                              "cam": {"method": "layercam"}, "fusion": {"tau_h": 0.1, "tau_l": 0.0, "decode": "residual"}})  # fmt: skip
    variants = resolve(config)
    lines = {v: describe(v, variants[v]) for v in variants}
    assert lines["ours-paper"].startswith("Ours-paper: eigencam maps; M^S = map_t > 0.4, M^G = map_h < 0.4; z_F = D(z_F^s) (Eq. 13)")
    assert lines["ours-paper"].endswith("(the paper)")
    assert lines["ours"].startswith("Ours: layercam maps; M^S = map_t > 0.1, M^G = map_h < 0 (empty); residual decode")
    methods = ["baseline", "resample", "ours@0", "ours-paper@0", "ours-paper@5"]
    classifier = {m: classifier_result([0.7], [0.2], 0 if m == "baseline" else 8) for m in methods}
    table = build_table(methods, classifier, {m: fid_result(1.0) for m in methods[1:]}, intervals_result(classifier))
    assert table["row"].tolist() == ["Baseline", "Resample", "Ours@0", "Ours-paper@0", "Ours-paper@5"]
    assert table["variant"].tolist()[2:] == ["ours", "ours-paper", "ours-paper"]
    base = {"classifier": "DenseNet121", "config": {"image_size": 64, "steps": 10}, "seeds": [0], "test_positives": {t: 1 for t in SPLIT_TAIL},
            "n": {"train_real": 10, "val": 2, "test": 4}}  # fmt: skip
    from helpers.stage_models import SPLIT

    notes = notes_for(SPLIT, {"baseline": base}, {}, None, {"seeds": [0], "level": 0.95, "resamples": 10, "n_test": 4},
                      {v: {"line": line} for v, line in lines.items()})  # fmt: skip
    text = markdown(table, notes, references=REFERENCES)
    assert "| Ours-paper@5 |" in text and "- Variant Ours-paper: eigencam maps; M^S = map_t > 0.4" in text


SPLIT_TAIL = ["Nodule", "Fracture"]


def test_a_method_without_synthetic_samples_is_an_error_not_a_row_of_zeros():
    classifier = {"baseline": classifier_result([0.6], [0.1], 0), "smote": classifier_result([0.6], [0.1], 0)}
    intervals = intervals_result(classifier)
    with pytest.raises(InputError, match="'smote': it was trained without any synthetic sample"):
        build_table(["baseline", "smote"], classifier, {"smote": fid_result(1.0)}, intervals)
    with pytest.raises(InputError, match="'smote': no evaluate_fid results"):
        build_table(["baseline", "smote"], {**classifier, "smote": classifier_result([0.6], [0.1], 8)}, {}, intervals)
    with pytest.raises(InputError, match="'smote': not in intervals.json"):
        build_table(["baseline", "smote"], {**classifier, "smote": classifier_result([0.6], [0.1], 8)},
                    {"smote": fid_result(1.0)}, {"methods": {"baseline": intervals["methods"]["baseline"]}})


def test_a_p_value_at_the_bootstrap_floor_says_so():
    from ltaug.evaluation.report import _p

    assert _p(2 / 1001, 1000) == "≤ 0.002" and _p(0.05, 1000) == "0.050" and _p(0.0004) == "< 0.001"
    assert _p(float("nan"), 1000) == "–"


def test_display_names():
    assert [display_name(m) for m in ("baseline", "balanced", "resample", "smote", "roentgen@75", "ours@5", "ours-paper@0")] == [
        "Baseline", "Balanced", "Resample", "SMOTE", "RoentGen@75", "Ours@5", "Ours-paper@0"]  # fmt: skip
    with pytest.raises(ValueError, match="unknown row 'gan'"):
        display_name("gan")


# ---------------------------------------------------------------------------- the workflow on a tiny config


def test_the_funnels_side_by_side_say_where_each_variant_loses_the_finding():
    from ltaug.evaluation.report import funnel_table

    def funnel(variant, values):
        rows = [{"stage": s, "measure": m, "class": "mean", "n": 10, "value": v, "fpr": 0.05}
                for (s, m), v in values.items()]  # fmt: skip
        return pd.DataFrame(rows)

    path = {("real", "hit_rate"): 0.95, ("vae", "hit_rate"): 0.9, ("il", "hit_rate"): 0.3}
    ours = funnel("ours", {**path, ("cam:layercam", "box_in_mask"): 0.8, ("fusion", "box_from_tail"): 0.7,
                           ("ours@0", "hit_rate"): 0.5})  # fmt: skip
    paper = funnel("ours-paper", {**path, ("cam:eigencam", "box_in_mask"): 0.25, ("fusion", "box_from_tail"): 0.15,
                                  ("ours-paper@0", "hit_rate"): 0.1})  # fmt: skip
    text = funnel_table({"ours": ours, "ours-paper": paper}, off_path={"ours"})
    assert "| stage | Ours | Ours-paper |" in text and "| cam box_in_mask | 0.800 | 0.250 |" in text
    assert "| @0 hit_rate | 0.500 | 0.100 |" in text and "false-positive rate on real negatives 0.050" in text
    # ours's images do not go through D(S(z)) alone: its il row is shown but is not a step of its path
    assert "- Ours loses most of the finding between `fusion box_from_tail` and `@0 hit_rate` (0.700 -> 0.500)." in text
    assert "- Ours-paper loses most of the finding between `vae hit_rate` and `il hit_rate` (0.900 -> 0.300)." in text
