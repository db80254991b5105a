"""The evaluation and the report on the tiny workflow (the real Snakefile, tests/helpers/workflow.py): every row and column of Table 1, what reruns, what a bad synthetic set does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.workflow import COLUMNS, TAIL



@pytest.fixture
def evaluated(tiny_reference):
    """The tiny workflow (tests/workflow/test_workflow.py's config), run once per session (conftest.py)."""
    return tiny_reference


@pytest.mark.workflow
def test_tiny_evaluation_produces_every_row_and_column(evaluated):
    from helpers.workflow import ROWS

    table = pd.read_csv(evaluated / "results/report/table1.csv")
    assert table["row"].tolist() == ROWS and list(table.columns) == COLUMNS
    assert table["scheme"].tolist() == ["plain"] * 8 + ["balanced"] * 8
    synthetic = table[table["set"].notna()]
    for column in ("avg_tail_fd", "avg_tail_kid", "head_map", "tail_map", "head_map_std", "tail_label_fidelity",
                   "tail_detector_fidelity", "detector_fpr_synthetic", "delta_tail_map_own"):  # fmt: skip
        assert synthetic[column].notna().all(), column
    assert synthetic.loc[synthetic["set"] != "resample", "delta_tail_map_resample"].notna().all()
    # every row but the oracle's gets its share of its scheme's oracle's gain
    others = synthetic["set"] != "oracle"
    assert synthetic.loc[others, "oracle_share"].notna().all() and synthetic.loc[~others, "oracle_share"].isna().all()
    # every set made from training images says whether its nearest one is its source; text-to-image has no source
    made = synthetic["set"] != "roentgen@4"
    assert synthetic.loc[made, "novelty_own_source"].notna().all() and synthetic.loc[~made, "novelty_own_source"].isna().all()
    # one training image per tail class here: no distance between real images of a class, so no novelty ratio
    assert table["novelty_pixels_new"].isna().all() and table["novelty_features_median_ratio"].isna().all()
    assert table.loc[table["set"] == "resample", "delta_tail_map_resample"].isna().all()  # no difference to itself
    assert (synthetic["n_synthetic"] == 3 * len(TAIL)).all() and (table["seeds"] == 2).all()
    assert (synthetic["draws"] == 2).all() and (table.loc[table["set"].isna(), "draws"] == 0).all()
    assert table["metric"].dropna().unique().tolist() == ["FD-DenseNet"]
    md = (evaluated / "results/report/table1.md").read_text()
    assert all(f"| {row} |" in md for row in ROWS)
    for png in ("per_class_ap.png", "samples.png", "forest.png", "memorisation.png", "novelty.png"):
        assert (evaluated / "results/report" / png).stat().st_size > 1000
    assert "Differences of every row to its scheme's real-only row and to Resample of its scheme (95% paired bootstrap" in md
    verdicts = md.count("not distinguishable from") + md.count("than Baseline") + md.count("than Balanced") + md.count(
        "than Resample")  # fmt: skip
    # tail and head: every set against its scheme's real-only row, every row but Resample against its scheme's Resample
    assert verdicts >= 2 * (14 + 14)
    assert "- Variant Ours-paper: eigencam maps; M^S = map_t > 0.4, M^G = map_h < 0.4; z_F = D(z_F^s) (Eq. 13)" in md
    assert "- Variant Ours: layercam maps; M^S = map_t > 0.4, M^G = map_h < 0.6; z_F = D(z_F^s) (Eq. 13)" in md
    assert "Fidelity funnel of every variant" in md and "| stage | Ours | Ours-paper |" in md
    assert "Schemes: every set is trained under each of Plain" in md and "Draws: classifier seed i trains with draw i" in md
    intervals = json.loads((evaluated / "results/eval/intervals.json").read_text())
    assert intervals["resamples"] == 1000 and intervals["n_test"] == 12 and intervals["seeds"] == [0, 1]
    assert intervals["references"] == ["resample"]
    assert set(intervals["methods"]["balanced+ours@0"]["delta"]) == {"balanced", "balanced+resample"}  # Resample of its scheme
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
    assert balanced["scheme"] == "balanced" and baseline["scheme"] == "plain" and balanced["n"]["synthetic"] == 0
    mixed = json.loads((evaluated / "results/eval/classifier/balanced+ours@0.json").read_text())
    assert [Path(r["draw"]).name for r in mixed["runs"]] == ["draw0", "draw1"]  # seed i trains with draw i
    assert mixed["rebalancing"]["synthetic_share"] == 0.5 and all(0 < r["synthetic_draw_share"] < 0.5 for r in mixed["runs"])
    judge = json.loads((evaluated / "results/eval/judge/judge.json").read_text())
    assert judge["method"] == "judge" and judge["scheme"] == "balanced" and judge["seeds"] == [0]
    fid = json.loads((evaluated / "results/eval/fid/smote.json").read_text())
    assert set(fid["per_class"]) == set(TAIL) and all(v["n_generated"] == 3 for v in fid["per_class"].values())
    assert "judge" in fid["features"] and fid["detector"]["fpr_synthetic"]["n"] > 0
    for stage, rule in (("baselines", "baseline_smote_draw0"), ("baselines", "baseline_resample_draw1"),
                        ("baselines", "baseline_roentgen@4_draw0"), ("baselines", "baseline_oracle_draw1"),
                        ("eval", "evaluate_classifier_baseline"), ("eval", "evaluate_classifier_balanced+oracle"),
                        ("eval", "evaluate_fid_smote"), ("eval", "fit_detector"),
                        ("eval", "real_features"), ("eval", "train_judge"), ("eval", "compare_methods"),
                        ("eval", "fidelity_funnel_ours-paper"), ("report", "report")):  # fmt: skip
        assert (evaluated / f"logs/{stage}/{rule}.log").is_file(), rule
        assert (evaluated / f"benchmarks/{stage}/{rule}.tsv").is_file(), rule


@pytest.mark.workflow
def test_ours_rows_come_from_rule_generate(evaluated):
    table = pd.read_csv(evaluated / "results/report/table1.csv")
    ours = table[table["variant"].notna()]
    assert ours["method"].tolist() == ["ours@0", "ours@1", "ours-paper@0", "balanced+ours@0", "balanced+ours@1",
                                       "balanced+ours-paper@0"] and ours["avg_tail_fd"].notna().all()  # fmt: skip


@pytest.mark.workflow
def test_classifier_settings_rerun_only_the_evaluation(evaluated):
    from helpers.workflow import planned_jobs, snakemake

    config = yaml.safe_load((evaluated / "config.yaml").read_text())
    original = json.loads(json.dumps(config))
    n = len(pd.read_csv(evaluated / "results/report/table1.csv"))
    try:
        config["eval"]["classifier"]["steps"] = 5
        (evaluated / "config.yaml").write_text(yaml.safe_dump(config))
        jobs = planned_jobs(snakemake(evaluated, "--dry-run", "results/report/table1.csv"))
        assert jobs == {"evaluate_classifier": n, "train_judge": 1, "real_features": 1, "evaluate_fid": (n - 2) // 2,
                        "compare_methods": 1, "report": 1}  # fmt: skip
    finally:
        (evaluated / "config.yaml").write_text(yaml.safe_dump(original))


@pytest.mark.workflow
@pytest.mark.slow
def test_an_empty_synthetic_set_stops_the_evaluation_with_its_name(evaluated, tmp_path):
    from helpers.workflow import snakemake

    workdir = tmp_path / "copy"
    shutil.copytree(evaluated, workdir, symlinks=True)
    manifest = workdir / "results/synthetic/smote/draw1/manifest.csv"
    pd.read_csv(manifest).iloc[:0].to_csv(manifest, index=False)
    result = snakemake(workdir, "--forcerun", "evaluate_classifier", "results/eval/classifier/smote.json")
    assert result.returncode != 0
    assert "the synthetic set of method 'smote' has no samples" in result.stdout + result.stderr


@pytest.mark.workflow
def test_a_method_s_training_rows_export_for_any_trainer(evaluated, tmp_path):
    from helpers.workflow import snakemake

    workdir = tmp_path / "copy"
    shutil.copytree(evaluated, workdir, symlinks=True)
    result = snakemake(workdir, "results/export/ours@0.csv", "results/export/baseline.csv", "results/export/balanced.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    classes = json.loads((workdir / "results/data/classes.json").read_text())["classes"]
    rows = pd.read_csv(workdir / "results/export/ours@0.csv")
    assert list(rows.columns[:3 + len(classes)]) == ["id", "path", "synthetic", *classes]
    assert (rows["synthetic"] == 0).sum() == 60 and (rows["synthetic"] == 1).sum() == 3 * len(TAIL)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rows["path"])
    assert rows.loc[rows["synthetic"] == 1, "tail_id"].notna().all()
    assert len(pd.read_csv(workdir / "results/export/baseline.csv")) == 60
    assert len(pd.read_csv(workdir / "results/export/balanced.csv")) == 60
