# Data: the demo data set (optional) and the validated manifest with the head/tail split.


if config["demo"]["enabled"]:

    rule demo_dataset:
        output:
            labels=expand(f"{DEMO}/{{split}}.csv", split=SPLITS),
            boxes=f"{DEMO}/boxes.csv",
            info=f"{DEMO}/demo.json",
            images=directory(f"{DEMO}/images"),
        log:
            "logs/data/demo_dataset.log",
        benchmark:
            "benchmarks/data/demo_dataset.tsv"
        conda:
            ENV
        threads: 8
        params:
            cfg=section_json("demo", drop=("enabled", "outdir")),
            outdir=lambda wildcards, output: os.path.dirname(output.boxes),
        shell:
            stage_command("demo_dataset")


rule prepare_data:
    input:
        unpack(labels_files),
    output:
        manifest=f"{OUT}/data/manifest.csv",
    log:
        "logs/data/prepare_data.log",
    benchmark:
        "benchmarks/data/prepare_data.tsv"
    conda:
        ENV
    threads: 4
    params:
        cfg=section_json("data"),
        # the oracle's held-out share of each tail class (real data): with it, which classes are tail
        oracle=(
            section_json("eval.oracle")
            if config["eval"]["oracle"]["holdout"]
            else "{}"
        ),
        long_tail=(
            section_json("long_tail") if config["eval"]["oracle"]["holdout"] else "{}"
        ),
    shell:
        stage_command("prepare_data")


rule split_classes:
    input:
        manifest=rules.prepare_data.output.manifest,
    output:
        classes=f"{OUT}/data/classes.json",
    log:
        "logs/data/split_classes.log",
    benchmark:
        "benchmarks/data/split_classes.tsv"
    conda:
        ENV
    params:
        cfg=section_json("long_tail"),
        labels=section_json(
            "data", keep=("labels_format", "uncertain", "blank", "ignore_labels")
        ),
    shell:
        stage_command("split_classes")


# Every config key that names a class, checked against classes.json as soon as the classes are split
# (one job per variant, read by its fuse), not minutes of GPU later at the stage that reads it.
rule check_class_names:
    input:
        classes=rules.split_classes.output.classes,
    output:
        checked=f"{OUT}/data/class_names/{{variant}}.json",
    log:
        "logs/data/check_class_names_{variant}.log",
    benchmark:
        "benchmarks/data/check_class_names_{variant}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
    priority: 20  # seconds of work whose point is to fail early
    conda:
        ENV
    params:
        names=lambda wildcards: class_name_keys(wildcards.variant),
    shell:
        stage_command("check_class_names")
