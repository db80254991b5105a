"""The baselines, the evaluation and the report on the command line: ``python -m ltaug STAGE``.

The baselines' synthetic sets (baseline_smote, baseline_resample, baseline_text_to_image),
Table 1's classifier and its statistics (evaluate_classifier, compare_methods), the demo's
detector, FID and memorisation (fit_detector, evaluate_fid, real_features), the fidelity
funnel and the report. Each stage's options are declared just above it.
"""

from __future__ import annotations

import argparse
import json

from ltaug.cli import (
    diffusion_argument,
    images_argument,
    model_arguments,
    runtime,
    stage,
    synthetic_set_arguments,
    torch_section,
    training_stores_arguments,
)


def synthetic_args(args: argparse.Namespace):
    """(ClassSplit, n_per_class) of a baseline or evaluation stage."""
    from ltaug.data.classes import read_classes

    return read_classes(args.classes), args.n_per_class


def _baseline_smote_arguments(p: argparse.ArgumentParser) -> None:
    synthetic_set_arguments(p)
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    model_arguments(p)


@stage(
    "baseline_smote", "SMOTE on the training latents of each tail class, decoded by the VAE", _baseline_smote_arguments
)
def _baseline_smote(args: argparse.Namespace) -> None:
    import torch

    from ltaug.evaluation.baselines import BaselinesConfig, make_smote
    from ltaug.common.config import from_json
    from ltaug.backbone.latents import open_latents
    from ltaug.backbone.model_dir import fingerprint, load_vae

    torch.set_num_threads(args.threads)
    split, n = synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    store = open_latents(args.latents, expect={"model_fingerprint": fingerprint(args.model), "classes": split.classes})
    device, _, variant = runtime(args)
    vae = load_vae(args.model, device, variant)
    make_smote(store, vae, split.classes, split.tail, n, cfg, args.outdir, source=args.latents)


def _baseline_resample_arguments(p: argparse.ArgumentParser) -> None:
    synthetic_set_arguments(p)
    p.add_argument("--manifest", required=True, help="manifest.csv (the training images)")
    p.add_argument("--image-size", type=int, required=True, help="latents.image_size: side of the images written")
    images_argument(p)


@stage("baseline_resample", "class-balanced copies of the real tail images", _baseline_resample_arguments)
def _baseline_resample(args: argparse.Namespace) -> None:
    from ltaug.evaluation.baselines import BaselinesConfig, make_resample
    from ltaug.common.config import from_json
    from ltaug.data.manifest import read_manifest
    from ltaug.data.image_store import ImageStores

    split, n = synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    make_resample(read_manifest(args.manifest), split.classes, split.tail, n, args.image_size, cfg, args.outdir,
                  source=args.manifest, stores=ImageStores(args.images))  # fmt: skip


def _baseline_text_to_image_arguments(p: argparse.ArgumentParser) -> None:
    synthetic_set_arguments(p)
    p.add_argument("--num-steps", type=int, required=True, help="N: scheduler steps (generate.num_steps)")
    p.add_argument("--guidance-scale", type=float, required=True, help="generate.guidance_scale")
    p.add_argument("--prompt-template", default="{classes}", help="generate.prompt_template")
    model_arguments(p)


@stage("baseline_text_to_image", "text-to-image samples from each tail class's name", _baseline_text_to_image_arguments)
def _baseline_text_to_image(args: argparse.Namespace) -> None:
    import torch

    from ltaug.evaluation.baselines import BaselinesConfig, make_text_to_image
    from ltaug.common.config import from_json
    from ltaug.backbone.diffusion import check_prompt_template, torch_dtype
    from ltaug.backbone.model_dir import load_stable_diffusion

    torch.set_num_threads(args.threads)
    split, n = synthetic_args(args)
    cfg = from_json(BaselinesConfig, args.params, "baselines")
    device, dtype, variant = runtime(args)
    sd = load_stable_diffusion(args.model, device, torch_dtype(dtype, device), variant)
    make_text_to_image(sd, split.classes, split.tail, n, args.num_steps, args.guidance_scale, cfg, args.outdir,
                       method=f"roentgen@{args.num_steps}", template=check_prompt_template(args.prompt_template))  # fmt: skip


def _evaluate_classifier_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--method", required=True, help="baseline, balanced, resample, smote, roentgen@N or <variant>@s")
    p.add_argument("--synthetic", default="", help="the method's synthetic set directory ('' for baseline and balanced)")
    p.add_argument("--balance", type=float, default=0.0, help="class balancing of the batches (balanced: 1; the rest 0)")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the set")
    p.add_argument("--results", required=True, help="output results/eval/classifier/{method}.json")
    p.add_argument("--model-out", required=True, help="output: the first seed's selected model (.pt)")
    p.add_argument("--scores", required=True, help="output: every seed's test scores (.npz, for compare_methods)")
    images_argument(p)
    diffusion_argument(p)


@stage(
    "evaluate_classifier", "train a DenseNet on real + synthetic images, score the test split", _evaluate_classifier_arguments
)
def _evaluate_classifier(args: argparse.Namespace) -> None:
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.classifier import ClassifierConfig, evaluate_method, save_classifier, write_results, write_scores
    from ltaug.data.image_store import ImageStores
    from ltaug.data.synthetic import read_synthetic_set

    split, n = synthetic_args(args)
    cfg = torch_section(ClassifierConfig, args, "eval.classifier")
    device = runtime(args)[0]
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail, n) if args.synthetic else None
    results, model, meta, scores = evaluate_method(args.method, read_manifest(args.manifest), split, synthetic, cfg,
                                                   device, ImageStores(args.images), args.manifest, args.balance)  # fmt: skip
    save_classifier(args.model_out, model, meta)
    write_scores(args.scores, scores)
    write_results(args.results, results)


def _train_judge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--judge", default="{}", help="the eval.judge section as JSON (balance, seed)")
    p.add_argument("--model-out", required=True, help="output results/eval/judge/judge.pt")
    p.add_argument("--results", required=True, help="output results/eval/judge/judge.json (its test metrics)")
    images_argument(p)
    diffusion_argument(p)


@stage("train_judge", "train the class-balanced real-data classifier that judges the synthetic sets", _train_judge_arguments)
def _train_judge(args: argparse.Namespace) -> None:
    import torch

    from ltaug.common.config import from_dict, from_json
    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.classifier import ClassifierConfig, JudgeConfig, train_judge
    from ltaug.data.image_store import ImageStores

    params = {"threads": args.threads, **json.loads(args.params)}  # the rule leaves out eval.classifier.seeds
    cfg = from_dict(ClassifierConfig, params, "eval.classifier")
    torch.set_num_threads(cfg.threads)
    results = train_judge(read_manifest(args.manifest), read_classes(args.classes), cfg,
                          from_json(JudgeConfig, args.judge, "eval.judge"), runtime(args)[0], args.model_out,
                          args.results, ImageStores(args.images), source=args.manifest)  # fmt: skip
    mean = results["mean"]
    print(f"judge: test head mAP {mean['map_head']:.3f}, tail mAP {mean['map_tail']:.3f}, macro AUROC "
          f"{mean['auroc_macro']:.3f}")  # fmt: skip


def _export_training_set_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv (the real training rows)")
    p.add_argument("--classes", required=True, help="classes.json (the class columns' order)")
    p.add_argument("--synthetic", default="", help="the method's synthetic set directory ('' for the real rows alone)")
    p.add_argument("--out", required=True, help="output results/export/{method}.csv")


@stage("export_training_set", "one CSV of a method's training rows: real and synthetic, for any trainer",
       _export_training_set_arguments)  # fmt: skip
def _export_training_set(args: argparse.Namespace) -> None:
    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import read_classes
    from ltaug.data.synthetic import export_training_rows, read_synthetic_set

    split = read_classes(args.classes)
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail) if args.synthetic else None
    rows = export_training_rows(args.out, read_manifest(args.manifest), split.classes, synthetic)
    print(f"{args.out}: {int((rows['synthetic'] == 0).sum())} real and {int(rows['synthetic'].sum())} synthetic rows")


def _compare_methods_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--methods", required=True, help="JSON list of the methods, in the order of --scores")
    p.add_argument("--scores", nargs="+", required=True, help="every method's results/eval/classifier/{method}.scores.npz")
    p.add_argument("--results", required=True, help="output results/eval/intervals.json")


@stage("compare_methods", "bootstrap intervals and paired differences to the reference rows", _compare_methods_arguments)
def _compare_methods(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.classifier import write_results
    from ltaug.evaluation.intervals import IntervalsConfig, compare_methods

    methods = json.loads(args.methods)
    if len(methods) != len(args.scores):
        raise SystemExit(f"--methods names {len(methods)} methods but --scores gives {len(args.scores)} files")
    results = compare_methods(dict(zip(methods, args.scores)), read_classes(args.classes),
                              from_json(IntervalsConfig, args.params, "eval.intervals"))  # fmt: skip
    write_results(args.results, results)
    for method, entry in results["methods"].items():
        tail = entry["map_tail"]
        line = f"{method}: tail mAP {tail['estimate']:.3f} [{tail['lo']:.3f}, {tail['hi']:.3f}]"
        for ref, delta in entry["delta"].items():
            d = delta["map_tail"]
            line += f"; vs {ref} {d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}], p {d['p']:.4f}"
        print(line)


def _fit_detector_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--boxes", required=True, help="the demo's boxes.csv")
    p.add_argument("--image-size", type=int, required=True, help="demo.image_size (the boxes' pixel frame)")
    p.add_argument("--detector", required=True, help="output detector.json")
    images_argument(p)


@stage("fit_detector", "fit the demo's tail-finding detector on real images, test it", _fit_detector_arguments)
def _fit_detector(args: argparse.Namespace) -> None:
    import pandas as pd

    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.detector import fit_detector
    from ltaug.data.image_store import ImageStores

    split = read_classes(args.classes)
    detector = fit_detector(read_manifest(args.manifest), pd.read_csv(args.boxes), split.tail, args.image_size,
                            stores=ImageStores(args.images))  # fmt: skip
    detector.save(args.detector)
    for name, entry in detector.classes.items():
        print(f"{name}: {entry['filter']}, threshold {entry['threshold']:.2f}, test {entry['test']}")


def _evaluate_fid_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--synthetic", required=True, help="the synthetic set directory")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the set")
    p.add_argument("--classifier", required=True, help="the judge (results/eval/judge/judge.pt)")
    p.add_argument("--image-size", type=int, required=True, help="latents.image_size (real images for Inception)")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' for none)")
    p.add_argument("--real-features", required=True, help="results/eval/real_features.npz (rule real_features)")
    p.add_argument("--results", required=True, help="output results/eval/fid/{method}.json")
    images_argument(p)
    diffusion_argument(p)


@stage("evaluate_fid", "FD/FID, KID and label fidelity of a synthetic set per tail class", _evaluate_fid_arguments)
def _evaluate_fid(args: argparse.Namespace) -> None:
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.classifier import write_results
    from ltaug.evaluation.distances import evaluate_set
    from ltaug.evaluation.features import FidConfig
    from ltaug.evaluation.detector import Detector
    from ltaug.data.image_store import ImageStores
    from ltaug.data.synthetic import read_synthetic_set

    split, n = synthetic_args(args)
    cfg = torch_section(FidConfig, args, "eval.fid")
    device = runtime(args)[0]
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail, n)
    detector = Detector.load(args.detector) if args.detector else None
    results = evaluate_set(synthetic, read_manifest(args.manifest), split, args.classifier, cfg, args.image_size,
                           device, args.real_features, detector, source=args.manifest,
                           stores=ImageStores(args.images))  # fmt: skip
    write_results(args.results, results)


def _real_features_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classifier", required=True, help="the judge (results/eval/judge/judge.pt)")
    p.add_argument("--image-size", type=int, required=True, help="latents.image_size (real images for Inception)")
    p.add_argument("--features", required=True, help="output results/eval/real_features.npz")
    images_argument(p)
    diffusion_argument(p)


@stage("real_features", "features of the training images and the test-to-train distances", _real_features_arguments)
def _real_features(args: argparse.Namespace) -> None:
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.distances import real_features
    from ltaug.evaluation.features import FidConfig
    from ltaug.data.image_store import ImageStores

    cfg = torch_section(FidConfig, args, "eval.fid")
    real_features(read_manifest(args.manifest), args.classifier, cfg, args.image_size, runtime(args)[0], args.features,
                  source=args.manifest, stores=ImageStores(args.images))  # fmt: skip


def _fidelity_funnel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    training_stores_arguments(p)
    p.add_argument("--fused", default="", help="fused latent store (.zarr; '' for none)")
    p.add_argument("--diffusion-model", required=True, help="the diffusers SD directory (its VAE decodes)")
    p.add_argument("--sets", nargs="*", default=[], help="synthetic set directories")
    p.add_argument("--n-per-class", type=int, required=True, help="fusion.n_per_class, checked against the sets")
    p.add_argument("--tau-h", type=float, required=True, help="fusion.tau_h: M^S = map > tau_h")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' = judge with --classifier)")
    p.add_argument("--boxes", default="", help="the demo's boxes.csv (with --detector)")
    p.add_argument("--classifier", default="", help="the judge classifier (without boxes)")
    p.add_argument("--funnel", required=True, help="output funnel.csv")
    p.add_argument("--markdown", required=True, help="output funnel.md")
    p.add_argument("--figure", required=True, help="output funnel.png")
    images_argument(p)
    diffusion_argument(p)


@stage("fidelity_funnel", "how much of each tail finding survives every stage", _fidelity_funnel_arguments)
def _fidelity_funnel(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd
    import torch

    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.detector import Detector
    from ltaug.evaluation.funnel import classifier_judge, detector_judge, fidelity_funnel, markdown, plot
    from ltaug.data.image_store import ImageStores
    from ltaug.common.io import atomic_path
    from ltaug.backbone.model_dir import load_vae
    from ltaug.data.synthetic import read_synthetic_set

    torch.set_num_threads(args.threads)
    split, manifest = read_classes(args.classes), read_manifest(args.manifest)
    device, _, variant = runtime(args)
    stores = ImageStores(args.images)
    sets = {}
    for path in args.sets:
        synthetic = read_synthetic_set(path, split.classes, split.tail, args.n_per_class)
        sets[synthetic.method] = synthetic
    if args.detector:
        detector = Detector.load(args.detector)
        judge, fpr = detector_judge(detector)
        boxes, box_size = pd.read_csv(args.boxes), detector.image_size
    else:
        judge, fpr = classifier_judge(args.classifier, manifest, device, stores)
        boxes, box_size = None, None
    table = fidelity_funnel(manifest, split, args.latents, args.cams, args.model, args.fused or None,
                            load_vae(args.diffusion_model, device, variant), sets, args.tau_h, judge, fpr, boxes, box_size,
                            stores=stores)  # fmt: skip
    with atomic_path(args.funnel) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(args.markdown) as tmp:
        Path(tmp).write_text(markdown(table, split.tail))
    with atomic_path(args.figure) as tmp:
        plot(tmp, table, split.tail)
    print(markdown(table, split.tail))


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv")
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--methods", required=True, help="JSON list of the methods, in table order")
    p.add_argument("--classifier-dir", required=True, help="results/eval/classifier")
    p.add_argument("--fid-dir", required=True, help="results/eval/fid")
    p.add_argument("--synthetic-dir", required=True, help="results/synthetic")
    p.add_argument("--intervals", required=True, help="results/eval/intervals.json (rule compare_methods)")
    p.add_argument("--detector", default="", help="detector.json of the demo ('' for none)")
    p.add_argument("--variants", default="{}", help='JSON {variant: {"line": its notes line, "il_on_path": bool}}')
    p.add_argument("--judge", default="", help="results/eval/judge/judge.json (rule train_judge)")
    p.add_argument("--funnels", nargs="*", default=[], help="results/eval/funnel/<variant>.csv of every listed variant")
    p.add_argument("--outdir", required=True, help="output results/report")


@stage("report", "Table 1, what each synthetic set is, the figures and panels", _report_arguments, reads_images=True)
def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ltaug.data.manifest import read_manifest
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.report import write_report
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.common.variants import REAL_ONLY

    split = read_classes(args.classes)
    methods = json.loads(args.methods)
    sets = {m: read_synthetic_set(Path(args.synthetic_dir) / m, split.classes, split.tail) for m in methods if m not in REAL_ONLY}
    detector = json.loads(Path(args.detector).read_text()) if args.detector else None
    funnels = {Path(f).stem: f for f in args.funnels}
    table = write_report(args.outdir, methods, args.classifier_dir, args.fid_dir, split, sets,
                         read_manifest(args.manifest), args.intervals, detector, json.loads(args.variants),
                         args.judge or None, funnels)  # fmt: skip
    print(Path(args.outdir, "table1.md").read_text())
    print(f"{len(table)} rows")
