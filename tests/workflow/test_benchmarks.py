"""Every script under benchmarks/ at its smallest setting, run as a subprocess as a user runs it: it must exit 0
and write the result file it promises, with values of the right type and range (and, where the tiny workflow
ran the same computation, the same values as the workflow's).

The scripts are checked here, not measured: each runs on one torch thread (``--threads 1`` where a script has
it, OMP_NUM_THREADS=1 everywhere), writes into pytest's tmp_path (``--out``, TMPDIR) and never into the
repository. Scripts that need a finished run read the session's tiny workflow (``tiny_reference``, read-only;
choose_variant, which works in its run directory, gets a copy). benchmarks/slurm_cluster.py needs a SLURM
cluster: its test is in tests/slurm/test_slurm.py. benchmarks/make_demo.sh installs the environment with pip
and runs the whole demo on a fresh clone, which needs the network and an hour: here its shell is parsed, the
make targets it calls are checked to exist, and its summary step runs on the tiny run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers.data import REPO
from helpers.workflow import TAIL, TEST_CONFIG, TINY

pytestmark = pytest.mark.workflow

BENCH = REPO / "benchmarks"


def bench(tmp_path: Path, script: str, *args: str, cwd: Path | None = None, timeout: int = 420) -> str:
    """Run benchmarks/``script`` with ``args`` (one thread, temporary files under tmp_path); assert it exits 0 and
    return its stdout."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd or tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def read_json(path: Path):
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def is_rate(value) -> bool:
    """A share in [0, 1] (NaN where it is undefined on the tiny data: one training image per tail class)."""
    return isinstance(value, float) and (math.isnan(value) or 0.0 <= value <= 1.0)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def tiny_config(tmp_path: Path, **sections) -> Path:
    """The tiny configuration with ``sections`` merged over its sections, written under tmp_path."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------- no workflow run needed


def test_intervals_times_the_paired_bootstrap(tmp_path):
    """intervals.py at one small shape: one CSV row with the shape it was given and positive costs."""
    out = tmp_path / "out" / "results.csv"
    bench(tmp_path, "intervals.py", "--shapes", "200x8x1", "--methods", "2", "--resamples", "20", "--out", str(out))
    table = pd.read_csv(out)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["n_test"], row["classes"], row["seeds"], row["methods"], row["resamples"]) == (200, 8, 1, 2, 20)
    assert row["wall_s"] >= 0 and row["s_per_million_units"] >= 0 and row["peak_rss_mb"] > 0


def test_demo_data_draws_a_small_demo(tmp_path):
    """demo_data.py with 28 images of 32 px: the counts it was given and the demo's prevalence of each class."""
    from ltaug.data.demo import DemoConfig, class_names

    out = tmp_path / "out" / "demo_data.json"
    bench(tmp_path, "demo_data.py", "--n-train", "20", "--n-val", "4", "--n-test", "4", "--image-size", "32",
          "--workers", "1", "--out", str(out))  # fmt: skip
    result = read_json(out)
    assert result["config"] == {"image_size": 32, "n_images": 28, "seed": 0}
    assert positive(result["wall_s"]) and positive(result["images_per_s"])
    prevalence = result["train_prevalence"]
    assert list(prevalence) == class_names() and all(0 <= p <= 1 for p in prevalence.values())
    # the demo draws round(p * n) positives of a common class: 6 of the 20 training images for p = 0.3
    assert prevalence["Cardiomegaly"] == round(DemoConfig().prevalence["Cardiomegaly"] * 20) / 20


@pytest.mark.slow
def test_decode_once_measures_reads_before_and_after_the_stores(tmp_path):
    """decode_once.py on one full-size JPEG: every read cost positive, the 512 px store larger than the 224 px one,
    the peak memory of decode_images at N and 4N, and the Markdown table beside the JSON."""
    bench(tmp_path, "decode_once.py", "--images", "1", "--out", str(tmp_path / "out"))
    row = read_json(tmp_path / "out" / "results.json")
    assert row["images"] == 1 and positive(row["jpeg_mb"])
    for key in ("before_s_per_image", "decode_images_s_per_image", "after_s_per_image"):
        assert row[key] and all(positive(v) for v in row[key].values()), key
    sizes = row["store_bytes_per_image"]
    assert sizes["512 px"] > sizes["224 px"] > 0
    assert positive(row["peak_rss_mib"]["n"]) and positive(row["peak_rss_mib"]["4n"])
    assert row["peak_rss_ratio"] == round(row["peak_rss_mib"]["4n"] / row["peak_rss_mib"]["n"], 2)
    assert "decode_images peak RSS" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow
def test_encode_latents_streams_n_and_ten_n_images(tmp_path):
    """encode_latents.py with N = 2: both runs (2 and 20 images) reported, and `ok` says whether peak RSS at 10 N
    stayed within the required ratio of N."""
    out = tmp_path / "out" / "encode_latents.json"
    bench(tmp_path, "encode_latents.py", "--n", "2", "--batch-size", "2", "--threads", "1", "--out", str(out))
    result = read_json(out)
    assert set(result["runs"]) == {"2", "20"}
    for n, run in result["runs"].items():
        assert run["n"] == int(n) and positive(run["images_per_s"])
        assert run["peak_rss_mb"] >= run["peak_rss_before_mb"] > 0
    assert result["ok"] is (result["peak_rss_ratio"] <= result["required_ratio"])


@pytest.mark.slow
def test_gpu_runs_every_phase_at_tiny_widths_on_the_cpu(tmp_path):
    """gpu.py --device cpu --widths tiny: every phase measured, no GPU memory on the CPU, and ours@5 (5 of 75
    steps) faster than text-to-image@75."""
    bench(tmp_path, "gpu.py", "--device", "cpu", "--widths", "tiny", "--images", "1", "--dtype", "float32",
          "--densenet-batch", "2", "--out", str(tmp_path / "out"))  # fmt: skip
    result = read_json(tmp_path / "out" / "cpu-tiny.json")
    assert (result["widths"], result["images"], result["image_size"]) == ("tiny", 1, 64)
    for phase in ("encode", "ours@5", "text_to_image@75", "densenet121_train_224px"):
        assert positive(result[phase]["images_per_s"]) and result[phase]["peak_gpu_gib"] is None, phase
    assert result["speed_ratio_ours@5_vs_text_to_image@75"] > 1


@pytest.mark.slow
def test_full_size_runs_every_phase_at_tiny_widths(tmp_path):
    """full_size.py --widths tiny: SD 1.5's layout built and measured phase by phase, FLOPs counted (a training
    step costs more than inference), the DenseNet and the JPEG reads timed."""
    bench(tmp_path, "full_size.py", "--widths", "tiny", "--images", "1", "--threads", "1", "--jpegs", "1",
          "--out", str(tmp_path / "out"))  # fmt: skip
    result = read_json(tmp_path / "out" / "results.json")
    assert (result["widths"], result["images"], result["threads"]) == ("tiny", 1, 1)
    assert all(positive(result["parameters"][part]) for part in ("unet", "vae", "text_encoder"))
    for phase in ("encode_64px", "ours@1_unet", "decode_64px"):
        assert result[f"{phase}_s"] >= 0 and phase in result["gflop_per_image"], phase
    assert set(result["rss_gib"]) == {"start", "load", "encode_64px", "ours@1_unet", "decode_64px", "densenet121"}
    flops = result["gflop_per_image"]
    assert flops["densenet121_train"] > flops["densenet121_infer"] > 0
    assert positive(result["densenet121_train_s_per_image"]) and positive(result["densenet121_infer_s_per_image"])
    assert result["jpeg_full_res_mb"] > result["jpeg_512px_mb"] > 0
    assert positive(result["jpeg_full_res_to_224px_s_per_image"])


@pytest.mark.slow
def test_memory_format_compares_both_formats_on_the_tiny_networks(tmp_path):
    """memory_format.py on the tiny config's networks: both formats timed for each network and computing the same
    function (float rounding only), the precision and side-by-side rows."""
    bench(tmp_path, "memory_format.py", "--config", str(TEST_CONFIG), "--threads", "1", "--repeats", "1",
          "--out", str(tmp_path / "out"))  # fmt: skip
    result = read_json(tmp_path / "out" / "results.json")
    assert [r["network"] for r in result["rows"]] == ["densenet_train", "unet_train", "vae_encode", "vae_decode"]
    for row in result["rows"]:
        assert positive(row["contiguous_ms"]) and positive(row["channels_last_ms"]), row["network"]
        assert 0 <= row["max_abs_diff"] < 1e-3, row["network"]
    assert [r["threads"] for r in result["precision"]] == [1]
    assert positive(result["precision"][0]["float32_ms"]) and positive(result["precision"][0]["bfloat16_ms"])
    assert result["side_by_side"]["processes"] == 1 and positive(result["side_by_side"]["one_process_steps_per_s"])


@pytest.mark.slow
def test_precision_times_every_pass_with_onednn_s_bfloat16_kernels_on_and_off(tmp_path):
    """precision.py on the tiny config's networks: the VAE, IL and DenseNet steps in both precisions, once as this
    machine runs and once with ONEDNN_MAX_CPU_ISA=AVX512_CORE, where auto resolves to float32 whatever the CPU."""
    from ltaug.common.precision import native_bfloat16

    out = tmp_path / "out"
    bench(tmp_path, "precision.py", "--config", str(TEST_CONFIG), "--repeats", "1", "--out", str(out))
    result = read_json(out / "results.json")
    plain, off = result["runs"].values()
    assert plain["auto"] == ("bfloat16" if native_bfloat16(torch.device("cpu")) else "float32")
    assert off["auto"] == "float32" and off["onednn_max_cpu_isa"] == "AVX512_CORE" and plain["onednn_max_cpu_isa"] == ""
    for run in (plain, off):
        assert list(run["passes"]) == ["vae", "il", "densenet"]
        for row in run["passes"].values():
            assert positive(row["float32_ms"]) and positive(row["bfloat16_ms"])
            assert row["bfloat16_speed_up"] == pytest.approx(row["float32_ms"] / row["bfloat16_ms"])
    assert "| off (ONEDNN_MAX_CPU_ISA=AVX512_CORE) | float32 | densenet |" in (out / "results.md").read_text()


SCALE_STAGES = ["decode_images", "train_il", "cam_maps", "pair_neighbours", "fuse", "evaluate_classifier",
                "real_features", "evaluate_fid"]  # fmt: skip


@pytest.mark.slow
def test_scale_runs_every_stage_at_the_smallest_n(tmp_path):
    """scale.py at N = 100 (the smallest with a tail class) and 20 validation and test images: a row per stage with
    its time and peak memory, 12 tail and 5 head classes, and results.json beside the table."""
    out = tmp_path / "out"
    bench(tmp_path, "scale.py", "--n", "100", "--n-eval", "20", "--threads", "1", "--workdir", str(tmp_path),
          "--out", str(out), timeout=540)  # fmt: skip
    table = pd.read_csv(out / "results.csv")
    assert table["stage"].tolist() == SCALE_STAGES and (table["n"] == 100).all()
    assert (table["seconds"] > 0).all() and (table["peak_rss_mib"] >= table["rss_before_mib"]).all()
    assert (table["tail_classes"] == 12).all() and (table["head_classes"] == 5).all()
    assert (table["rss_ratio_to_smallest_n"] == 1.0).all() and table["flat"].all()
    meta = read_json(out / "results.json")
    assert meta["n"] == [100] and meta["n_eval"] == 20 and len(meta["rows"]) == len(table)
    assert (out / "scale.log").is_file()


def test_peak_memory_sees_an_allocation():
    """peak_memory.peak_rss_mib, as decode_once, full_size and scale import it: the peak grows by what a process
    allocates and writes (200 MiB)."""
    code = ("import json; from peak_memory import peak_rss_mib; before = peak_rss_mib(); "
            "block = b'x' * (200 * 2**20); print(json.dumps([before, peak_rss_mib()]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert 0 < before and after - before >= 190


# ------------------------------------------------------------------------------ on the session's tiny workflow run


@pytest.mark.parametrize("source", [pytest.param("stand-ins", marks=pytest.mark.slow), "demo run"])
def test_fusion_generate_times_the_method_chain(request, tmp_path, source):
    """fusion_generate.py on the tiny config (generate.num_steps 5, so that ours@5 is possible), on stand-in models
    and on the tiny run's results: every stage timed, n_per_class samples per tail class fused and generated."""
    config = tiny_config(tmp_path, generate={"num_steps": 5})
    extra = []
    if source == "demo run":  # the stand-ins need no workflow run
        extra = ["--results", str(request.getfixturevalue("tiny_reference") / "results")]
    out = tmp_path / "out"
    bench(tmp_path, "fusion_generate.py", "--config", str(config), "--threads", "1", "--n-text", "2", "--out", str(out),
          *extra)  # fmt: skip
    report = read_json(out / "results.json")
    n_fused = TINY["fusion"]["n_per_class"] * len(report["tail"])
    assert report["source"].startswith(source) and report["n_train"] == TINY["demo"]["n_train"]
    if source == "demo run":
        assert report["tail"] == TAIL
    assert positive(report["cam_maps"]["maps_per_s"]) and report["fuse"]["samples"] == n_fused
    assert report["pair_neighbours"]["tail_samples"] == n_fused
    assert set(report["generate"]) == {"ours@0", "ours@1", "ours@5", "text_to_image@5"}
    for name in ("ours@0", "ours@1", "ours@5"):
        row = report["generate"][name]
        assert row["images"] == n_fused and positive(row["images_per_s"]) and positive(row["speedup_vs_text_to_image"])
    assert report["generate"]["text_to_image@5"]["images"] == 2
    assert 0 <= report["tail_share"]["mean"] <= 1 and set(report["tail_share"]["per_class"]) == set(report["tail"])
    assert "| fuse (" in (out / "results.md").read_text()


def test_train_il_times_one_epoch_and_reads_the_run(tiny_reference, tmp_path):
    """train_il.py on the tiny run's latents: both epochs timed, and the run's train_il time and last validation
    figures read back as they are in its files."""
    out = tmp_path / "out" / "train_il.json"
    run = tiny_reference
    bench(tmp_path, "train_il.py", "--config", str(run / "config.yaml"), "--latents", str(run / "results/latents"),
          "--classes", str(run / "results/data/classes.json"), "--history", str(run / "results/il/history.csv"),
          "--snakemake-benchmark", str(run / "benchmarks/il/train_il.tsv"), "--out", str(out), "--threads", "1")  # fmt: skip
    result = read_json(out)
    il = TINY["il"]
    assert result["n_train"] == TINY["demo"]["n_train"] and result["latent_shape"] == [4, 4, 4]
    assert positive(result["interaction_epoch"]["samples_per_s"]) and positive(result["imitation_epoch"]["samples_per_s"])
    assert result["epochs_per_run"] == il["interaction_epochs"] * il["generations"] + il["imitation_epochs"] * (il["generations"] - 1)
    assert result["machine"]["torch_threads"] == 1
    assert result["demo_train_il_wall_s"] == float(pd.read_csv(run / "benchmarks/il/train_il.tsv", sep="\t")["s"].iloc[0])
    last = pd.read_csv(run / "results/il/history.csv").iloc[-1]
    assert result["history_last"]["val_map_tail"] == round(float(last["val_map_tail"]), 4)


def test_evaluate_classifier_trains_what_the_stage_trains(tiny_reference, tmp_path):
    """evaluate_classifier.py with the tiny config's classifier, seed 0, on Resample: head and tail mAP as the
    workflow's evaluate_classifier got for that seed."""
    out = tmp_path / "out"
    run = tiny_reference
    bench(tmp_path, "evaluate_classifier.py", "--manifest", "results/data/manifest.csv", "--classes",
          "results/data/classes.json", "--synthetic", "results/synthetic/resample/draw0", "--config", "config.yaml",
          "--set", "seeds=[0]", "--threads", "1", "--label", "resample", "--out", str(out), cwd=run)  # fmt: skip
    row = read_json(out / "resample.json")
    assert row["method"] == "resample" and row["config"]["steps"] == TINY["eval"]["classifier"]["steps"]
    assert all(is_rate(row[k]) for k in ("map_head", "map_tail", "auroc_macro", "tail_test_prevalence"))
    assert list(row["tail_ap"]) == TAIL and len(row["best_step"]) == 1
    stage = read_json(run / "results/eval/classifier/resample.json")["runs"][0]  # seed 0
    assert stage["seed"] == 0
    assert row["map_head"] == pytest.approx(stage["map_head"], abs=1e-3)
    assert row["map_tail"] == pytest.approx(stage["map_tail"], abs=1e-3)


def test_evaluate_times_tabulates_the_runs_benchmark_files(tiny_reference, tmp_path):
    """evaluate_times.py on the tiny run: a row per benchmark file of the evaluation stages with the seconds
    Snakemake measured, and a total."""
    bench(tmp_path, "evaluate_times.py", str(tiny_reference), "--out", str(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / f"{tiny_reference.name}.csv")
    rules = table[table["rule"] != "total"]
    tsvs = sorted(p for s in ("baselines", "eval", "report") for p in (tiny_reference / "benchmarks" / s).glob("*.tsv"))
    assert sorted(rules["rule"]) == sorted(p.stem for p in tsvs) and {"compare_methods", "report"} <= set(rules["rule"])
    report = pd.read_csv(tiny_reference / "benchmarks/report/report.tsv", sep="\t").iloc[-1]
    assert rules.set_index("rule").loc["report", "wall_s"] == round(float(report["s"]), 1)
    total = table[table["rule"] == "total"].iloc[0]
    assert total["wall_s"] == pytest.approx(rules["wall_s"].sum()) and total["max_rss_mb"] == rules["max_rss_mb"].max()


@pytest.mark.slow
def test_tail_round_trip_scores_a_vae_and_il_variants(tiny_reference, tmp_path):
    """tail_round_trip.py on the tiny run: the trained VAE scored, a VAE variant and an IL variant trained and
    scored, one JSON line each with a detector hit rate per tail class."""
    run, out = tiny_reference, tmp_path / "out"
    bench(tmp_path, "tail_round_trip.py", "--results", str(run / "results"), "--config", str(run / "config.yaml"),
          "--score-vae", str(run / "results/diffusion/model"), "--vae", "{}", "--il", '{"generations": 1}',
          "--threads", "1", "--out", str(out))  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["part"] for r in rows] == ["vae", "vae", "il"]
    for row in rows:
        assert list(row["hit_rate"]) == TAIL and all(is_rate(v) for v in row["hit_rate"].values())
        assert row["mean_hit_rate"] == pytest.approx(sum(row["hit_rate"].values()) / len(TAIL))
    assert rows[0]["train_seconds"] == 0.0 and positive(rows[1]["train_seconds"]) and positive(rows[2]["train_seconds"])
    assert list(rows[1]["hit_rate_mean"]) == TAIL and is_rate(rows[2]["val_map_tail"]) and rows[2]["val_recon_mse"] > 0
    assert len(list(out.glob("il-*/model.pt"))) == 1  # the IL variant's model, under --out


@pytest.mark.slow
def test_bootstrap_diffusion_trains_the_model_of_the_workflow(tiny_reference, tmp_path):
    """bootstrap_diffusion.py with the tiny run's diffusion.bootstrap: the model its bootstrap stages trained (the
    same validation PSNR and final losses), the phases timed, the grids kept."""
    run, out, keep = tiny_reference, tmp_path / "out" / "bootstrap_diffusion.json", tmp_path / "keep"
    bench(tmp_path, "bootstrap_diffusion.py", "--manifest", "results/data/manifest.csv", "--config", "config.yaml",
          "--threads", "1", "--out", str(out), "--keep", str(keep), cwd=run)  # fmt: skip
    result = read_json(out)
    assert (result["n_train"], result["n_val"], result["torch_threads"]) == (60, 12, 1)
    assert positive(result["wall_s"]["vae_stage"]["total"]) and positive(result["wall_s"]["unet_stage"]["total"])
    stage = read_json(run / "results/diffusion/samples/metrics.json")
    assert result["val_psnr_db"] == pytest.approx(stage["val_psnr_db"], abs=0.05)
    assert result["final_loss"] == pytest.approx(stage["final_loss"], rel=1e-2)
    assert (keep / "reconstructions.png").is_file() and (keep / "Nodule.png").is_file()


@pytest.mark.slow
def test_choose_variant_measures_one_candidate(tiny_reference, tmp_path):
    """choose_variant.py --only ours-paper on a copy of the tiny run: its set made, measured for novelty and the
    detector, and scored on validation for every classifier seed beside Baseline and Resample."""
    run = tmp_path / "run"
    shutil.copytree(tiny_reference, run, ignore=shutil.ignore_patterns(".snakemake"))
    out = tmp_path / "out"
    stdout = bench(tmp_path, "choose_variant.py", str(run), "--only", "ours-paper", "--workers", "1", "--out", str(out))
    report = read_json(out / f"seed{TINY['demo']['seed']}.json")
    seeds = {str(s) for s in TINY["eval"]["classifier"]["seeds"]}
    for reference in ("baseline", "resample"):
        assert set(report["references"][reference]) == seeds
        assert all(is_rate(r["val_tail_map"]) for r in report["references"][reference].values())
    measured = report["candidates"]["ours-paper"]["sets"]["ours-paper@0"]
    assert set(measured["val"]) == seeds and all(is_rate(r["val_tail_map"]) for r in measured["val"].values())
    assert list(measured["per_class_new_pixels"]) == TAIL and is_rate(measured["own_source"])
    assert is_rate(measured["detector"]["mean"]["rate"]) and is_rate(measured["fpr_synthetic"])
    assert (out / f"seed{TINY['demo']['seed']}" / "ours-paper" / "pairs.csv").is_file()
    assert "| ours-paper@0 |" in stdout and "chosen:" in stdout


# ------------------------------------------------------------------------------------------------------ make_demo.sh


def test_make_demo_sh_parses_and_calls_make_targets_that_exist():
    """make_demo.sh is valid bash, and the make targets it times (env, demo) are the Makefile's."""
    script = (BENCH / "make_demo.sh").read_text()
    done = subprocess.run(["bash", "-n", str(BENCH / "make_demo.sh")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    called = re.findall(r"^make (\w+) ", script, re.M)
    assert called == ["env", "demo"]
    targets = set(re.findall(r"^(\w+):", (REPO / "Makefile").read_text(), re.M))
    assert set(called) <= targets


def test_make_demo_summary_reads_a_finished_run(tiny_reference, tmp_path):
    """The summary make_demo.sh writes after `make demo` (its Python step, run as the script runs it, in the run's
    directory): the two timings, every rule's seconds from the benchmark files, the class split of classes.json."""
    script = (BENCH / "make_demo.sh").read_text()
    summary = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S)[1]
    out = tmp_path / "make_demo.json"
    done = subprocess.run([sys.executable, "-", "100.0", "110.0", "125.5", str(out)], input=summary, cwd=tiny_reference,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = read_json(out)
    assert (result["install_s"], result["workflow_s"]) == (10.0, 15.5)
    train_il = pd.read_csv(tiny_reference / "benchmarks/il/train_il.tsv", sep="\t")["s"].iloc[0]
    assert result["rule_s"]["train_il"] == round(float(train_il), 2) and "report" in result["rule_s"]
    classes = read_json(tiny_reference / "results/data/classes.json")
    assert result["tail"] == TAIL and result["head"] == classes["head"]
    assert result["images_per_split"] == {"train": 60, "val": 12, "test": 12}
    assert set(result["train_prevalence"]) == set(classes["classes"])


def test_fair_fight_gathers_a_run_s_figures_and_retrains_a_row_with_one_draw(tiny_reference, tmp_path):
    """fair_fight.py on the tiny run: every scheme's real-only row and oracle, every set's row under each, the label
    counts and the costs from its files; Balanced+Resample retrained with draw 0 for both seeds, seed 0 as the run
    trained it (the tiny run's classifier jobs ran on two threads)."""
    out = tmp_path / "out"
    bench(tmp_path, "fair_fight.py", str(tiny_reference), "--widths", "balanced+resample", "--threads", "2",
          "--out", str(out))  # fmt: skip
    summary = read_json(out / "summary.json")
    run = summary["runs"][0]
    assert run["demo_seed"] == TINY["demo"]["seed"] and set(run["schemes"]) == {"Plain", "Balanced"}
    balanced = run["schemes"]["Balanced"]
    assert "oracle_gain" in balanced and isinstance(balanced["oracle_gains"], bool)
    assert list(balanced["rows"]) == ["Balanced+Oracle", "Balanced+Resample", "Balanced+SMOTE", "Balanced+RoentGen@4",
                                      "Balanced+Ours@0", "Balanced+Ours@1", "Balanced+Ours-paper@0"]  # fmt: skip
    assert set(run["sets"]) == {"Oracle", "Resample", "SMOTE", "RoentGen@4", "Ours@0", "Ours@1", "Ours-paper@0"}
    assert set(run["labels"]) == {"ours", "ours-paper"} and all(v["samples"] == 12 for v in run["labels"].values())
    assert run["costs"]["evaluate_classifier_jobs"] == {"plain": 8, "balanced": 8}
    assert set(run["costs"]["set_jobs_s_per_draw"]) == {"draw0", "draw1"}
    row = summary["widths"]["balanced+resample"]
    assert row["seed0_as_the_run"] is True and set(row) == {"seed0_as_the_run", "a draw per seed", "draw 0 for every seed"}
    assert all(positive(row[k]["tail_map_width"]) or row[k]["tail_map_width"] == 0 for k in row if k != "seed0_as_the_run")
    assert "| balanced+resample | draw 0 for every seed |" in (out / "summary.md").read_text()
