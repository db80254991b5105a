# Stage 2: EigenCAM maps of the IL classifier over z^s for every sample of a split, stored
# threshold-free, so that changing fusion.tau_h / tau_l never reruns this stage.


rule cam_maps:
    input:
        latents=f"{OUT}/latents/{{split}}.zarr",
        model=rules.train_il.output.model,
    output:
        store=directory(f"{OUT}/cam/{{split}}.zarr"),
    wildcard_constraints:
        split="|".join(SPLITS),
    params:
        cfg=section_json("cam", drop=("splits",)),
        diffusion=section_json("diffusion", keep=("device",)),
    log:
        "logs/cam/cam_maps_{split}.log",
    benchmark:
        "benchmarks/cam/cam_maps_{split}.tsv"
    threads: 2
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m ltaug cam_maps --latents {input.latents:q} --model {input.model:q} --store {output.store:q}"
        " --params {params.cfg:q} --diffusion {params.diffusion:q} --threads {threads} > {log} 2>&1"
