# Evaluation of Table 1: a DenseNet trained on real + synthetic images (mAP on the test split),
# FD/FID and KID per tail class with label fidelity, and the demo's finding detector.


rule evaluate_classifier:
    input:
        unpack(classifier_inputs),
    output:
        results=f"{OUT}/eval/classifier/{{method}}.json",
        model=f"{OUT}/eval/classifier/{{method}}.pt",
    wildcard_constraints:
        method=METHOD_PATTERN,
    params:
        cfg=section_json("eval.classifier"),
        n_per_class=config["fusion"]["n_per_class"],
        diffusion=section_json("diffusion", keep=("device",)),
        synthetic=lambda wildcards, input: input.get("synthetic", ""),
    log:
        "logs/eval/evaluate_classifier_{method}.log",
    benchmark:
        "benchmarks/eval/evaluate_classifier_{method}.tsv"
    threads: 4
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m ltaug evaluate_classifier --manifest {input.manifest:q} --classes {input.classes:q}"
        " --method {wildcards.method:q} --synthetic={params.synthetic:q} --n-per-class {params.n_per_class}"
        " --results {output.results:q} --model-out {output.model:q} --params {params.cfg:q}"
        " --diffusion {params.diffusion:q} --threads {threads} > {log} 2>&1"


if config["demo"]["enabled"]:

    rule fit_detector:
        input:
            manifest=rules.prepare_data.output.manifest,
            classes=rules.split_classes.output.classes,
            boxes=f"{DEMO}/boxes.csv",
        output:
            detector=f"{OUT}/eval/detector.json",
        params:
            image_size=config["demo"]["image_size"],
        log:
            "logs/eval/fit_detector.log",
        benchmark:
            "benchmarks/eval/fit_detector.tsv"
        conda:
            ENV
        shell:
            "python -m ltaug fit_detector --manifest {input.manifest:q} --classes {input.classes:q}"
            " --boxes {input.boxes:q} --image-size {params.image_size} --detector {output.detector:q} > {log} 2>&1"


rule evaluate_fid:
    input:
        unpack(fid_inputs),
    output:
        results=f"{OUT}/eval/fid/{{method}}.json",
    wildcard_constraints:
        method=SYNTHETIC_PATTERN,
    params:
        cfg=section_json("eval.fid"),
        n_per_class=config["fusion"]["n_per_class"],
        image_size=config["latents"]["image_size"],
        diffusion=section_json("diffusion", keep=("device",)),
        detector=lambda wildcards, input: input.get("detector", ""),
    log:
        "logs/eval/evaluate_fid_{method}.log",
    benchmark:
        "benchmarks/eval/evaluate_fid_{method}.tsv"
    threads: 4
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m ltaug evaluate_fid --manifest {input.manifest:q} --classes {input.classes:q}"
        " --synthetic {input.synthetic:q} --n-per-class {params.n_per_class} --classifier {input.classifier:q}"
        " --image-size {params.image_size} --detector={params.detector:q} --results {output.results:q}"
        " --params {params.cfg:q} --diffusion {params.diffusion:q} --threads {threads} > {log} 2>&1"


# How much of each tail finding survives each stage: on the demo judged by the finding detector
# against the ground-truth boxes (CAM and fusion measured in the box), on real data by the
# real-data classifier (label fidelity). Built by default on the demo (get_final_output).
rule fidelity_funnel:
    input:
        unpack(funnel_inputs),
    output:
        funnel=f"{OUT}/eval/funnel.csv",
        markdown=f"{OUT}/eval/funnel.md",
        figure=report(f"{OUT}/eval/funnel.png", caption="../report/funnel.rst", category="Fidelity funnel"),
    params:
        tau_h=config["fusion"]["tau_h"],
        n_per_class=config["fusion"]["n_per_class"],
        diffusion=section_json("diffusion", keep=("device",)),
        detector=lambda wildcards, input: input.get("detector", ""),
        boxes=lambda wildcards, input: input.get("boxes", ""),
        classifier=lambda wildcards, input: input.get("classifier", ""),
    log:
        "logs/eval/fidelity_funnel.log",
    benchmark:
        "benchmarks/eval/fidelity_funnel.tsv"
    threads: 2
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m ltaug fidelity_funnel --manifest {input.manifest:q} --classes {input.classes:q}"
        " --latents {input.latents:q} --cams {input.cams:q} --model {input.model:q} --fused {input.fused:q}"
        " --diffusion-model {input.diffusion_model:q} --sets {input.sets:q} --n-per-class {params.n_per_class}"
        " --tau-h {params.tau_h} --detector={params.detector:q} --boxes={params.boxes:q}"
        " --classifier={params.classifier:q} --funnel {output.funnel:q} --markdown {output.markdown:q}"
        " --figure {output.figure:q} --diffusion {params.diffusion:q} --threads {threads} > {log} 2>&1"
