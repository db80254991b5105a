# Stage 3b: tail and head sparse vectors fused by their CAM masks (Eqs. 6-12) and decoded by
# the IL decoder (Eq. 13); fusion.n_per_class samples per tail class, one store per variant and
# draw (fusion.seed advanced per draw).


rule fuse:
    input:
        pairs=rules.pair_neighbours.output.pairs,
        latents=f"{OUT}/latents/train.zarr",
        cams=lambda wildcards: cam_store(wildcards.variant),
        model=rules.train_il.output.model,
        classes=rules.split_classes.output.classes,
        class_names=rules.check_class_names.output.checked,
    output:
        store=directory(f"{OUT}/fused/{{variant}}/draw{{draw}}/latents.zarr"),
    log:
        "logs/fusion/fuse_{variant}_draw{draw}.log",
    benchmark:
        "benchmarks/fusion/fuse_{variant}_draw{draw}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
        draw=r"\d+",
    priority: 10  # the method's chain is the demo's longest path: it goes first
    conda:
        ENV
    threads: 2
    params:
        cfg=lambda wildcards: variant_json(
            wildcards.variant, "fusion", draw=wildcards.draw
        ),
    shell:
        stage_command("fuse")
