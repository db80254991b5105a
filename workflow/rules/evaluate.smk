# Evaluation of Table 1: a DenseNet trained on real + synthetic images under each training scheme
# (mAP on the test split), FD/FID and KID per tail class with label fidelity, and the demo's finding
# detector.


rule evaluate_classifier:
    input:
        unpack(classifier_inputs),
    output:
        results=f"{OUT}/eval/classifier/{{method}}.json",
        model=f"{OUT}/eval/classifier/{{method}}.pt",
        scores=f"{OUT}/eval/classifier/{{method}}.scores.npz",
    log:
        "logs/eval/evaluate_classifier_{method}.log",
    benchmark:
        "benchmarks/eval/evaluate_classifier_{method}.tsv"
    wildcard_constraints:
        method=METHOD_PATTERN,
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        cfg=section_json("eval.classifier"),
        n_per_class=config["fusion"]["n_per_class"],
        diffusion=section_json("diffusion", keep=("device",)),
        scheme=lambda wildcards: parse_row(wildcards.method)[0],
        rebalancing=lambda wildcards: rebalancing_json(wildcards.method),
        images=lambda wildcards, input: stores_root(input.images),
    shell:
        stage_command("evaluate_classifier")


# What a classifier of Table 1 trains on with each method, as one CSV any trainer reads: the real
# training rows and the first draw of the method's synthetic set (absolute paths, classes.json's
# class order).
rule export_training_set:
    input:
        unpack(export_inputs),
    output:
        table=f"{OUT}/export/{{method}}.csv",
    log:
        "logs/eval/export_training_set_{method}.log",
    benchmark:
        "benchmarks/eval/export_training_set_{method}.tsv"
    wildcard_constraints:
        method=METHOD_PATTERN,
    conda:
        ENV
    params:
        synthetic=lambda wildcards, input: input.synthetic[0] if input.synthetic else "",
    shell:
        stage_command("export_training_set")


# Table 1's intervals: every row's test scores resampled together (paired bootstrap), the
# difference of every row to its scheme's real-only row and to each reference row
# (eval.intervals.references: Resample) with its interval and p-value, and its gain as a share
# of its scheme's oracle's.
rule compare_methods:
    input:
        classes=f"{OUT}/data/classes.json",
        scores=[f"{OUT}/eval/classifier/{m}.scores.npz" for m in eval_methods()],
    output:
        results=f"{OUT}/eval/intervals.json",
    log:
        "logs/eval/compare_methods.log",
    benchmark:
        "benchmarks/eval/compare_methods.tsv"
    conda:
        ENV
    params:
        cfg=section_json("eval.intervals"),
        methods=json.dumps(eval_methods()),
    shell:
        stage_command("compare_methods")


if config["demo"]["enabled"]:

    rule fit_detector:
        input:
            manifest=rules.prepare_data.output.manifest,
            classes=rules.split_classes.output.classes,
            boxes=f"{DEMO}/boxes.csv",
            images=image_stores(["val", "test"], DETECTOR_SIZE),
        output:
            detector=f"{OUT}/eval/detector.json",
        log:
            "logs/eval/fit_detector.log",
        benchmark:
            "benchmarks/eval/fit_detector.tsv"
        conda:
            ENV
        params:
            images=lambda wildcards, input: stores_root(input.images),
            image_size=DETECTOR_SIZE,
        shell:
            stage_command("fit_detector")


# The judge of every synthetic set: a DenseNet like Table 1's, trained on the real training images
# with class-balanced batches, so that its features see the tail findings (Baseline's, trained on
# image frequencies, barely does). FD / KID / PRDC, memorisation and novelty are measured in its
# features, label fidelity by its scores at its best-F1 validation thresholds.
rule train_judge:
    input:
        manifest=rules.prepare_data.output.manifest,
        classes=rules.split_classes.output.classes,
        images=image_stores(SPLITS, CLASSIFIER_SIZE),
    output:
        model=f"{OUT}/eval/judge/judge.pt",
        results=f"{OUT}/eval/judge/judge.json",
    log:
        "logs/eval/train_judge.log",
    benchmark:
        "benchmarks/eval/train_judge.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        images=lambda wildcards, input: stores_root(input.images),
        cfg=section_json("eval.classifier", drop=("seeds",)),
        judge=section_json("eval.judge"),
        diffusion=section_json("diffusion", keep=("device",)),
    shell:
        stage_command("train_judge")


rule evaluate_fid:
    input:
        unpack(fid_inputs),
    output:
        results=f"{OUT}/eval/fid/{{method}}.json",
    log:
        "logs/eval/evaluate_fid_{method}.log",
    benchmark:
        "benchmarks/eval/evaluate_fid_{method}.tsv"
    wildcard_constraints:
        method=SYNTHETIC_PATTERN,
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        images=lambda wildcards, input: stores_root(input.images),
        cfg=section_json("eval.fid"),
        n_per_class=config["fusion"]["n_per_class"],
        image_size=config["latents"]["image_size"],
        diffusion=section_json("diffusion", keep=("device",)),
        detector=lambda wildcards, input: input.get("detector", ""),
    shell:
        stage_command("evaluate_fid")


# Memorisation's and novelty's reference: the training images' features and pixels (once for
# every method) and the distance of real test images to their nearest training image.
rule real_features:
    input:
        manifest=f"{OUT}/data/manifest.csv",
        classifier=rules.train_judge.output.model,
        images=real_image_stores(["train", "test"]),
    output:
        features=f"{OUT}/eval/real_features.npz",
    log:
        "logs/eval/real_features.log",
    benchmark:
        "benchmarks/eval/real_features.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
    params:
        images=lambda wildcards, input: stores_root(input.images),
        cfg=section_json(
            "eval.fid",
            keep=("inception_weights", "batch_size", "memorisation_reference", "seed"),
        ),
        image_size=config["latents"]["image_size"],
        diffusion=section_json("diffusion", keep=("device",)),
    shell:
        stage_command("real_features")


# How much of each tail finding survives each stage of a variant: on the demo judged by the finding
# detector against the ground-truth boxes (CAM and fusion measured in the box), on real data by the
# judge classifier (label fidelity). Built by default on the demo (get_final_output), one per variant.
rule fidelity_funnel:
    input:
        unpack(funnel_inputs),
    output:
        funnel=f"{OUT}/eval/funnel/{{variant}}.csv",
        markdown=f"{OUT}/eval/funnel/{{variant}}.md",
        figure=report(
            f"{OUT}/eval/funnel/{{variant}}.png",
            caption="../report/funnel.rst",
            category="Fidelity funnel",
            subcategory="{variant}",
        ),
    log:
        "logs/eval/fidelity_funnel_{variant}.log",
    benchmark:
        "benchmarks/eval/fidelity_funnel_{variant}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        images=lambda wildcards, input: stores_root(input.images),
        tau_h=lambda wildcards: VARIANTS[wildcards.variant]["fusion"]["tau_h"],
        n_per_class=config["fusion"]["n_per_class"],
        diffusion=section_json("diffusion", keep=("device", "variant")),
        detector=lambda wildcards, input: input.get("detector", ""),
        boxes=lambda wildcards, input: input.get("boxes", ""),
        classifier=lambda wildcards, input: input.get("classifier", ""),
    shell:
        stage_command("fidelity_funnel")
