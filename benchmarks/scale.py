"""Memory and time of the stages at MIMIC-CXR-LT shapes: does peak memory stay flat as N grows 10x?

    python benchmarks/scale.py [--n 1000 10000] [--threads 2] [--workdir DIR] [--stages ...] [--n-eval 200]

For each N it builds, in a child process (not measured), RoentGen-shaped inputs: a training latent
store of N latents 4 x 64 x 64 (SD 1.x at 512 px) and a validation store of 200 (``--n-eval``), labelled
with the 26 classes of CXR-LT 2023 at long-tailed prevalences (geometric, 0.40 down to 0.0025: 12 tail
classes at <= 0.02, 5 head at >= 0.15; each class has at least 2 positives, so N >= 100 has a tail), and
JPEG images at 512 px (N training, 200 validation and 200 test, ``--n-eval``; the demo's drawings,
resized). Then every stage runs in its own fresh process, as a Snakemake job does, and reports its wall
seconds and peak RSS (VmHWM) before (after imports and set-up) and after:

    decode_images        every JPEG of the three splits read once into the image stores at 224 px, which the
                         classifier, the real features and the distances then read
    train_il             one generation, one interaction epoch, C' = 64 (the demo's IL widths), a shuffle
                         buffer of 512 latents that every N fills
    cam_maps             LayerCAM of the classifier, per-class maps of the tail classes
    pair_neighbours      k = 5 among the confused head class, streamed (pairing.chunk_size 128)
    fuse                 20 fused samples per tail class
    evaluate_classifier  the demo's DenseNet at 224 px, 20 steps, images read from the stores per batch
                         (cache_images false; what auto decides at MIMIC-CXR-LT size is recorded)
    real_features        the DenseNet features of every training image (memorisation's reference)
    evaluate_fid         one synthetic set (Resample, 20 per tail class) against val + test

Results go to benchmarks/scale/results.csv (stage, n, seconds, seconds per sample, peak RSS, its
ratio to the smallest N) and results.json. Streaming stages must keep peak RSS at 10 N within
1.3x of N; the table says which do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "scale"
STAGES = ["decode_images", "train_il", "cam_maps", "pair_neighbours", "fuse", "evaluate_classifier", "real_features", "evaluate_fid"]
K = 26  # CXR-LT 2023 classes
LATENT = (4, 64, 64)  # SD 1.x / RoentGen at 512 px
N_VAL = N_TEST = 200
N_PER_CLASS = 20
REQUIRED_RATIO = 1.3
# il.shuffle_buffer of the benchmark: no larger than the smallest N, so every N fills it and the ratio measures
# growth with N (train_il's memory is O(buffer); with the default 4,096, N = 1,000 would fill a quarter of it)
SHUFFLE_BUFFER = 512
FINGERPRINT = "benchmark-" + "0" * 54


def _rss_mib() -> float:
    return round(peak_rss_mib(), 1)


def prevalences() -> list[float]:
    """26 long-tailed training prevalences, 0.40 for the most common class down to 0.0025."""
    import numpy as np

    return [float(p) for p in np.geomspace(0.40, 0.0025, K)]


# The 26 classes of CXR-LT 2023, most to least common (roughly as in MIMIC-CXR); the prevalences are
# the geometric series of prevalences(), not the published ones: the shapes matter here, not the labels.
CXR_LT_2023 = [
    "No Finding", "Support Devices", "Pleural Effusion", "Lung Opacity", "Atelectasis", "Cardiomegaly", "Edema",
    "Pneumonia", "Consolidation", "Enlarged Cardiomediastinum", "Pneumothorax", "Infiltration", "Nodule", "Emphysema",
    "Pleural Thickening", "Mass", "Fracture", "Calcification of the Aorta", "Tortuous Aorta", "Subcutaneous Emphysema",
    "Lung Lesion", "Fibrosis", "Pleural Other", "Hernia", "Pneumomediastinum", "Pneumoperitoneum",
]  # fmt: skip


def class_names() -> list[str]:
    return list(CXR_LT_2023)


def labels_for(n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.zeros((n, K), dtype=np.uint8)
    for k, p in enumerate(prevalences()):
        labels[rng.choice(n, size=max(2, round(p * n)), replace=False), k] = 1
    return labels


def write_store(path: Path, n: int, split: str, seed: int, chunk: int = 256) -> None:
    """A latent store as encode_latents writes it, filled chunk by chunk (never N latents in memory)."""
    import numpy as np
    import zarr

    from ltaug.common.shards import COMPRESSOR

    labels = labels_for(n, seed)
    root = zarr.open_group(path, mode="w", zarr_format=3)
    z = root.create_array("z", shape=(n, *LATENT), chunks=(chunk, *LATENT), dtype="float32", compressors=COMPRESSOR)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(LATENT).astype(np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = base + 0.5 * rng.standard_normal((stop - start, *LATENT)).astype(np.float32)
        for k in range(K):  # class k adds to one channel in its own 8 x 8 patch
            rows = np.flatnonzero(labels[start:stop, k])
            y, x = 8 * (k % 8), 8 * ((3 * k) % 8)
            block[rows, k % 4, y : y + 8, x : x + 8] += 1.5
        z[start:stop] = block
    root.create_array("labels", data=labels, chunks=(chunk, K), compressors=COMPRESSOR)
    ids = np.array([f"{split}-{i:06d}" for i in range(n)], dtype=str)
    root.create_array("ids", shape=(n,), chunks=(chunk,), dtype=str, compressors=COMPRESSOR)[:] = ids
    root.attrs.update({"classes": class_names(), "split": split, "model_path": "benchmark", "model_fingerprint": FINGERPRINT,
                       "scaling_factor": 0.18215, "shift_factor": None, "image_size": 512, "mode": "mean", "seed": 0,
                       "complete": True})  # fmt: skip


def write_images(root: Path, n_train: int, n_eval: int = N_VAL) -> None:
    """JPEGs at 512 px and manifest.csv (id, path, split, one column per class) for train / val / test."""
    import pandas as pd
    from PIL import Image

    from ltaug.data.demo import DemoConfig, render_image

    cfg, rows, labels = DemoConfig(image_size=128), [], []
    for split, n, seed in (("train", n_train, 1), ("val", n_eval, 2), ("test", n_eval, 3)):
        (root / "images" / split).mkdir(parents=True)
        for i in range(n):
            path = root / "images" / split / f"{split}-{i:06d}.jpg"
            Image.fromarray(render_image(cfg, split, i % 2000, [])[0]).resize((512, 512), Image.BILINEAR).save(path, quality=90)
            rows.append({"id": path.stem, "path": str(path), "split": split})
        labels.append(labels_for(n, seed))
    import numpy as np

    frame = pd.concat([pd.DataFrame(rows), pd.DataFrame(np.concatenate(labels), columns=class_names())], axis=1)
    frame.to_csv(root / "manifest.csv", index=False)


def prepare(root: Path, n: int, n_eval: int = N_VAL) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_store(root / "train.zarr", n, "train", 1)
    write_store(root / "val.zarr", n_eval, "val", 2)
    write_images(root, n, n_eval)


def _split(root: Path):
    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import LongTailConfig, split_classes

    return split_classes(LongTailConfig(), read_manifest(root / "manifest.csv"))


def classifier_config(threads: int):
    from ltaug.evaluation.classifier import ClassifierConfig

    return ClassifierConfig(image_size=224, growth_rate=12, block_config=[2, 4, 4, 4], num_init_features=24, steps=20,
                            batch_size=32, eval_every=20, seeds=[0], cache_images=False, threads=threads)  # fmt: skip


def fid_config(n_test: int = N_TEST):
    from ltaug.evaluation.features import FidConfig

    return FidConfig(real_splits=["val", "test"], memorisation_reference=n_test)


def run_stage(stage: str, root: Path, threads: int) -> dict:
    """One stage on the prepared inputs of ``root``; returns what it made (sizes), for the record."""
    import torch

    from ltaug.data.image_store import ImageStores

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    split = _split(root)
    before = _rss_mib()
    start = time.perf_counter()
    if stage == "train_il":
        from ltaug.method.iterated import ILConfig
        from ltaug.method.train_il import train_iterated

        cfg = ILConfig(generations=1, interaction_epochs=1, embed_channels=64, student_depth=2, balance=1.0,
                       shuffle_buffer=SHUFFLE_BUFFER, threads=threads)  # fmt: skip
        train_iterated(root / "train.zarr", root / "val.zarr", split, root / "il", cfg, cpu, resume=False)
    elif stage == "cam_maps":
        from ltaug.method.cam import CamConfig, cam_maps

        cam_maps(root / "train.zarr", root / "il" / "model.pt", root / "cam.zarr", CamConfig(), cpu)
    elif stage == "pair_neighbours":
        from ltaug.method.pairing import PairingConfig, pair_neighbours

        pair_neighbours(root / "train.zarr", root / "cam.zarr", root / "il" / "model.pt", split, root / "pairs.csv",
                        PairingConfig(), N_PER_CLASS)  # fmt: skip
    elif stage == "fuse":
        from ltaug.method.fusion import FusionConfig
        from ltaug.method.fused_store import fuse_latents

        fuse_latents(root / "pairs.csv", root / "train.zarr", root / "cam.zarr", root / "il" / "model.pt", split,
                     root / "fused.zarr", FusionConfig(n_per_class=N_PER_CLASS))  # fmt: skip
    elif stage == "decode_images":
        from ltaug.data.manifest import read_manifest
        from ltaug.data.image_store import ImagesConfig, decode_split, store_path

        manifest = read_manifest(root / "manifest.csv")
        for part in ("train", "val", "test"):
            decode_split(manifest, part, 224, store_path(root / "stores", part, 224), ImagesConfig(), threads=threads)
    elif stage == "evaluate_classifier":
        from ltaug.data.manifest import read_manifest
        from ltaug.evaluation.classifier import evaluate_method, save_classifier

        _, model, meta, _ = evaluate_method("baseline", read_manifest(root / "manifest.csv"), split, None,
                                            classifier_config(threads), cpu, ImageStores(root / "stores"))  # fmt: skip
        save_classifier(root / "baseline.pt", model, meta)
    elif stage == "real_features":
        from ltaug.data.manifest import read_manifest
        from ltaug.evaluation.distances import real_features

        manifest = read_manifest(root / "manifest.csv")
        real_features(manifest, root / "baseline.pt", fid_config(int((manifest["split"] == "test").sum())), 224, cpu,
                      root / "real_features.npz", stores=ImageStores(root / "stores"))  # fmt: skip
    elif stage == "evaluate_fid":
        from ltaug.evaluation.baselines import BaselinesConfig, make_resample
        from ltaug.data.manifest import read_manifest
        from ltaug.evaluation.distances import evaluate_set
        from ltaug.data.synthetic import read_synthetic_set

        manifest = read_manifest(root / "manifest.csv")
        if not (root / "resample").exists():
            make_resample(manifest, split.classes, split.tail, N_PER_CLASS, 224, BaselinesConfig(), root / "resample",
                          source="benchmark manifest", stores=ImageStores(root / "stores"))
        start = time.perf_counter()  # the synthetic set is the input, not the stage
        synthetic = read_synthetic_set(root / "resample", split.classes, split.tail, N_PER_CLASS)
        evaluate_set(synthetic, manifest, split, root / "baseline.pt", fid_config(int((manifest["split"] == "test").sum())),
                     224, cpu, root / "real_features.npz", stores=ImageStores(root / "stores"))  # fmt: skip
    else:
        raise SystemExit(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    return {"seconds": round(time.perf_counter() - start, 2), "rss_before_mib": before, "peak_rss_mib": _rss_mib(),
            "tail_classes": len(split.tail), "head_classes": len(split.head)}  # fmt: skip


def child(command: list[str], log: Path) -> dict:
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, __file__, *command], stdout=subprocess.PIPE, stderr=out, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{' '.join(command)} failed (exit {proc.returncode}); see {log}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="training set sizes (each >= 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every stage")
    parser.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES, help="stages to run, in this order")
    parser.add_argument("--n-eval", type=int, default=N_VAL, help="validation and test images (and validation latents)")
    parser.add_argument("--workdir", default="", help="where the inputs are built (default: the system's temporary directory)")
    parser.add_argument("--out", default=str(OUT), help="directory of results.csv, results.json and scale.log")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, root = args.child[0], Path(args.child[1])
        if stage == "prepare":
            prepare(root, int(root.name.split("-")[-1]), args.n_eval)
            print("RESULT {}")
        else:
            print("RESULT " + json.dumps(run_stage(stage, root, args.threads)))
        return
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "scale.log"
    log.write_text("")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        for n in args.n:
            root = Path(tmp) / f"n-{n}"
            start = time.perf_counter()
            child(["--child", "prepare", str(root), "--n-eval", str(args.n_eval)], log)
            print(f"N = {n}: inputs in {time.perf_counter() - start:.0f} s", flush=True)
            for stage in args.stages:
                result = child(["--child", stage, str(root), "--threads", str(args.threads)], log)
                per = N_PER_CLASS * result["tail_classes"] if stage in ("fuse",) else n
                rows.append({"stage": stage, "n": n, **result, "seconds_per_sample": round(result["seconds"] / per, 5),
                             "per": "fused sample" if stage == "fuse" else "training sample"})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    smallest = table[table["n"] == min(args.n)].set_index("stage")["peak_rss_mib"]
    table["rss_ratio_to_smallest_n"] = (table["peak_rss_mib"] / table["stage"].map(smallest)).round(3)
    table["flat"] = table["rss_ratio_to_smallest_n"] <= REQUIRED_RATIO
    table.to_csv(out / "results.csv", index=False)
    from ltaug.data.image_source import cache_decision

    mimic = {f"{n} images, {gib} GiB available": cache_decision("auto", n, 224, gib * 2**30)[1]
             for n in (377_110,) for gib in (128, 512)}  # fmt: skip
    meta = {"cache_images_auto_at_mimic": mimic, "n": args.n, "n_eval": args.n_eval, "threads": args.threads, "cpus": len(os.sched_getaffinity(0)), "latent": LATENT, "classes": K,
            "required_ratio": REQUIRED_RATIO, "rows": rows}  # fmt: skip
    (out / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
