# Latents: every split encoded by the diffusion model's VAE into a Zarr store.


rule encode_latents:
    input:
        manifest=rules.prepare_data.output.manifest,
        model=diffusion_model(),
    output:
        store=directory(f"{OUT}/latents/{{split}}.zarr"),
    wildcard_constraints:
        split="|".join(SPLITS),
    params:
        cfg=section_json("latents"),
        diffusion=section_json("diffusion", keep=("device", "dtype")),
    log:
        "logs/latents/encode_latents_{split}.log",
    benchmark:
        "benchmarks/latents/encode_latents_{split}.tsv"
    threads: 4
    resources:
        gpu=1,
    conda:
        ENV
    shell:
        "python -m ltaug encode_latents --manifest {input.manifest:q} --model {input.model:q}"
        " --split {wildcards.split} --store {output.store:q} --params {params.cfg:q}"
        " --diffusion {params.diffusion:q} --threads {threads} > {log} 2>&1"
