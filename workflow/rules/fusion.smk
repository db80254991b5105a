# Stage 3b: tail and head sparse vectors fused by their CAM masks (Eqs. 6-12) and decoded by
# the IL decoder (Eq. 13); fusion.n_per_class samples per tail class.


rule fuse:
    input:
        pairs=rules.pair_neighbours.output.pairs,
        latents=f"{OUT}/latents/train.zarr",
        cams=f"{OUT}/cam/train.zarr",
        model=rules.train_il.output.model,
        classes=rules.split_classes.output.classes,
    output:
        store=directory(f"{OUT}/fused/latents.zarr"),
    params:
        cfg=section_json("fusion"),
    log:
        "logs/fusion/fuse.log",
    benchmark:
        "benchmarks/fusion/fuse.tsv"
    threads: 2
    conda:
        ENV
    shell:
        "python -m ltaug fuse --pairs {input.pairs:q} --latents {input.latents:q} --cams {input.cams:q}"
        " --model {input.model:q} --classes {input.classes:q} --store {output.store:q} --params {params.cfg:q}"
        " --threads {threads} > {log} 2>&1"
