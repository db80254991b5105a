"""The real Snakefile on a tiny config through cam_maps, pair_neighbours, fuse, generate and Fig. 2, then
the incremental reruns: a fusion key reruns fuse and what follows only; a new generate.steps value runs
only its own set and what consumes it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from helpers.workflow import TAIL, TINY_FUSION, TINY_GENERATE, planned_jobs, snakemake, write_config

from ltaug.backbone.latents import open_latents
from ltaug.data.synthetic import read_synthetic_set
from ltaug.method.cam import open_cams

pytestmark = pytest.mark.workflow

N_PER_CLASS = TINY_FUSION["n_per_class"]
STEPS = TINY_GENERATE["steps"]
# The stages of this file (the evaluation is left out: it is tested on its own); cam_maps of the
# other splits differ only by the wildcard
TARGETS = ["results/figures/fig2/ours", "results/cam/layercam/val.zarr"]
UPSTREAM = {"demo_dataset", "prepare_data", "split_classes", "bootstrap_vae", "bootstrap_unet", "encode_latents", "train_il",
            "cam_maps", "pair_neighbours"}  # fmt: skip


@pytest.fixture
def run(tiny_reference):
    """The tiny workflow, run once per session (conftest.py); the tests here change its config and restore it."""
    return tiny_reference


def test_the_stages_write_their_outputs(run):
    classes = json.loads((run / "results/data/classes.json").read_text())
    for split, n in (("train", 60), ("val", 12)):
        cams = open_cams(run / f"results/cam/layercam/{split}.zarr")
        mapped = [c for c in classes["classes"] if c in classes["head"] + classes["tail"]]  # class-specific maps
        assert cams.attrs["method"] == "layercam" and cams.attrs["map_classes"] == mapped
        assert cams["maps"].shape == (n, len(mapped), 4, 4) and cams["probs"].shape == (n, len(classes["classes"]))
    pairs = pd.read_csv(run / "results/pairs/ours/draw0/pairs.csv")
    assert pairs["tail_class"].tolist() == [t for t in TAIL for _ in range(N_PER_CLASS)]  # one pair per sample
    assert pairs["j"].tolist() == list(range(N_PER_CLASS)) * len(TAIL)
    assert pairs.groupby("tail_class")["tail_id"].nunique().eq(1).all()  # one training sample per tail class here
    assert set(pairs["head_class"]) <= set(classes["head"])
    fused = open_latents(run / "results/fused/ours/draw0/latents.zarr")
    assert fused["z"].shape == (len(TAIL) * N_PER_CLASS, 4, 4, 4)
    for s in STEPS:
        synthetic = read_synthetic_set(run / f"results/synthetic/ours@{s}/draw0", classes["classes"], TAIL, N_PER_CLASS)
        assert synthetic.method == f"ours@{s}" and (synthetic.frame["steps"] == s).all()
        assert synthetic.frame["tail_id"].tolist() == pairs["tail_id"].tolist()
        assert synthetic.frame["head_id"].tolist() == pairs["head_id"].tolist()
    panels = sorted(p.name for p in (run / "results/figures/fig2/ours").glob("*.png"))
    assert panels == sorted(f"{t.replace(' ', '_')}.png" for t in TAIL)
    for log in ("cam/cam_maps_layercam_train", "pairing/pair_neighbours_ours_draw0", "fusion/fuse_ours_draw1",
                "generate/generate_ours@1_draw0",
                "figures/fig2_panels_ours", "data/check_class_names_ours"):  # fmt: skip
        assert (run / f"logs/{log}.log").is_file() and (run / f"benchmarks/{log}.tsv").is_file()


def test_every_draw_of_a_set_has_its_own_seeds(run):
    """Classifier seed i trains with draw i: its pairs, coins and noise come from the draw's seed
    (ltaug.common.seeds.draw_seed), draw 0 from the configured one."""
    from ltaug.common.seeds import draw_seed

    classes = json.loads((run / "results/data/classes.json").read_text())
    pairs = [pd.read_csv(run / f"results/pairs/ours/draw{d}/pairs.csv") for d in (0, 1)]
    assert pairs[0]["tail_class"].tolist() == pairs[1]["tail_class"].tolist()
    assert pairs[0]["head_id"].tolist() != pairs[1]["head_id"].tolist()  # other neighbours
    seeds = [open_latents(run / f"results/fused/ours/draw{d}/latents.zarr").attrs["config"]["seed"] for d in (0, 1)]
    assert "seed" not in TINY_FUSION and seeds == [0, draw_seed(0, 1)]  # fusion.seed: the schema's default, 0
    sets = [read_synthetic_set(run / f"results/synthetic/ours@1/draw{d}", classes["classes"], TAIL, N_PER_CLASS)
            for d in (0, 1)]  # fmt: skip
    assert sets[0].frame["head_id"].tolist() == pairs[0]["head_id"].tolist()
    assert sets[1].frame["head_id"].tolist() == pairs[1]["head_id"].tolist()


def test_the_paper_s_variant_has_its_own_maps_fusion_and_set(run):
    classes = json.loads((run / "results/data/classes.json").read_text())
    cams = open_cams(run / "results/cam/eigencam/train.zarr")
    assert cams.attrs["method"] == "eigencam" and cams["maps"].shape == (60, 4, 4)  # one class-agnostic map a sample
    fused = open_latents(run / "results/fused/ours-paper/draw0/latents.zarr")
    config = fused.attrs["config"]
    assert (config["tau_h"], config["tau_l"], config["decode"], config["label_policy"]) == (0.4, 0.4, "d", "auto")
    assert fused.attrs["label_policy"] == "union"  # auto on cell masks: the whole-image mixture's label, the paper's
    assert open_latents(run / "results/fused/ours/draw0/latents.zarr").attrs["config"]["tau_l"] == 0.6  # the sections' own
    paper = read_synthetic_set(run / "results/synthetic/ours-paper@0/draw0", classes["classes"], TAIL, N_PER_CLASS)
    assert paper.method == "ours-paper@0" and paper.frame["dicom_id"].iloc[0].startswith("ours-paper@0-")
    assert not (run / "results/synthetic/ours-paper@1").exists()  # its own generate.steps: [0]
    assert sorted(p.name for p in (run / "results/figures/fig2/ours-paper").glob("*.png")) == sorted(
        f"{t.replace(' ', '_')}.png" for t in TAIL)  # fmt: skip


def test_nothing_to_do_on_a_second_run(run):
    result = snakemake(run, "--dry-run", *TARGETS)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "key,value",
    [("tau_h", 0.7), ("tau_l", 0.2), ("n_per_class", 4), ("label_policy", "tail_only")],
)
def test_a_fusion_key_reruns_fuse_and_what_follows_only(run, key, value):
    write_config(run, fusion={key: value})
    try:
        jobs = planned_jobs(snakemake(run, "--dry-run", *TARGETS))
        pairs = {"pair_neighbours": 1} if key == "n_per_class" else {}  # one pair per synthetic sample
        assert jobs == {**pairs, "fuse": 1, "generate": len(STEPS), "fig2_panels": 1}
        assert not (UPSTREAM - set(pairs)) & set(jobs)
    finally:
        write_config(run)


def test_a_new_generate_step_runs_only_its_set(run):
    write_config(run, generate={"steps": [*STEPS, 2]})
    try:
        result = snakemake(run, "--dry-run", *TARGETS)
        assert planned_jobs(result) == {"generate": 1, "fig2_panels": 1}
        assert "output: results/synthetic/ours@2/draw0" in result.stdout
    finally:
        write_config(run)


def test_guidance_scale_leaves_the_decoded_set_alone(run):
    write_config(run, generate={"guidance_scale": 2.0})
    try:
        result = snakemake(run, "--dry-run", *TARGETS)
        assert planned_jobs(result) == {"generate": 1, "fig2_panels": 1}  # ours@1 only: ours@0 uses no UNet
        assert "output: results/synthetic/ours@1/draw0" in result.stdout
        assert "output: results/synthetic/ours@0/draw0" not in result.stdout
    finally:
        write_config(run)


def test_a_cam_key_reruns_the_maps_and_what_follows(run):
    config = yaml.safe_load((run / "config.yaml").read_text())
    write_config(run, cam={"batch_size": 5})
    try:
        jobs = planned_jobs(snakemake(run, "--dry-run", *TARGETS))
        assert jobs == {"cam_maps": 2, "pair_neighbours": 1, "fuse": 1, "generate": len(STEPS), "fig2_panels": 1}
    finally:
        write_config(run)
    assert yaml.safe_load((run / "config.yaml").read_text()) == config
