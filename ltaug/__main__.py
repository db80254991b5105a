"""Command line: ``python -m ltaug STAGE [options]``; every workflow rule calls one stage.

Each stage takes the config section it depends on as ``--params JSON`` (the rule's
``params:``), its inputs and outputs as paths, and ``--threads``. Bad input ends the
run with one message on stderr that names the file, row or key, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import NamedTuple

from ltaug.errors import LtaugError

SPLITS = ("train", "val", "test")
# the stages that read the data set's image files: each maps > 8-bit pixels by data.window (--window)
READS_IMAGES = {"bootstrap_diffusion", "encode_latents", "fig2_panels", "baseline_resample", "evaluate_classifier",
                "fit_detector", "evaluate_fid", "real_features", "fidelity_funnel", "report"}  # fmt: skip


class Runtime(NamedTuple):
    device: object  # the torch.device (torch is imported by the stages, not at start-up)
    dtype: str  # diffusion.dtype, a name
    variant: str  # diffusion.variant: which weight files of the model directory to read


def _runtime(args: argparse.Namespace) -> Runtime:
    """(device, dtype, variant) from the diffusion section in --diffusion: the device picked once, CUDA
    when present unless the config names one; dtype and variant as configured."""
    from ltaug.config import from_json
    from ltaug.diffusion import DiffusionConfig, pick_device

    runtime = from_json(DiffusionConfig, args.diffusion, "diffusion")
    return Runtime(pick_device(runtime.device), runtime.dtype, runtime.variant)


def _section_with_threads(cls, args: argparse.Namespace, key: str):
    """The stage's config section from --params as ``cls``, its threads from --threads unless the section sets them."""
    from ltaug.config import from_dict

    params = json.loads(args.params)
    params.setdefault("threads", args.threads)
    return from_dict(cls, params, key)


def _demo_dataset(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.demo import DemoConfig, make_demo

    make_demo(args.outdir, from_json(DemoConfig, args.params, "demo"), workers=args.threads)


def _prepare_data(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import DataConfig, prepare_data

    frame = prepare_data(from_json(DataConfig, args.params, "data"), args.manifest, args.threads)
    counts = frame["split"].value_counts()
    print(f"{args.manifest}: {len(frame)} images (" + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS) + ")")


def _split_classes(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import LongTailConfig, write_classes

    split = write_classes(from_json(LongTailConfig, args.params, "long_tail"), args.manifest, args.classes,
                          json.loads(args.labels))  # fmt: skip
    for group in ("head", "medium", "tail"):
        names = getattr(split, group)
        print(f"{group}: " + ", ".join(f"{c} ({split.prevalence[c]:.3f})" for c in names))


def _bootstrap_diffusion(args: argparse.Namespace) -> None:
    from ltaug.bootstrap import BootstrapConfig, bootstrap_diffusion

    cfg = _section_with_threads(BootstrapConfig, args, "diffusion.bootstrap")
    bootstrap_diffusion(args.manifest, args.model, args.samples, cfg, _runtime(args)[0])


def _encode_latents(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import read_manifest
    from ltaug.diffusion import fingerprint, load_vae
    from ltaug.latents import LatentsConfig, encode_split

    cfg = from_json(LatentsConfig, args.params, "latents")
    device, _, variant = _runtime(args)
    model = {"path": args.model, "fingerprint": fingerprint(args.model)}
    vae = load_vae(args.model, device, variant)
    encode_split(read_manifest(args.manifest), args.split, vae, args.store, cfg, model, device,
                 threads=args.threads, source=args.manifest, shard=(args.shard, args.shards))  # fmt: skip


def _gather_latents(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import read_manifest
    from ltaug.diffusion import fingerprint
    from ltaug.latents import LatentsConfig, gather_shards

    cfg = from_json(LatentsConfig, args.params, "latents")
    manifest = read_manifest(args.manifest)
    expect = {"model_fingerprint": fingerprint(args.model), "split_rows": int((manifest["split"] == args.split).sum())}
    rows = gather_shards(args.shards, args.store, cfg.chunk_size, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


def _train_il(args: argparse.Namespace) -> None:
    from ltaug.data import read_classes
    from ltaug.diffusion import fingerprint
    from ltaug.iterated import ILConfig, train_iterated

    cfg = _section_with_threads(ILConfig, args, "il")
    expect = {"model_fingerprint": fingerprint(args.model)} if args.model else None
    result = train_iterated(args.train, args.val, read_classes(args.classes), args.outdir, cfg, _runtime(args)[0],
                            expect=expect, resume=not args.no_resume)  # fmt: skip
    last = result.generation
    print(f"{args.outdir}/model.pt: generation {last} of {cfg.generations}")


def _cam_maps(args: argparse.Namespace) -> None:
    import torch

    from ltaug.cam import CamConfig, cam_maps
    from ltaug.config import from_json

    torch.set_num_threads(args.threads)
    cfg = from_json(CamConfig, args.params, "cam")
    store = cam_maps(args.latents, args.model, args.store, cfg, _runtime(args)[0], shard=(args.shard, args.shards))
    maps = store["maps"]
    kind = f"per-class maps of {store.attrs['map_classes']}" if cfg.class_specific else "maps"
    print(f"{args.store}: {maps.shape[0]} x {cfg.method} {kind}, {maps.shape[-2]} x {maps.shape[-1]} from "
          f"{store.attrs['target_layer']} at {store.attrs['layer_shape']}")


def _gather_cams(args: argparse.Namespace) -> None:
    from ltaug.cam import gather_cams, il_fingerprint
    from ltaug.latents import open_latents

    expect = {"il_fingerprint": il_fingerprint(args.model), "split_rows": int(open_latents(args.latents)["z"].shape[0])}
    rows = gather_cams(args.shards, args.store, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


def _pair_neighbours(args: argparse.Namespace) -> None:
    import torch

    from ltaug.config import from_json
    from ltaug.data import read_classes
    from ltaug.pairing import PairingConfig, pair_neighbours

    torch.set_num_threads(args.threads)
    cfg = from_json(PairingConfig, args.params, "pairing")
    pairs = pair_neighbours(args.latents, args.cams, args.model, read_classes(args.classes), args.pairs, cfg,
                            args.n_per_class)  # fmt: skip
    for (tail, head), group in pairs.groupby(["tail_class", "head_class"], sort=False):
        print(f"{tail} <- {head}: {len(group)} synthetic samples of {group['tail_id'].nunique()} tail samples, "
              f"{group['head_id'].nunique()} different neighbours, mean distance {group['distance'].mean():.3f}")


def _fuse(args: argparse.Namespace) -> None:
    import torch

    from ltaug.config import from_json
    from ltaug.data import read_classes
    from ltaug.fusion import FusionConfig, fuse_latents

    torch.set_num_threads(args.threads)
    cfg = from_json(FusionConfig, args.params, "fusion")
    fused = fuse_latents(args.pairs, args.latents, args.cams, args.model, read_classes(args.classes), args.store, cfg)
    for tail, group in fused.groupby("tail_class", sort=False):
        print(f"{tail}: {len(group)} fused samples, positions from the tail vector {group['tail_share'].mean():.3f}, "
              f"decided by the coin {group['coin_share'].mean():.3f}")  # fmt: skip


def _generate(args: argparse.Namespace) -> None:
    import torch

    from ltaug.config import from_dict
    from ltaug.generate import GenerateConfig, generate_set

    torch.set_num_threads(args.threads)
    device, dtype, variant = _runtime(args)
    cfg = from_dict(GenerateConfig, {**json.loads(args.params), "steps": [args.steps]}, "generate")
    manifest = generate_set(args.fused, args.model, args.outdir, args.steps, cfg, device, dtype, variant)
    print(f"{args.outdir}: {len(manifest)} images")


def _fig2_panels(args: argparse.Namespace) -> None:
    import torch

    from ltaug.data import read_classes
    from ltaug.figures import fig2_panels

    torch.set_num_threads(args.threads)
    paths = fig2_panels(args.manifest, read_classes(args.classes), args.latents, args.cams, args.fused, args.model,
                        args.sets, args.outdir)  # fmt: skip
    print("\n".join(map(str, paths)))


def _synthetic_args(args: argparse.Namespace):
    """(ClassSplit, n_per_class) of a baseline or evaluation stage."""
    from ltaug.data import read_classes

    return read_classes(args.classes), args.n_per_class


def _baseline_smote(args: argparse.Namespace) -> None:
    import torch

    from ltaug.baselines import BaselinesConfig, make_smote
    from ltaug.config import from_json
    from ltaug.diffusion import fingerprint, load_vae
    from ltaug.latents import open_latents

    torch.set_num_threads(args.threads)
    split, n = _synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    store = open_latents(args.latents, expect={"model_fingerprint": fingerprint(args.model), "classes": split.classes})
    runtime = _runtime(args)
    vae = load_vae(args.model, runtime.device, runtime.variant)
    make_smote(store, vae, split.classes, split.tail, n, cfg, args.outdir, source=args.latents)


def _baseline_resample(args: argparse.Namespace) -> None:
    from ltaug.baselines import BaselinesConfig, make_resample
    from ltaug.config import from_json
    from ltaug.data import read_manifest

    split, n = _synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    make_resample(read_manifest(args.manifest), split.classes, split.tail, n, args.image_size, cfg, args.outdir,
                  source=args.manifest)  # fmt: skip


def _baseline_text_to_image(args: argparse.Namespace) -> None:
    import torch

    from ltaug.baselines import BaselinesConfig, make_text_to_image
    from ltaug.config import from_json
    from ltaug.diffusion import check_prompt_template, load_stable_diffusion, torch_dtype

    torch.set_num_threads(args.threads)
    split, n = _synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    device, dtype, variant = _runtime(args)
    sd = load_stable_diffusion(args.model, device, torch_dtype(dtype, device), variant)
    make_text_to_image(sd, split.classes, split.tail, n, args.num_steps, args.guidance_scale, cfg, args.outdir,
                       method=f"roentgen@{args.num_steps}", template=check_prompt_template(args.prompt_template))  # fmt: skip


def _evaluate_classifier(args: argparse.Namespace) -> None:
    import torch

    from ltaug.data import read_manifest
    from ltaug.evaluate import ClassifierConfig, evaluate_method, save_classifier, write_results, write_scores
    from ltaug.synthetic import read_synthetic_set

    split, n = _synthetic_args(args)
    cfg = _section_with_threads(ClassifierConfig, args, "eval.classifier")
    torch.set_num_threads(cfg.threads)
    device = _runtime(args)[0]
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail, n) if args.synthetic else None
    results, model, meta, scores = evaluate_method(args.method, read_manifest(args.manifest), split, synthetic, cfg,
                                                   device, source=args.manifest)  # fmt: skip
    save_classifier(args.model_out, model, meta)
    write_scores(args.scores, scores)
    write_results(args.results, results)


def _compare_methods(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import read_classes
    from ltaug.evaluate import write_results
    from ltaug.stats import IntervalsConfig, compare_methods

    methods = json.loads(args.methods)
    if len(methods) != len(args.scores):
        raise SystemExit(f"--methods names {len(methods)} methods but --scores gives {len(args.scores)} files")
    results = compare_methods(dict(zip(methods, args.scores)), read_classes(args.classes),
                              from_json(IntervalsConfig, args.params, "eval.intervals"))  # fmt: skip
    write_results(args.results, results)
    for method, entry in results["methods"].items():
        tail = entry["map_tail"]
        line = f"{method}: tail mAP {tail['estimate']:.3f} [{tail['lo']:.3f}, {tail['hi']:.3f}]"
        if "delta" in entry:
            d = entry["delta"]["map_tail"]
            line += f", delta {d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}], p {d['p']:.4f}"
        print(line)


def _fit_detector(args: argparse.Namespace) -> None:
    import pandas as pd

    from ltaug.data import read_classes, read_manifest
    from ltaug.fidelity import fit_detector

    split = read_classes(args.classes)
    detector = fit_detector(read_manifest(args.manifest), pd.read_csv(args.boxes), split.tail, args.image_size)
    detector.save(args.detector)
    for name, entry in detector.classes.items():
        print(f"{name}: {entry['filter']}, threshold {entry['threshold']:.2f}, test {entry['test']}")


def _evaluate_fid(args: argparse.Namespace) -> None:
    import torch

    from ltaug.data import read_manifest
    from ltaug.evaluate import write_results
    from ltaug.fid import FidConfig, evaluate_set
    from ltaug.fidelity import Detector
    from ltaug.synthetic import read_synthetic_set

    split, n = _synthetic_args(args)
    cfg = _section_with_threads(FidConfig, args, "eval.fid")
    torch.set_num_threads(cfg.threads)
    device = _runtime(args)[0]
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail, n)
    detector = Detector.load(args.detector) if args.detector else None
    results = evaluate_set(synthetic, read_manifest(args.manifest), split, args.classifier, cfg, args.image_size,
                           device, args.real_features, detector, source=args.manifest)  # fmt: skip
    write_results(args.results, results)


def _real_features(args: argparse.Namespace) -> None:
    import torch

    from ltaug.data import read_manifest
    from ltaug.fid import FidConfig, real_features

    cfg = _section_with_threads(FidConfig, args, "eval.fid")
    torch.set_num_threads(cfg.threads)
    real_features(read_manifest(args.manifest), args.classifier, cfg, args.image_size, _runtime(args)[0], args.features,
                  source=args.manifest)  # fmt: skip


def _fidelity_funnel(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd
    import torch

    from ltaug.data import read_classes, read_manifest
    from ltaug.diffusion import load_vae
    from ltaug.fidelity import Detector
    from ltaug.funnel import classifier_judge, detector_judge, fidelity_funnel, markdown, plot
    from ltaug.io import atomic_path
    from ltaug.synthetic import read_synthetic_set

    torch.set_num_threads(args.threads)
    split, manifest = read_classes(args.classes), read_manifest(args.manifest)
    device, _, variant = _runtime(args)
    sets = {}
    for path in args.sets:
        synthetic = read_synthetic_set(path, split.classes, split.tail, args.n_per_class)
        sets[synthetic.method] = synthetic
    if args.detector:
        detector = Detector.load(args.detector)
        judge, fpr = detector_judge(detector)
        boxes, box_size = pd.read_csv(args.boxes), detector.image_size
    else:
        judge, fpr = classifier_judge(args.classifier, manifest, device)
        boxes, box_size = None, None
    table = fidelity_funnel(manifest, split, args.latents, args.cams, args.model, args.fused or None,
                            load_vae(args.diffusion_model, device, variant), sets, args.tau_h, judge, fpr, boxes, box_size)  # fmt: skip
    with atomic_path(args.funnel) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(args.markdown) as tmp:
        Path(tmp).write_text(markdown(table, split.tail))
    with atomic_path(args.figure) as tmp:
        plot(tmp, table, split.tail)
    print(markdown(table, split.tail))


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ltaug.data import read_classes, read_manifest
    from ltaug.report import write_report
    from ltaug.synthetic import read_synthetic_set

    split = read_classes(args.classes)
    methods = json.loads(args.methods)
    sets = {m: read_synthetic_set(Path(args.synthetic_dir) / m, split.classes, split.tail) for m in methods if m != "baseline"}
    detector = json.loads(Path(args.detector).read_text()) if args.detector else None
    table = write_report(args.outdir, methods, args.classifier_dir, args.fid_dir, split, sets,
                         read_manifest(args.manifest), args.intervals, detector)  # fmt: skip
    print(Path(args.outdir, "table1.md").read_text())
    print(f"{len(table)} rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ltaug", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name: str, run, help: str) -> argparse.ArgumentParser:
        p = stages.add_parser(name, help=help)
        p.add_argument("--params", default="{}", help="the stage's config section as JSON (defaults if omitted)")
        p.add_argument("--threads", type=int, default=1, help="worker threads or processes")
        if name in READS_IMAGES:
            p.add_argument("--window", default="null", help="data.window as JSON: [lo, hi] for > 8-bit images, null = each image's range")
        p.set_defaults(run=run)
        return p

    p = stage("demo_dataset", _demo_dataset, "draw the long-tailed demo data set")
    p.add_argument("--outdir", required=True, help="directory for images/, {train,val,test}.csv, boxes.csv")

    p = stage("prepare_data", _prepare_data, "validate the labels files and images, write the manifest")
    p.add_argument("--manifest", required=True, help="output manifest.csv")

    p = stage("split_classes", _split_classes, "split the classes into head, medium and tail")
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--classes", required=True, help="output classes.json")
    p.add_argument("--labels", default="{}", help="how the labels were read (data.labels_format, uncertain, blank) as JSON")
    p = stage("bootstrap_diffusion", _bootstrap_diffusion, "train the small demo Stable Diffusion model")
    p.add_argument("--manifest", required=True, help="input manifest.csv (its training split)")
    p.add_argument("--model", required=True, help="output diffusers directory")
    p.add_argument("--samples", required=True, help="output directory of sample grids and metrics.json")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")

    p = stage("encode_latents", _encode_latents, "encode one split into a Zarr store of VAE latents")
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    p.add_argument("--split", required=True, help="train, val or test")
    p.add_argument("--store", required=True, help="output .zarr store")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")
    p.add_argument("--shard", type=int, default=1, help="encode only shard SHARD (1-based) of the split's rows")
    p.add_argument("--shards", type=int, default=1, help="number of shards the split is encoded in (latents.shards)")

    p = stage("gather_latents", _gather_latents, "join the shard stores of one split into its latent store")
    p.add_argument("--manifest", required=True, help="input manifest.csv (the split's row count)")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory the shards must come from")
    p.add_argument("--split", required=True, help="train, val or test")
    p.add_argument("--shards", nargs="+", required=True, help="the shard stores 1..S, in order")
    p.add_argument("--store", required=True, help="output .zarr store")

    p = stage("train_il", _train_il, "iterated learning of the sparse latent space (S, D, C)")
    p.add_argument("--train", required=True, help="training latent store (.zarr)")
    p.add_argument("--val", required=True, help="validation latent store (.zarr)")
    p.add_argument("--classes", required=True, help="classes.json (head and tail classes for validation mAP)")
    p.add_argument("--model", default="", help="the diffusion model directory the latents must come from")
    p.add_argument("--outdir", required=True, help="output directory: gen_{g}.pt, model.pt, history.csv")
    p.add_argument("--no-resume", action="store_true", help="train from scratch even if gen_{g}.pt checkpoints exist")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")

    p = stage("cam_maps", _cam_maps, "CAM maps (cam.method) and probabilities of the IL classifier for one split")
    p.add_argument("--latents", required=True, help="latent store of the split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--store", required=True, help="output CAM store (.zarr)")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")
    p.add_argument("--shard", type=int, default=1, help="map only shard SHARD (1-based) of the split's rows")
    p.add_argument("--shards", type=int, default=1, help="number of shards the split is mapped in (cam.shards)")

    p = stage("gather_cams", _gather_cams, "join the CAM shard stores of one split into its CAM store")
    p.add_argument("--latents", required=True, help="latent store of the split (.zarr; its row count)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt) the shards must come from")
    p.add_argument("--shards", nargs="+", required=True, help="the shard stores 1..S, in order")
    p.add_argument("--store", required=True, help="output CAM store (.zarr)")

    p = stage("pair_neighbours", _pair_neighbours, "pair every tail sample with a head neighbour")
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    p.add_argument("--cams", required=True, help="CAM store of the training split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--pairs", required=True, help="output pairs.csv")
    p.add_argument("--n-per-class", type=int, required=True, help="synthetic samples per tail class (fusion.n_per_class)")

    p = stage("fuse", _fuse, "fuse tail and head sparse vectors by their CAM masks and decode them")
    p.add_argument("--pairs", required=True, help="pairs.csv")
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    p.add_argument("--cams", required=True, help="CAM store of the training split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--store", required=True, help="output fused latent store (.zarr)")

    p = stage("generate", _generate, "fused latents to a synthetic image set, after s denoising steps")
    p.add_argument("--fused", required=True, help="fused latent store (.zarr)")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    p.add_argument("--steps", type=int, required=True, help="s: the last s of generate.num_steps steps (0: decode only)")
    p.add_argument("--outdir", required=True, help="output set directory (results/synthetic/ours@{s})")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")

    p = stage("fig2_panels", _fig2_panels, "Fig. 2: how the first fused sample of each tail class was made")
    p.add_argument("--manifest", required=True, help="manifest.csv (paths of the real images)")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    p.add_argument("--cams", required=True, help="CAM store of the training split (.zarr)")
    p.add_argument("--fused", required=True, help="fused latent store (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--sets", nargs="+", required=True, help="synthetic set directories ours@{s}")
    p.add_argument("--outdir", required=True, help="output directory, one PNG per tail class")

    for name, run, help in (
        ("baseline_smote", _baseline_smote, "SMOTE on the training latents of each tail class, decoded by the VAE"),
        ("baseline_resample", _baseline_resample, "class-balanced copies of the real tail images"),
        ("baseline_text_to_image", _baseline_text_to_image, "text-to-image samples from each tail class's name"),
    ):
        p = stage(name, run, help)
        p.add_argument("--classes", required=True, help="classes.json")
        p.add_argument("--n-per-class", type=int, required=True, help="samples per tail class (fusion.n_per_class)")
        p.add_argument("--outdir", required=True, help="output synthetic set directory (results/synthetic/{method})")
        if name == "baseline_smote":
            p.add_argument("--latents", required=True, help="training latent store (.zarr)")
        if name == "baseline_resample":
            p.add_argument("--manifest", required=True, help="manifest.csv (the training images)")
            p.add_argument("--image-size", type=int, required=True, help="latents.image_size: side of the images written")
        if name == "baseline_text_to_image":
            p.add_argument("--num-steps", type=int, required=True, help="N: scheduler steps (generate.num_steps)")
            p.add_argument("--guidance-scale", type=float, required=True, help="generate.guidance_scale")
            p.add_argument("--prompt-template", default="{classes}", help="generate.prompt_template")
        if name != "baseline_resample":
            p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
            p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")

    p = stage("evaluate_classifier", _evaluate_classifier, "train a DenseNet on real + synthetic images, score the test split")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--method", required=True, help="baseline, resample, smote, roentgen@N or ours@s")
    p.add_argument("--synthetic", default="", help="the method's synthetic set directory ('' for the baseline)")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the set")
    p.add_argument("--results", required=True, help="output results/eval/classifier/{method}.json")
    p.add_argument("--model-out", required=True, help="output: the first seed's selected model (.pt)")
    p.add_argument("--scores", required=True, help="output: every seed's test scores (.npz, for compare_methods)")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")

    p = stage("compare_methods", _compare_methods, "bootstrap intervals and paired differences to the baseline")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--methods", required=True, help="JSON list of the methods, in the order of --scores")
    p.add_argument("--scores", nargs="+", required=True, help="every method's results/eval/classifier/{method}.scores.npz")
    p.add_argument("--results", required=True, help="output results/eval/intervals.json")

    p = stage("fit_detector", _fit_detector, "fit the demo's tail-finding detector on real images, test it")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--boxes", required=True, help="the demo's boxes.csv")
    p.add_argument("--image-size", type=int, required=True, help="demo.image_size (the boxes' pixel frame)")
    p.add_argument("--detector", required=True, help="output detector.json")

    p = stage("evaluate_fid", _evaluate_fid, "FD/FID, KID and label fidelity of a synthetic set per tail class")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--synthetic", required=True, help="the synthetic set directory")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the set")
    p.add_argument("--classifier", required=True, help="the real-data classifier (results/eval/classifier/baseline.pt)")
    p.add_argument("--image-size", type=int, required=True, help="latents.image_size (real images for Inception)")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' for none)")
    p.add_argument("--real-features", required=True, help="results/eval/real_features.npz (rule real_features)")
    p.add_argument("--results", required=True, help="output results/eval/fid/{method}.json")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")

    p = stage("real_features", _real_features, "features of the training images and the test-to-train distances")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classifier", required=True, help="the real-data classifier (results/eval/classifier/baseline.pt)")
    p.add_argument("--image-size", type=int, required=True, help="latents.image_size (real images for Inception)")
    p.add_argument("--features", required=True, help="output results/eval/real_features.npz")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")

    p = stage("fidelity_funnel", _fidelity_funnel, "how much of each tail finding survives every stage")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    p.add_argument("--cams", required=True, help="CAM store of the training split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--fused", default="", help="fused latent store (.zarr; '' for none)")
    p.add_argument("--diffusion-model", required=True, help="the diffusers SD directory (its VAE decodes)")
    p.add_argument("--sets", nargs="*", default=[], help="synthetic set directories")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the sets")
    p.add_argument("--tau-h", type=float, required=True, help="fusion.tau_h: M^S = map > tau_h")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' = judge with --classifier)")
    p.add_argument("--boxes", default="", help="the demo's boxes.csv (with --detector)")
    p.add_argument("--classifier", default="", help="the real-data classifier (without boxes)")
    p.add_argument("--funnel", required=True, help="output funnel.csv")
    p.add_argument("--markdown", required=True, help="output funnel.md")
    p.add_argument("--figure", required=True, help="output funnel.png")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device) as JSON")

    p = stage("report", _report, "Table 1, per-class AP plot and sample panels")
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--methods", required=True, help="JSON list of the methods, in table order")
    p.add_argument("--classifier-dir", required=True, help="results/eval/classifier")
    p.add_argument("--fid-dir", required=True, help="results/eval/fid")
    p.add_argument("--synthetic-dir", required=True, help="results/synthetic")
    p.add_argument("--intervals", required=True, help="results/eval/intervals.json (rule compare_methods)")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' for none)")
    p.add_argument("--outdir", required=True, help="output results/report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if hasattr(args, "window"):
            from ltaug.images import set_window

            set_window(json.loads(args.window))
        args.run(args)
    except LtaugError as exc:
        print(f"error in stage {args.stage}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
