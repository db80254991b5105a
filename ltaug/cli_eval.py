"""The baselines, the evaluation and the report on the command line: ``python -m ltaug STAGE``.

The baselines' synthetic sets (baseline_smote, baseline_resample, baseline_text_to_image),
Table 1's classifier and its statistics (evaluate_classifier, train_judge, export_training_set,
compare_methods), the demo's detector, FID and memorisation (fit_detector, evaluate_fid,
real_features), the fidelity funnel and the report. Each stage is declared once (:mod:`ltaug.cli`).
"""

from __future__ import annotations

import json

from ltaug.cli import (
    Input,
    Job,
    Option,
    Output,
    Param,
    Wildcard,
    images_option,
    stage,
    stages,
    synthetic_set_options,
    training_store_options,
)

BASELINES = ("baselines", "ltaug.evaluation.baselines:BaselinesConfig")
CLASSIFIER = ("eval.classifier", "ltaug.evaluation.classifier:ClassifierConfig")
FID = ("eval.fid", "ltaug.evaluation.features:FidConfig")


def _read_split(job: Job):
    """classes.json of a baseline or evaluation stage."""
    from ltaug.data.classes import read_classes

    return read_classes(job.args.classes)


@stage("baseline_smote", "SMOTE on the training latents of each tail class, decoded by the VAE",
       *synthetic_set_options(),
       Input("latents", "training latent store (.zarr)"),
       Input("model", "diffusers Stable Diffusion directory"),
       section=BASELINES, torch=True, runtime=True)  # fmt: skip
def _baseline_smote(job: Job) -> None:
    from ltaug.backbone.latents import open_latents
    from ltaug.backbone.model_dir import fingerprint, load_vae
    from ltaug.evaluation.baselines import make_smote

    args, split, (device, _, variant) = job.args, _read_split(job), job.runtime
    store = open_latents(args.latents, expect={"model_fingerprint": fingerprint(args.model), "classes": split.classes})
    vae = load_vae(args.model, device, variant)
    make_smote(store, vae, split.classes, split.tail, args.n_per_class, job.cfg, args.outdir, source=args.latents)


@stage("baseline_resample", "class-balanced copies of the real tail images",
       *synthetic_set_options(),
       Input("manifest", "manifest.csv (the training images)"),
       Param("image_size", "latents.image_size: side of the images written", type=int),
       images_option(),
       section=BASELINES)  # fmt: skip
def _baseline_resample(job: Job) -> None:
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.baselines import make_resample

    args, split = job.args, _read_split(job)
    make_resample(read_manifest(args.manifest), split.classes, split.tail, args.n_per_class, args.image_size, job.cfg,
                  args.outdir, source=args.manifest, stores=ImageStores(args.images))  # fmt: skip


@stage("baseline_text_to_image", "text-to-image samples from each tail class's name",
       *synthetic_set_options(),
       Option("num_steps", "N: scheduler steps (generate.num_steps)", "wildcards.steps", type=int),
       Option("guidance_scale", "generate.guidance_scale", "params.guidance", type=float),
       Option("prompt_template", "generate.prompt_template", "params.template", default="{classes}"),
       Input("model", "diffusers Stable Diffusion directory"),
       section=BASELINES, torch=True, runtime=True)  # fmt: skip
def _baseline_text_to_image(job: Job) -> None:
    from ltaug.backbone.diffusion import check_prompt_template, torch_dtype
    from ltaug.backbone.model_dir import load_stable_diffusion
    from ltaug.evaluation.baselines import make_text_to_image

    args, split, (device, dtype, variant) = job.args, _read_split(job), job.runtime
    sd = load_stable_diffusion(args.model, device, torch_dtype(dtype, device), variant)
    make_text_to_image(sd, split.classes, split.tail, args.n_per_class, args.num_steps, args.guidance_scale, job.cfg,
                       args.outdir, method=f"roentgen@{args.num_steps}",
                       template=check_prompt_template(args.prompt_template))  # fmt: skip


@stage("baseline_oracle", "the oracle: fresh real images of each tail class (demo generator, or held-out images)",
       *synthetic_set_options(),
       Input("manifest", "manifest.csv (its split holdout, on real data)"),
       Param("image_size", "latents.image_size: side of the images written", type=int),
       Param("draw", "the draw of the set (classifier seed i trains with draw i)", type=int),
       Param("demo", "the demo section as JSON ('' on real data: the held-out images)", default=""),
       Param("oracle", "the eval.oracle section as JSON (holdout, seed)"),
       reads_images=True)  # fmt: skip
def _baseline_oracle(job: Job) -> None:
    from ltaug.common.config import from_json, section_values
    from ltaug.data.demo import DemoConfig
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.baselines import make_oracle

    args, split = job.args, _read_split(job)
    demo = from_json(DemoConfig, args.demo, "demo") if args.demo else None
    oracle = section_values(args.oracle, "eval.oracle")
    make_oracle(split.classes, split.tail, args.n_per_class, args.image_size, args.draw, args.outdir, demo=demo,
                manifest=None if demo else read_manifest(args.manifest), seed=oracle["seed"],
                source=args.manifest)  # fmt: skip


@stage("evaluate_classifier", "train a DenseNet on real + synthetic images under a training scheme, score the test split",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       Wildcard("method", "a row of Table 1: baseline, balanced, logit-adjusted, a set or <scheme>+<set>"),
       Input("synthetic", "the draws of the row's synthetic set, one per classifier seed or one for all (none for "
             "a real-only row)", many=True, default=[]),
       Param("n_per_class", "fusion.n_per_class, checked against the set", type=int),
       Param("scheme", "the row's training scheme: plain, balanced or logit-adjusted", default="plain"),
       Param("rebalancing", "the eval.rebalancing section as JSON (synthetic_share, synthetic_weight, tau)",
             default="{}"),
       Output("results", "output results/eval/classifier/{method}.json"),
       Option("model_out", "output: the first seed's selected model (.pt)", "output.model"),
       Output("scores", "output: every seed's test scores (.npz, for compare_methods)"),
       images_option(),
       section=CLASSIFIER, torch=True, runtime=True)  # fmt: skip
def _evaluate_classifier(job: Job) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.evaluation.classifier import evaluate_method, save_classifier, write_results, write_scores
    from ltaug.evaluation.schemes import RebalancingConfig

    args, split = job.args, _read_split(job)
    draws = [read_synthetic_set(d, split.classes, split.tail, args.n_per_class) for d in args.synthetic]
    rebalancing = from_json(RebalancingConfig, args.rebalancing, "eval.rebalancing")
    results, model, meta, scores = evaluate_method(args.method, read_manifest(args.manifest), split, draws or None,
                                                   job.cfg, job.runtime.device, ImageStores(args.images),
                                                   args.manifest, args.scheme, rebalancing)  # fmt: skip
    save_classifier(args.model_out, model, meta)
    write_scores(args.scores, scores)
    write_results(args.results, results)


@stage("train_judge", "train the class-balanced real-data classifier that judges the synthetic sets",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       Param("judge", "the eval.judge section as JSON (balance, seed)", default="{}"),
       Option("model_out", "output results/eval/judge/judge.pt", "output.model"),
       Output("results", "output results/eval/judge/judge.json (its test metrics)"),
       images_option(),
       section=CLASSIFIER, torch=True, runtime=True)  # fmt: skip
def _train_judge(job: Job) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.classifier import JudgeConfig, train_judge

    args = job.args  # the rule leaves eval.classifier.seeds out of --params
    results = train_judge(read_manifest(args.manifest), _read_split(job), job.cfg,
                          from_json(JudgeConfig, args.judge, "eval.judge"), job.runtime.device, args.model_out,
                          args.results, ImageStores(args.images), source=args.manifest)  # fmt: skip
    mean = results["mean"]
    print(f"judge: test head mAP {mean['map_head']:.3f}, tail mAP {mean['map_tail']:.3f}, macro AUROC "
          f"{mean['auroc_macro']:.3f}")  # fmt: skip


@stage("export_training_set", "one CSV of a method's training rows: real and synthetic, for any trainer",
       Input("manifest", "manifest.csv (the real training rows)"),
       Input("classes", "classes.json (the class columns' order)"),
       Param("synthetic", "the method's synthetic set directory ('' for the real rows alone)", default=""),
       Option("out", "output results/export/{method}.csv", "output.table"))  # fmt: skip
def _export_training_set(job: Job) -> None:
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import export_training_rows, read_synthetic_set

    args, split = job.args, _read_split(job)
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail) if args.synthetic else None
    rows = export_training_rows(args.out, read_manifest(args.manifest), split.classes, synthetic)
    print(f"{args.out}: {int((rows['synthetic'] == 0).sum())} real and {int(rows['synthetic'].sum())} synthetic rows")


@stage("compare_methods", "bootstrap intervals and paired differences to the reference rows",
       Input("classes", "classes.json"),
       Param("methods", "JSON list of the methods, in the order of --scores"),
       Input("scores", "every method's results/eval/classifier/{method}.scores.npz", many=True),
       Output("results", "output results/eval/intervals.json"),
       section=("eval.intervals", "ltaug.evaluation.intervals:IntervalsConfig"))  # fmt: skip
def _compare_methods(job: Job) -> None:
    from ltaug.common.errors import ConfigError
    from ltaug.evaluation.classifier import write_results
    from ltaug.evaluation.intervals import compare_methods

    args = job.args
    methods = json.loads(args.methods)
    if len(methods) != len(args.scores):
        raise ConfigError(f"--methods names {len(methods)} methods but --scores gives {len(args.scores)} files")
    results = compare_methods(dict(zip(methods, args.scores)), _read_split(job), job.cfg)
    write_results(args.results, results)
    for method, entry in results["methods"].items():
        tail = entry["map_tail"]
        line = f"{method}: tail mAP {tail['estimate']:.3f} [{tail['lo']:.3f}, {tail['hi']:.3f}]"
        for ref, delta in entry["delta"].items():
            d = delta["map_tail"]
            line += f"; vs {ref} {d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}], p {d['p']:.4f}"
        print(line)


@stage("fit_detector", "fit the demo's tail-finding detector on real images, test it",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       Input("boxes", "the demo's boxes.csv"),
       Param("image_size", "demo.image_size (the boxes' pixel frame)", type=int),
       Output("detector", "output detector.json"),
       images_option())  # fmt: skip
def _fit_detector(job: Job) -> None:
    import pandas as pd

    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.detector import fit_detector

    args = job.args
    detector = fit_detector(read_manifest(args.manifest), pd.read_csv(args.boxes), _read_split(job).tail,
                            args.image_size, stores=ImageStores(args.images))  # fmt: skip
    detector.save(args.detector)
    for name, entry in detector.classes.items():
        print(f"{name}: {entry['filter']}, threshold {entry['threshold']:.2f}, test {entry['test']}")


@stage("evaluate_fid", "FD/FID, KID and label fidelity of a synthetic set per tail class",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       Input("synthetic", "the synthetic set directory"),
       Param("n_per_class", "fusion.n_per_class, checked against the set", type=int),
       Option("classifier", "the judge (results/eval/judge/judge.pt)", "input.judge"),
       Param("image_size", "latents.image_size (real images for Inception)", type=int),
       Param("detector", "detector.json of the demo ('' for none)", default=""),
       Input("real_features", "results/eval/real_features.npz (rule real_features)"),
       Output("results", "output results/eval/fid/{method}.json"),
       images_option(),
       section=FID, torch=True, runtime=True)  # fmt: skip
def _evaluate_fid(job: Job) -> None:
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.evaluation.classifier import write_results
    from ltaug.evaluation.detector import Detector
    from ltaug.evaluation.distances import evaluate_set

    args, split = job.args, _read_split(job)
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail, args.n_per_class)
    detector = Detector.load(args.detector) if args.detector else None
    results = evaluate_set(synthetic, read_manifest(args.manifest), split, args.classifier, job.cfg, args.image_size,
                           job.runtime.device, args.real_features, detector, source=args.manifest,
                           stores=ImageStores(args.images))  # fmt: skip
    write_results(args.results, results)


@stage("real_features", "features of the training images and the test-to-train distances",
       Input("manifest", "manifest.csv"),
       Input("classifier", "the judge (results/eval/judge/judge.pt)"),
       Param("image_size", "latents.image_size (real images for Inception)", type=int),
       Output("features", "output results/eval/real_features.npz"),
       images_option(),
       section=FID, torch=True, runtime=True)  # fmt: skip
def _real_features(job: Job) -> None:
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.evaluation.distances import real_features

    args = job.args
    real_features(read_manifest(args.manifest), args.classifier, job.cfg, args.image_size, job.runtime.device,
                  args.features, source=args.manifest, stores=ImageStores(args.images))  # fmt: skip


@stage("fidelity_funnel", "how much of each tail finding survives every stage",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       *training_store_options(),
       Input("fused", "fused latent store (.zarr; '' for none)", default=""),
       Input("diffusion_model", "the diffusers SD directory (its VAE decodes)"),
       Input("sets", "synthetic set directories", many=True, default=[]),
       Param("n_per_class", "fusion.n_per_class, checked against the sets", type=int),
       Param("tau_h", "fusion.tau_h: M^S = map > tau_h", type=float),
       Param("detector", "detector.json of the demo ('' = judge with --classifier)", default=""),
       Param("boxes", "the demo's boxes.csv (with --detector)", default=""),
       Param("classifier", "the judge classifier (without boxes)", default=""),
       Output("funnel", "output funnel.csv"),
       Output("markdown", "output funnel.md"),
       Output("figure", "output funnel.png"),
       images_option(),
       torch=True, runtime=True)  # fmt: skip
def _fidelity_funnel(job: Job) -> None:
    from pathlib import Path

    import pandas as pd

    from ltaug.backbone.model_dir import load_vae
    from ltaug.common.io import atomic_path
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.evaluation.detector import Detector
    from ltaug.evaluation.funnel import classifier_judge, detector_judge, fidelity_funnel, markdown, plot

    args, (device, _, variant) = job.args, job.runtime
    split, manifest = _read_split(job), read_manifest(args.manifest)
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


@stage("report", "Table 1, what each synthetic set is, the figures and panels",
       Input("manifest", "manifest.csv"),
       Input("classes", "classes.json"),
       Param("methods", "JSON list of the methods, in table order"),
       Param("classifier_dir", "results/eval/classifier"),
       Param("fid_dir", "results/eval/fid"),
       Param("synthetic_dir", "results/synthetic (each set's draw0 is read)"),
       Input("intervals", "results/eval/intervals.json (rule compare_methods)"),
       Param("detector", "detector.json of the demo ('' for none)", default=""),
       Param("variants", 'JSON {variant: {"line": its notes line, "il_on_path": bool}}', default="{}"),
       Input("judge", "results/eval/judge/judge.json (rule train_judge)", default=""),
       Input("funnels", "results/eval/funnel/<variant>.csv of every listed variant", many=True, default=[]),
       Param("outdir", "output results/report"),
       reads_images=True)  # fmt: skip
def _report(job: Job) -> None:
    from pathlib import Path

    from ltaug.common.variants import parse_row
    from ltaug.data.manifest import read_manifest
    from ltaug.data.synthetic import read_synthetic_set
    from ltaug.evaluation.report import write_report

    args, split = job.args, _read_split(job)
    methods = json.loads(args.methods)
    names = dict.fromkeys(parse_row(m)[1] for m in methods if parse_row(m)[1])  # each set once, its first draw
    sets = {s: read_synthetic_set(Path(args.synthetic_dir) / s / "draw0", split.classes, split.tail) for s in names}
    detector = json.loads(Path(args.detector).read_text()) if args.detector else None
    funnels = {Path(f).stem: f for f in args.funnels}
    table = write_report(args.outdir, methods, args.classifier_dir, args.fid_dir, split, sets,
                         read_manifest(args.manifest), args.intervals, detector, json.loads(args.variants),
                         args.judge or None, funnels)  # fmt: skip
    print(Path(args.outdir, "table1.md").read_text())
    print(f"{len(table)} rows")


# the stages of this module, in the order `python -m ltaug --help` lists them
STAGES = stages(
    _baseline_smote, _baseline_resample, _baseline_text_to_image, _baseline_oracle, _evaluate_classifier, _train_judge,
    _export_training_set, _compare_methods, _fit_detector, _evaluate_fid, _real_features, _fidelity_funnel, _report
)
