# Stage 3a: every training sample of a tail class gets a head neighbour from the head class
# the IL classifier confuses it with most.


rule pair_neighbours:
    input:
        latents=f"{OUT}/latents/train.zarr",
        cams=f"{OUT}/cam/train.zarr",
        model=rules.train_il.output.model,
        classes=rules.split_classes.output.classes,
    output:
        pairs=f"{OUT}/pairs/pairs.csv",
    params:
        cfg=section_json("pairing"),
    log:
        "logs/pairing/pair_neighbours.log",
    benchmark:
        "benchmarks/pairing/pair_neighbours.tsv"
    threads: 2
    conda:
        ENV
    shell:
        "python -m ltaug pair_neighbours --latents {input.latents:q} --cams {input.cams:q} --model {input.model:q}"
        " --classes {input.classes:q} --pairs {output.pairs:q} --params {params.cfg:q} --threads {threads} > {log} 2>&1"
