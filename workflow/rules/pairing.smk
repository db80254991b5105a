# Stage 3a: every synthetic sample of a tail class gets a tail sample and a fresh head neighbour
# from the head class the IL classifier confuses that tail sample with most; one pairs.csv per
# variant (its pairing settings, and the probabilities of its CAM store) and draw of its sets
# (pairing.seed advanced per draw: ltaug.common.seeds.draw_seed).


rule pair_neighbours:
    input:
        latents=f"{OUT}/latents/train.zarr",
        cams=lambda wildcards: cam_store(wildcards.variant),
        model=rules.train_il.output.model,
        classes=rules.split_classes.output.classes,
    output:
        pairs=f"{OUT}/pairs/{{variant}}/draw{{draw}}/pairs.csv",
    log:
        "logs/pairing/pair_neighbours_{variant}_draw{draw}.log",
    benchmark:
        "benchmarks/pairing/pair_neighbours_{variant}_draw{draw}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
        draw=r"\d+",
    priority: 10  # the method's chain is the demo's longest path: it goes first
    conda:
        ENV
    threads: 2
    params:
        cfg=lambda wildcards: variant_json(
            wildcards.variant, "pairing", draw=wildcards.draw
        ),
        n_per_class=config["fusion"]["n_per_class"],
    shell:
        stage_command("pair_neighbours")
