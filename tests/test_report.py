"""Table 1: rows and columns from the evaluation files; an empty set is an error; the real Snakefile on a tiny config."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ltaug.common.errors import InputError
from ltaug.common.variants import describe, display_name, resolve
from ltaug.evaluation.report import build_table, markdown, notes_for

TAIL = ["Nodule", "Fracture", "Calcification of the Aorta", "Pneumoperitoneum"]
REFERENCES = ["baseline", "resample"]
COLUMNS = ["method", "row", "variant", "metric", "avg_tail_kid", "avg_tail_fd", "avg_tail_precision", "avg_tail_recall",
           "avg_tail_density", "avg_tail_coverage", "avg_memorised",
           "head_map", "head_map_lo", "head_map_hi", "head_map_std", "tail_map", "tail_map_lo", "tail_map_hi",
           "tail_map_std", "auroc_macro", "auroc_macro_lo", "auroc_macro_hi", "auroc_macro_std"]
COLUMNS += [f"delta_{what}_map_{ref}{part}" for ref in REFERENCES for what in ("tail", "head")
            for part in ("", "_lo", "_hi", "_p", "_p_holm")]
COLUMNS += ["novelty_pixels_new", "novelty_features_new", "novelty_pixels_median_ratio", "novelty_features_median_ratio",
            "novelty_own_source", "tail_label_fidelity", "tail_detector_fidelity", "tail_detector_fidelity_lo",
            "tail_detector_fidelity_hi", "detector_fpr_synthetic", "n_synthetic", "seeds"]  # fmt: skip


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
    """compare_methods' file for hand-made classifier results: intervals and deltas to each reference of +-0.05."""
    methods = {}
    for m, c in classifier.items():
        mean = c["mean"]
        methods[m] = {k: interval(mean[k], 0.05) for k in ("map_head", "map_tail", "auroc_macro")}
        methods[m]["delta"] = {
            ref: {k: interval(mean[k] - classifier[ref]["mean"][k], 0.05, 0.5 if abs(mean[k] - classifier[ref]["mean"][k]) < 0.05 else 0.0004)
                  for k in ("map_head", "map_tail")}
            for ref in references if ref != m and ref in classifier
        }  # fmt: skip
    return {"level": 0.95, "references": list(references), "methods": methods}


def test_table_has_one_row_per_method_with_intervals_and_differences_to_every_reference():
    methods = ["baseline", "resample", "smote", "roentgen@75", "ours@0"]
    classifier = {"baseline": classifier_result([0.6, 0.8], [0.1, 0.3], 0), "resample": classifier_result([0.7, 0.7], [0.3, 0.3], 400),
                  "smote": classifier_result([0.7, 0.7], [0.2, 0.2], 400), "roentgen@75": classifier_result([0.5, 0.5], [0.1, 0.1], 400),
                  "ours@0": classifier_result([0.9, 0.7], [0.4, 0.2], 400)}  # fmt: skip
    fid = {m: fid_result(10.0 * (i + 1), new=0.1 * i) for i, m in enumerate(methods[1:])}
    table = build_table(methods, classifier, fid, intervals_result(classifier))
    assert list(table.columns) == COLUMNS
    assert table["row"].tolist() == ["Baseline", "Resample", "SMOTE", "RoentGen@75", "Ours@0"]
    assert table.loc[0, "head_map"] == pytest.approx(0.7) and table.loc[0, "head_map_std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc[0, "head_map_lo"] == pytest.approx(0.65) and table.loc[0, "head_map_hi"] == pytest.approx(0.75)
    assert table["avg_tail_fd"].tolist()[1:] == [10.0, 20.0, 30.0, 40.0] and math.isnan(table.loc[0, "avg_tail_fd"])
    assert table["delta_tail_map_baseline"].tolist()[1:] == pytest.approx([0.1, 0.0, -0.1, 0.1])
    assert table["delta_tail_map_resample"].tolist() == pytest.approx([-0.1, float("nan"), -0.1, -0.2, 0.0], nan_ok=True)
    assert table["novelty_pixels_new"].tolist()[1:] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    text = markdown(table, ["a note"], references=REFERENCES)
    assert ("| Method | Avg Tail KID ↓ | Avg Tail FD-DenseNet ↓ | Head mAP ↑ [95% CI] | Tail mAP ↑ [95% CI] | Δ Tail mAP vs "
            "Baseline [95% CI] | Δ Tail mAP vs Resample [95% CI] | Macro AUROC ↑ [95% CI] |") in text
    assert "| Baseline | – | – | 0.700 [0.650, 0.750] | 0.200 [0.150, 0.250] | – | -0.100 [-0.150, -0.050] | 0.800 [0.750, 0.850] |" in text
    assert "| Ours@0 | 0.4000 | 40.00 | 0.800 [0.750, 0.850] | 0.300 [0.250, 0.350] | +0.100 [+0.050, +0.150] | +0.000 [-0.050, +0.050] |" in text
    # what the samples are: new (pixels / judge), ratio, own source, memorised, label and detector fidelity, FPR
    assert "| SMOTE | 0.10 / 0.05 | 0.20 | 0.90 | 0.020 | 0.500 | 0.250 [0.200, 0.300] | 0.050 | 0.600 | 0.400 | 0.500 |" in text
    # one verdict per method and reference: an interval that excludes 0 is a difference, one that holds it is not
    assert "**SMOTE**: tail mAP +0.000 [-0.050, +0.050] vs Baseline (p 0.500, Holm 1.000): not distinguishable from Baseline" in text
    assert "tail mAP -0.100 [-0.150, -0.050] vs Resample (p < 0.001, Holm < 0.001): lower than Resample" in text
    assert "**RoentGen@75**: tail mAP -0.100 [-0.150, -0.050] vs Baseline (p < 0.001, Holm < 0.001): lower than Baseline" in text
    assert "**Ours@0**: tail mAP +0.100 [+0.050, +0.150] vs Baseline (p < 0.001, Holm < 0.001): higher than Baseline" in text
    assert "Differences to Baseline and to Resample (95% paired bootstrap interval" in text
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
    from stage_models import SPLIT

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
    with pytest.raises(ValueError, match="unknown method 'gan'"):
        display_name("gan")


# ---------------------------------------------------------------------------- the workflow on a tiny config

@pytest.fixture
def evaluated(tiny_reference):
    """The tiny workflow (test_workflow.py's config), run once per session (conftest.py)."""
    return tiny_reference


@pytest.mark.workflow
@pytest.mark.slow
def test_tiny_evaluation_produces_every_row_and_column(evaluated):
    from test_workflow import ROWS

    table = pd.read_csv(evaluated / "results/report/table1.csv")
    assert table["row"].tolist() == ROWS and list(table.columns) == COLUMNS
    synthetic = table[~table["method"].isin(["baseline", "balanced"])]
    for column in ("avg_tail_fd", "avg_tail_kid", "head_map", "tail_map", "head_map_std", "tail_label_fidelity",
                   "tail_detector_fidelity", "detector_fpr_synthetic", "delta_tail_map_baseline"):  # fmt: skip
        assert synthetic[column].notna().all(), column
    assert synthetic.loc[synthetic["method"] != "resample", "delta_tail_map_resample"].notna().all()
    # every set made from training images says whether its nearest one is its source; text-to-image has no source
    made = synthetic["method"] != "roentgen@4"
    assert synthetic.loc[made, "novelty_own_source"].notna().all() and synthetic.loc[~made, "novelty_own_source"].isna().all()
    # one training image per tail class here: no distance between real images of a class, so no novelty ratio
    assert table["novelty_pixels_new"].isna().all() and table["novelty_features_median_ratio"].isna().all()
    assert table.loc[table["method"] == "resample", "delta_tail_map_resample"].isna().all()  # no difference to itself
    assert (synthetic["n_synthetic"] == 3 * len(TAIL)).all() and (table["seeds"] == 2).all()
    assert table["metric"].dropna().unique().tolist() == ["FD-DenseNet"]
    md = (evaluated / "results/report/table1.md").read_text()
    assert all(f"| {row} |" in md for row in ROWS)
    for png in ("per_class_ap.png", "samples.png", "forest.png", "memorisation.png", "novelty.png"):
        assert (evaluated / "results/report" / png).stat().st_size > 1000
    assert "Differences to Baseline and to Resample (95% paired bootstrap interval" in md
    assert md.count("not distinguishable from") + md.count("than Baseline") + md.count("than Resample") >= 2 * (
        2 * (len(ROWS) - 1) - 1)  # a verdict on tail and head for every method and reference (Resample: not itself)
    assert "- Variant Ours-paper: eigencam maps; M^S = map_t > 0.4, M^G = map_h < 0.4; z_F = D(z_F^s) (Eq. 13)" in md
    assert "- Variant Ours: layercam maps; M^S = map_t > 0.4, M^G = map_h < 0.6; z_F = D(z_F^s) (Eq. 13)" in md
    assert "Fidelity funnel of every variant" in md and "| stage | Ours | Ours-paper |" in md
    intervals = json.loads((evaluated / "results/eval/intervals.json").read_text())
    assert intervals["resamples"] == 1000 and intervals["n_test"] == 12 and intervals["seeds"] == [0, 1]
    assert intervals["references"] == ["baseline", "resample"]
    for row in table.itertuples():  # the point estimate is evaluate_classifier's mean over seeds (scikit-learn's AP)
        assert row.tail_map_lo <= row.tail_map <= row.tail_map_hi, row.method
        c = json.loads((evaluated / f"results/eval/classifier/{row.method}.json").read_text())
        assert row.tail_map == pytest.approx(c["mean"]["map_tail"], abs=1e-12), row.method
    # resampled real tail images are copies of training images: every one is memorised and its own source
    resample = table.loc[table["method"] == "resample"].iloc[0]
    assert resample["avg_memorised"] == 1.0 and resample["novelty_own_source"] == 1.0
    baseline = json.loads((evaluated / "results/eval/classifier/baseline.json").read_text())
    assert baseline["scored_split"] == "test" and baseline["n"]["test"] == 12 and len(baseline["runs"]) == 2
    balanced = json.loads((evaluated / "results/eval/classifier/balanced.json").read_text())
    assert balanced["balance"] == 1.0 and baseline["balance"] == 0.0 and balanced["n"]["synthetic"] == 0
    judge = json.loads((evaluated / "results/eval/judge/judge.json").read_text())
    assert judge["method"] == "judge" and judge["balance"] == 1.0 and judge["seeds"] == [0]
    fid = json.loads((evaluated / "results/eval/fid/smote.json").read_text())
    assert set(fid["per_class"]) == set(TAIL) and all(v["n_generated"] == 3 for v in fid["per_class"].values())
    assert "judge" in fid["features"] and fid["detector"]["fpr_synthetic"]["n"] > 0
    for stage, rule in (("baselines", "baseline_smote"), ("baselines", "baseline_resample"), ("baselines", "baseline_roentgen@4"),
                        ("eval", "evaluate_classifier_baseline"), ("eval", "evaluate_fid_smote"), ("eval", "fit_detector"),
                        ("eval", "real_features"), ("eval", "train_judge"), ("eval", "compare_methods"),
                        ("eval", "fidelity_funnel_ours-paper"), ("report", "report")):  # fmt: skip
        assert (evaluated / f"logs/{stage}/{rule}.log").is_file(), rule
        assert (evaluated / f"benchmarks/{stage}/{rule}.tsv").is_file(), rule


@pytest.mark.workflow
@pytest.mark.slow
def test_ours_rows_come_from_rule_generate(evaluated):
    table = pd.read_csv(evaluated / "results/report/table1.csv")
    ours = table[table["variant"].notna()]
    assert ours["method"].tolist() == ["ours@0", "ours@1", "ours-paper@0"] and ours["avg_tail_fd"].notna().all()


@pytest.mark.workflow
@pytest.mark.slow
def test_classifier_settings_rerun_only_the_evaluation(evaluated):
    from test_workflow import planned_jobs, snakemake

    config = yaml.safe_load((evaluated / "config.yaml").read_text())
    original = json.loads(json.dumps(config))
    n = len(pd.read_csv(evaluated / "results/report/table1.csv"))
    try:
        config["eval"]["classifier"]["steps"] = 5
        (evaluated / "config.yaml").write_text(yaml.safe_dump(config))
        jobs = planned_jobs(snakemake(evaluated, "--dry-run", "results/report/table1.csv"))
        assert jobs == {"evaluate_classifier": n, "train_judge": 1, "real_features": 1, "evaluate_fid": n - 2,
                        "compare_methods": 1, "report": 1}  # fmt: skip
    finally:
        (evaluated / "config.yaml").write_text(yaml.safe_dump(original))


@pytest.mark.workflow
@pytest.mark.slow
def test_an_empty_synthetic_set_stops_the_evaluation_with_its_name(evaluated, tmp_path):
    from test_workflow import snakemake

    workdir = tmp_path / "copy"
    shutil.copytree(evaluated, workdir, symlinks=True)
    manifest = workdir / "results/synthetic/smote/manifest.csv"
    pd.read_csv(manifest).iloc[:0].to_csv(manifest, index=False)
    result = snakemake(workdir, "--forcerun", "evaluate_classifier", "results/eval/classifier/smote.json")
    assert result.returncode != 0
    assert "the synthetic set of method 'smote' has no samples" in result.stdout + result.stderr


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


@pytest.mark.workflow
@pytest.mark.slow
def test_a_method_s_training_rows_export_for_any_trainer(evaluated, tmp_path):
    from test_workflow import snakemake

    workdir = tmp_path / "copy"
    shutil.copytree(evaluated, workdir, symlinks=True)
    result = snakemake(workdir, "results/export/ours@0.csv", "results/export/baseline.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    classes = json.loads((workdir / "results/data/classes.json").read_text())["classes"]
    rows = pd.read_csv(workdir / "results/export/ours@0.csv")
    assert list(rows.columns[:3 + len(classes)]) == ["id", "path", "synthetic", *classes]
    assert (rows["synthetic"] == 0).sum() == 60 and (rows["synthetic"] == 1).sum() == 3 * len(TAIL)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rows["path"])
    assert rows.loc[rows["synthetic"] == 1, "tail_id"].notna().all()
    assert len(pd.read_csv(workdir / "results/export/baseline.csv")) == 60
