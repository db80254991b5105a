"""Table 1: rows and columns from the evaluation files; an empty set is an error; the real Snakefile on a tiny config."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import yaml

from ltaug.errors import InputError
from ltaug.report import build_table, display_name, markdown

TAIL = ["Nodule", "Fracture", "Calcification of the Aorta", "Pneumoperitoneum"]
COLUMNS = ["method", "row", "metric", "avg_tail_kid", "avg_tail_fd", "avg_tail_precision", "avg_tail_recall",
           "avg_tail_density", "avg_tail_coverage", "avg_memorised",
           "head_map", "head_map_lo", "head_map_hi", "head_map_std", "tail_map", "tail_map_lo", "tail_map_hi",
           "tail_map_std", "auroc_macro", "auroc_macro_lo", "auroc_macro_hi", "auroc_macro_std",
           "delta_tail_map", "delta_tail_map_lo", "delta_tail_map_hi", "delta_tail_map_p", "delta_tail_map_p_holm",
           "delta_head_map", "delta_head_map_lo", "delta_head_map_hi", "delta_head_map_p", "delta_head_map_p_holm",
           "tail_label_fidelity", "tail_detector_fidelity", "n_synthetic", "seeds"]  # fmt: skip


def classifier_result(head: list[float], tail: list[float], synthetic: int) -> dict:
    runs = [{"map_head": h, "map_tail": t, "map_all": 0.5, "auroc_macro": 0.8} for h, t in zip(head, tail)]
    std = (lambda v: float(pd.Series(v).std()) if len(v) > 1 else 0.0)
    return {"seeds": list(range(len(head))), "n": {"synthetic": synthetic},
            "mean": {"map_head": sum(head) / len(head), "map_tail": sum(tail) / len(tail), "auroc_macro": 0.8},
            "std": {"map_head": std(head), "map_tail": std(tail), "auroc_macro": 0.0}, "runs": runs}  # fmt: skip


def fid_result(fd: float) -> dict:
    return {"metric": "FD-DenseNet", "avg_tail_fd": fd, "avg_tail_kid": fd / 100, "avg_label_fidelity": 0.5,
            "avg_detector_fidelity": 0.25, "avg_tail_precision": 0.6, "avg_tail_recall": 0.4, "avg_tail_density": 0.9,
            "avg_tail_coverage": 0.5, "avg_memorised": fd / 1000}  # fmt: skip


def interval(estimate: float, half: float, p: float | None = None) -> dict:
    return {"estimate": estimate, "lo": estimate - half, "hi": estimate + half} | ({"p": p, "p_holm": min(1, 2 * p)} if p is not None else {})


def intervals_result(classifier: dict) -> dict:
    """compare_methods' file for hand-made classifier results: intervals and deltas to the baseline of +-0.05."""
    base = classifier["baseline"]["mean"]
    methods = {}
    for m, c in classifier.items():
        mean = c["mean"]
        methods[m] = {k: interval(mean[k], 0.05) for k in ("map_head", "map_tail", "auroc_macro")}
        if m != "baseline":
            methods[m]["delta"] = {k: interval(mean[k] - base[k], 0.05, 0.5 if abs(mean[k] - base[k]) < 0.05 else 0.0004)
                                   for k in ("map_head", "map_tail")}  # fmt: skip
    return {"level": 0.95, "methods": methods}


def test_table_has_one_row_per_method_with_intervals_and_differences():
    methods = ["baseline", "smote", "roentgen@75", "ours@0"]
    classifier = {"baseline": classifier_result([0.6, 0.8], [0.1, 0.3], 0), "smote": classifier_result([0.7, 0.7], [0.2, 0.2], 400),
                  "roentgen@75": classifier_result([0.5, 0.5], [0.1, 0.1], 400), "ours@0": classifier_result([0.9, 0.7], [0.4, 0.2], 400)}  # fmt: skip
    fid = {m: fid_result(10.0 * (i + 1)) for i, m in enumerate(methods[1:])}
    table = build_table(methods, classifier, fid, intervals_result(classifier))
    assert list(table.columns) == COLUMNS
    assert table["row"].tolist() == ["Baseline", "SMOTE", "RoentGen@75", "Ours@0"]
    assert table.loc[0, "head_map"] == pytest.approx(0.7) and table.loc[0, "head_map_std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc[0, "head_map_lo"] == pytest.approx(0.65) and table.loc[0, "head_map_hi"] == pytest.approx(0.75)
    assert table["avg_tail_fd"].tolist()[1:] == [10.0, 20.0, 30.0] and math.isnan(table.loc[0, "avg_tail_fd"])
    assert table["delta_tail_map"].tolist()[1:] == pytest.approx([0.0, -0.1, 0.1]) and table["delta_tail_map"].isna()[0]
    text = markdown(table, ["a note"])
    assert "| Method | Avg Tail KID ↓ | Avg Tail FD-DenseNet ↓ | Head mAP ↑ [95% CI] | Tail mAP ↑ [95% CI] |" in text
    assert "| Baseline | – | – | 0.700 [0.650, 0.750] | 0.200 [0.150, 0.250] | – | – | 0.800 [0.750, 0.850] | – | – |" in text
    assert "| Ours@0 | 0.3000 | 30.00 | 0.800 [0.750, 0.850] | 0.300 [0.250, 0.350] | +0.100 [+0.050, +0.150] | < 0.001 |" in text
    assert "| SMOTE | 0.600 | 0.400 | 0.900 | 0.500 | 0.010 |" in text  # the sample-quality table
    # one verdict per method: an interval that excludes 0 is a difference, one that holds it is not
    assert "**SMOTE**: tail mAP +0.000 [-0.050, +0.050] (p 0.500, Holm 1.000): not distinguishable from Baseline" in text
    assert "**RoentGen@75**: tail mAP -0.100 [-0.150, -0.050] (p < 0.001, Holm < 0.001): lower than Baseline" in text
    assert "**Ours@0**: tail mAP +0.100 [+0.050, +0.150] (p < 0.001, Holm < 0.001): higher than Baseline" in text
    assert "- a note" in text


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
    from ltaug.report import _p

    assert _p(2 / 1001, 1000) == "≤ 0.002" and _p(0.05, 1000) == "0.050" and _p(0.0004) == "< 0.001"
    assert _p(float("nan"), 1000) == "–"


def test_display_names():
    assert [display_name(m) for m in ("baseline", "resample", "smote", "roentgen@75", "ours@5")] == [
        "Baseline", "Resample", "SMOTE", "RoentGen@75", "Ours@5"]  # fmt: skip
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
    table = pd.read_csv(evaluated / "results/report/table1.csv")
    expected = ["Baseline", "Resample", "SMOTE", "RoentGen@4", "Ours@0", "Ours@1"]
    assert table["row"].tolist() == expected and list(table.columns) == COLUMNS
    synthetic = table[table["method"] != "baseline"]
    for column in ("avg_tail_fd", "avg_tail_kid", "head_map", "tail_map", "head_map_std", "tail_label_fidelity",
                   "tail_detector_fidelity"):  # fmt: skip
        assert synthetic[column].notna().all(), column
    assert (synthetic["n_synthetic"] == 3 * len(TAIL)).all() and (table["seeds"] == 2).all()
    assert table["metric"].dropna().unique().tolist() == ["FD-DenseNet"]
    md = (evaluated / "results/report/table1.md").read_text()
    assert all(f"| {row} |" in md for row in expected)
    for png in ("per_class_ap.png", "samples.png", "forest.png", "memorisation.png"):
        assert (evaluated / "results/report" / png).stat().st_size > 1000
    assert "Differences to Baseline (95% paired bootstrap interval" in md and md.count("not distinguishable") + md.count(
        "than Baseline") >= 2 * (len(expected) - 1)  # a verdict on tail and head for every method
    intervals = json.loads((evaluated / "results/eval/intervals.json").read_text())
    assert intervals["resamples"] == 1000 and intervals["n_test"] == 12 and intervals["seeds"] == [0, 1]
    for row in table.itertuples():  # the point estimate is evaluate_classifier's mean over seeds (scikit-learn's AP)
        assert row.tail_map_lo <= row.tail_map <= row.tail_map_hi, row.method
        c = json.loads((evaluated / f"results/eval/classifier/{row.method}.json").read_text())
        assert row.tail_map == pytest.approx(c["mean"]["map_tail"], abs=1e-12), row.method
    # resampled real tail images are copies of training images: every one is memorised
    assert table.loc[table["method"] == "resample", "avg_memorised"].item() == 1.0
    baseline = json.loads((evaluated / "results/eval/classifier/baseline.json").read_text())
    assert baseline["scored_split"] == "test" and baseline["n"]["test"] == 12 and len(baseline["runs"]) == 2
    fid = json.loads((evaluated / "results/eval/fid/smote.json").read_text())
    assert set(fid["per_class"]) == set(TAIL) and all(v["n_generated"] == 3 for v in fid["per_class"].values())
    for stage, rule in (("baselines", "baseline_smote"), ("baselines", "baseline_resample"), ("baselines", "baseline_roentgen@4"),
                        ("eval", "evaluate_classifier_baseline"), ("eval", "evaluate_fid_smote"), ("eval", "fit_detector"),
                        ("eval", "real_features"), ("eval", "compare_methods"), ("report", "report")):  # fmt: skip
        assert (evaluated / f"logs/{stage}/{rule}.log").is_file(), rule
        assert (evaluated / f"benchmarks/{stage}/{rule}.tsv").is_file(), rule


@pytest.mark.workflow
@pytest.mark.slow
def test_ours_rows_come_from_rule_generate(evaluated):
    table = pd.read_csv(evaluated / "results/report/table1.csv")
    ours = table[table["method"].str.startswith("ours@")]
    assert ours["method"].tolist() == ["ours@0", "ours@1"] and ours["avg_tail_fd"].notna().all()


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
        assert jobs == {"evaluate_classifier": n, "real_features": 1, "evaluate_fid": n - 1, "compare_methods": 1, "report": 1}
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
