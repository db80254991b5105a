# Stage 3a: every synthetic sample of a tail class gets a tail sample and a fresh head neighbour
# from the head class the IL classifier confuses that tail sample with most.


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
        n_per_class=config["fusion"]["n_per_class"],
    log:
        "logs/pairing/pair_neighbours.log",
    benchmark:
        "benchmarks/pairing/pair_neighbours.tsv"
    threads: 2
    conda:
        ENV
    shell:
        "python -m ltaug pair_neighbours --latents {input.latents:q} --cams {input.cams:q} --model {input.model:q}"
        " --classes {input.classes:q} --pairs {output.pairs:q} --params {params.cfg:q}"
        " --n-per-class {params.n_per_class} --threads {threads} > {log} 2>&1"
