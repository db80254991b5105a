"""The real Snakefile on a tiny config in a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers.data import REPO, write_dataset
from helpers.workflow import DRAWS, TAIL, WITHOUT_ORACLE, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_finds_nothing_to_change():
    """The workflow catalogue's formatting check: Snakefile and workflow/ as snakefmt writes them."""
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def tiny_run(tiny_reference):
    """The tiny workflow, run once per session (conftest.py); tests that change its config restore it."""
    return tiny_reference


def test_tiny_workflow_end_to_end(tiny_run):
    manifest = pd.read_csv(tiny_run / "results/data/manifest.csv")
    demo_train = pd.read_csv(tiny_run / "data/demo/train.csv")
    classes = json.loads((tiny_run / "results/data/classes.json").read_text())
    assert manifest["split"].value_counts().to_dict() == {"train": 60, "val": 12, "test": 12}
    assert classes["classes"] == list(demo_train.columns[4:])
    assert manifest.loc[manifest["split"] == "train", "id"].tolist() == demo_train["dicom_id"].tolist()
    # round(p * n) positives per class of the 60 training images: 18, 12, ..., 1 for each tail finding
    assert classes["train_counts"]["Cardiomegaly"] == 18 and classes["train_counts"]["Pleural Effusion"] == 12
    assert all(classes["train_counts"][c] == 1 for c in TAIL)
    assert classes["head"][:2] == ["Cardiomegaly", "Pleural Effusion"]
    assert classes["tail"] == TAIL
    for stage, rule in (("data", "demo_dataset"), ("data", "prepare_data"), ("data", "split_classes"),
                        ("images", "decode_images_train_32px"), ("diffusion", "bootstrap_vae"), ("diffusion", "bootstrap_unet"),
                        ("latents", "encode_latents_train"),
                        ("il", "train_il")):  # fmt: skip
        assert (tiny_run / f"logs/{stage}/{rule}.log").is_file()
        assert (tiny_run / f"benchmarks/{stage}/{rule}.tsv").is_file()


def test_tiny_workflow_latents_follow_the_manifest(tiny_run):
    from ltaug.backbone.latents import open_latents
    from ltaug.backbone.model_dir import fingerprint

    manifest = pd.read_csv(tiny_run / "results/data/manifest.csv")
    model = tiny_run / "results/diffusion/model"
    # no stage reads the test split's latents or CAMs (cam.splits: [train, val]): neither is made
    assert not (tiny_run / "results/latents/test.zarr").exists() and not (tiny_run / "results/cam/layercam/test.zarr").exists()
    for split, n in (("train", 60), ("val", 12)):
        store = open_latents(tiny_run / f"results/latents/{split}.zarr", expect={"model_fingerprint": fingerprint(model)})
        rows = manifest[manifest["split"] == split]
        assert store["z"].shape == (n, 4, 4, 4) and store["z"].dtype == "float32"
        assert store["ids"][:].tolist() == rows["id"].tolist()
        assert (store["labels"][:] == rows.iloc[:, 3:].to_numpy()).all()
        assert store.attrs["image_size"] == 32 and store.attrs["mode"] == "sample"
    samples = tiny_run / "results/diffusion/samples"
    assert (samples / "Nodule.png").is_file() and (samples / "metrics.json").is_file()
    assert (tiny_run / "results/diffusion/vae_samples/reconstructions.png").is_file()
    # encoded with bootstrap_vae's directory, which has the finished model's fingerprint
    assert fingerprint(tiny_run / "results/diffusion/vae") == fingerprint(model)


def test_nothing_to_do_on_a_second_run(tiny_run):
    result = snakemake(tiny_run, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


# the IL model and each variant's chain after it: maps of train and val by LayerCAM (ours) and EigenCAM (ours-paper),
# pairs, fused store, sets ours@0, ours@1 and ours-paper@0 (each once per draw), and Fig. 2 of both
IL_ON = {"train_il": 1, "cam_maps": 4, "pair_neighbours": 2 * DRAWS, "fuse": 2 * DRAWS, "generate": 3 * DRAWS,
         "fig2_panels": 2}  # fmt: skip
BASELINES = {"baseline_resample": DRAWS, "baseline_smote": DRAWS, "baseline_roentgen": DRAWS}


def evaluation(sets: int, funnels: int, baseline: bool = False) -> dict[str, int]:
    """Jobs that recompute ``sets`` synthetic sets' rows of Table 1 (each under both schemes; the real-only rows
    Baseline and Balanced too, and a new judge and new training-image features, with a new class split), their
    distances (one evaluate_fid per set), their intervals, and the fidelity funnels of ``funnels`` variants (each
    reads its variant's sets and, on the demo, the detector)."""
    jobs = {"evaluate_classifier": 2 * sets + 2 * baseline, "evaluate_fid": sets, "compare_methods": 1, "report": 1,
            "fidelity_funnel": funnels}  # fmt: skip
    return jobs | ({"real_features": 1, "train_judge": 1} if baseline else {})


@pytest.mark.parametrize(
    "section,key,value,jobs",
    [
        # everything after the class split, not the data, the model or the latents (the oracle's draws: their labels)
        ("long_tail", "tail_max_prevalence", 0.05, {"split_classes": 1, "check_class_names": 2, **IL_ON, **BASELINES,
                                                     "baseline_oracle": DRAWS, "fit_detector": 1,
                                                     **evaluation(7, 2, baseline=True)}),
        # re-encodes the splits a stage reads (train, val; not test), keeps the model; of the baselines only SMOTE reads latents
        ("latents", "mode", "mean", {"encode_latents": 2, **IL_ON, "baseline_smote": DRAWS, **evaluation(4, 2)}),
        # a new VAE: everything from the latents on
        ("diffusion.bootstrap", "vae_steps", 7, {"bootstrap_vae": 1, "bootstrap_unet": 1, "encode_latents": 2, **IL_ON,
                                                 "baseline_smote": DRAWS, "baseline_roentgen": DRAWS,
                                                 **evaluation(5, 2)}),
        # a new UNet: only what runs it (ours@s for s > 0, text-to-image, Fig. 2), not the latents, IL, ours@0 or SMOTE
        ("diffusion.bootstrap", "unet_steps", 7, {"bootstrap_unet": 1, "generate": DRAWS, "baseline_roentgen": DRAWS,
                                                  "fig2_panels": 1, **evaluation(2, 1)}),
        ("il", "lam", 0.7, {**IL_ON, **evaluation(3, 2)}),  # the three sets of the variants only
        # a key ours-paper sets itself: the ours variant alone follows the section
        ("fusion", "decode", "residual", {"fuse": DRAWS, "generate": 2 * DRAWS, "fig2_panels": 1, **evaluation(2, 1)}),
        # one variant's own key: that variant's chain and nothing else
        ("variants.ours-paper.fusion", "tau_h", 0.6, {"fuse": DRAWS, "generate": DRAWS, "fig2_panels": 1,
                                                      **evaluation(1, 1)}),
        # a variant's CAM method: its own maps (train and val, cam.splits), then its chain
        ("variants.ours-paper.cam", "method", "gradcam", {"cam_maps": 2, "pair_neighbours": DRAWS, "fuse": DRAWS,
                                                          "generate": DRAWS, "fig2_panels": 1, **evaluation(1, 1)}),
        # the prompt reaches the UNet passes only: ours@s for s > 0 and text-to-image, not ours@0
        ("generate", "prompt_template", "chest x-ray showing {classes}",
         {"generate": DRAWS, "baseline_roentgen": DRAWS, "fig2_panels": 1, **evaluation(2, 1)}),
        # a class-naming key is checked again, and the fusions that read it rerun
        ("fusion", "exclusive_class", "Pneumothorax", {"check_class_names": 2, "fuse": 2 * DRAWS, "generate": 3 * DRAWS,
                                                        "fig2_panels": 2, **evaluation(3, 2)}),
        # how a set is added on top of re-balancing: the balanced rows with a set, and nothing else
        ("eval.rebalancing", "synthetic_share", 0.25, {"evaluate_classifier": 7, "compare_methods": 1, "report": 1}),
    ],
)
def test_a_config_change_reruns_exactly_the_stages_that_depend_on_it(tiny_run, section, key, value, jobs):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    node = config
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        result = snakemake(tiny_run, "--dry-run")
        assert planned_jobs(result) == {**jobs, "all": 1}, result.stdout
    finally:
        write_config(tiny_run)


@pytest.mark.slow
def test_a_key_naming_no_class_fails_as_soon_as_the_classes_are_split(tmp_path):
    write_config(tmp_path, fusion={"exclusive_class": "Normal"})
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert ("fusion.exclusive_class: 'Normal' is not a class of results/data/classes.json (Cardiomegaly, "
            in result.stdout + result.stderr)  # fmt: skip
    assert not (tmp_path / "results/fused").exists() and not (tmp_path / "results/il/model.pt").exists()


def test_unknown_config_key_fails_before_any_job(tmp_path):
    write_config(tmp_path, data={"check_image": "full"})
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "unknown key data.check_image" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_wrong_type_fails_naming_the_key(tmp_path):
    write_config(tmp_path, long_tail={"head_min_prevalence": "high"})
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "long_tail.head_min_prevalence: 'high' is not of type 'number'" in result.stderr


def test_a_nested_config_override_is_typed_by_the_schema(tiny_run):
    # Snakemake hands nested --config values over as strings; the schema says what they are
    result = snakemake(tiny_run, "--dry-run", "--config", "fusion={tau_h: 0.6, tau_l: 0.2}")
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result)
    assert jobs["fuse"] == DRAWS and jobs["generate"] == 2 * DRAWS and "train_il" not in jobs and "cam_maps" not in jobs


def test_a_wrong_override_names_the_command_line(tmp_path):
    write_config(tmp_path)
    result = snakemake(tmp_path, "--dry-run", "--config", "fusion={tau_h: high}")
    assert result.returncode != 0
    assert "--config: fusion.tau_h: 'high' is not of type 'number'" in result.stdout + result.stderr


def test_missing_labels_file_is_a_config_error(tmp_path):
    labels = {"train": "nowhere/train.csv", "val": "v.csv", "test": "t.csv"}
    write_config(tmp_path, demo={"enabled": False}, data={"labels": labels}, eval=WITHOUT_ORACLE)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "nowhere/train.csv: labels CSV of the train split (data.labels.train) does not exist" in result.stderr


def test_bad_label_fails_with_the_rows_and_leaves_no_manifest(tmp_path):
    data = write_dataset(tmp_path / "real")
    path = data["labels"]["val"]
    df = pd.read_csv(path)
    df.loc[2, "Nodule"] = -1
    df.to_csv(path, index=False)
    write_config(tmp_path, demo={"enabled": False}, data=data, eval=WITHOUT_ORACLE)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "label values must be 0 or 1" in result.stdout + result.stderr
    assert "column 'Nodule': 1 row(s): line 4 ('-1')" in result.stdout + result.stderr
    assert not (tmp_path / "results/data/manifest.csv").exists()


def test_tiny_workflow_trains_the_il_model(tiny_run):
    from ltaug.method.checkpoint import load_il_model
    from ltaug.backbone.model_dir import fingerprint

    il = load_il_model(tiny_run / "results/il/model.pt")
    assert il.generation == 2 and il.latent_shape == (4, 4, 4)
    assert il.model_fingerprint == fingerprint(tiny_run / "results/diffusion/model")
    assert il.tail == TAIL and il.config.embed_channels == 8
    history = pd.read_csv(tiny_run / "results/il/history.csv")
    assert list(zip(history["generation"], history["phase"])) == [(1, "interaction"), (2, "imitation"), (2, "interaction")]
    assert sorted(p.name for p in (tiny_run / "results/il").glob("gen_*.pt")) == ["gen_1.pt", "gen_2.pt"]


@pytest.mark.slow
def test_padchest_as_downloaded_through_the_workflow(tmp_path):
    """docs/datasets.md's first command on PadChest's layout (one CSV, list labels, 16-bit PNGs, no split):
    classes.json, then the training latents, with data.window reaching the rule that reads the pixels."""
    from helpers.data import write_padchest

    from ltaug.backbone.latents import open_latents

    data = write_padchest(tmp_path / "padchest")
    write_config(tmp_path, demo={"enabled": False}, data={**data, "window": [0, 4095]}, eval=WITHOUT_ORACLE,
                 long_tail={"head_classes": ["normal"], "tail_classes": ["cardiomegaly"]})  # fmt: skip
    result = snakemake(tmp_path, "results/data/classes.json")
    assert result.returncode == 0, result.stdout + result.stderr
    classes = json.loads((tmp_path / "results/data/classes.json").read_text())
    assert classes["classes"] == ["normal", "pleural effusion", "cardiomegaly", "nodule"]
    assert classes["head"] == ["normal"] and classes["tail"] == ["cardiomegaly"]
    assert classes["labels"]["labels_format"] == "list"
    manifest = pd.read_csv(tmp_path / "results/data/manifest.csv")
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}  # carved by patient
    result = snakemake(tmp_path, "--printshellcmds", "results/latents/train.zarr")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--window='[0, 4095]'" in result.stderr  # decode_images maps the pixels, once, for every later stage
    store = open_latents(tmp_path / "results/latents/train.zarr")
    assert [str(i) for i in store["ids"][:]] == manifest.loc[manifest["split"] == "train", "id"].tolist()


def test_the_oracle_on_real_data_is_a_held_out_share_that_no_other_stage_sees(tmp_path):
    data = write_dataset(tmp_path / "real", n={"train": 80, "val": 10, "test": 10})
    long_tail = {"head_min_prevalence": 0.2, "tail_max_prevalence": 0.05}
    write_config(tmp_path, demo={"enabled": False}, data=data, long_tail=long_tail)
    result = snakemake(tmp_path, "--dry-run")
    assert result.returncode != 0  # the tiny config's methods hold the oracle, and real data has no fresh images
    assert "the oracle row needs fresh real tail images" in result.stdout + result.stderr
    write_config(tmp_path, demo={"enabled": False}, data=data, long_tail=long_tail,
                 eval={"oracle": {"holdout": 0.5, "seed": 1}})  # fmt: skip
    result = snakemake(tmp_path, "results/synthetic/oracle/draw1", "results/data/classes.json")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = pd.read_csv(tmp_path / "results/data/manifest.csv")
    classes = json.loads((tmp_path / "results/data/classes.json").read_text())
    assert classes["tail"] == ["Nodule", "Fracture"] and classes["n"]["holdout"] == (manifest["split"] == "holdout").sum()
    held = manifest[manifest["split"] == "holdout"]
    for name in classes["tail"]:  # half of each tail class's 4 training images, the rest still trains every row
        assert held[name].sum() >= 2 and ((manifest["split"] == "train") & (manifest[name] == 1)).sum() >= 1
        assert classes["train_counts"][name] == ((manifest["split"] == "train") & (manifest[name] == 1)).sum()
    oracle = pd.read_csv(tmp_path / "results/synthetic/oracle/draw1/manifest.csv")
    assert set(oracle["source_id"]) <= set(held["id"]) and len(oracle) == 3 * 2
