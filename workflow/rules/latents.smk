# Latents: every split encoded by the diffusion model's VAE into a Zarr store.
# latents.shards = 1: one encode_latents job per split writes results/latents/{split}.zarr.
# latents.shards = S > 1: S encode_latents jobs per split (one GPU each) write temporary
# shard stores, and gather_latents joins them into the same results/latents/{split}.zarr.

SHARDS = config["latents"]["shards"]


if SHARDS == 1:

    rule encode_latents:
        input:
            manifest=rules.prepare_data.output.manifest,
            model=vae_model(),
            images=lambda wildcards: image_stores([wildcards.split], LATENT_SIZE),
        output:
            store=directory(f"{OUT}/latents/{{split}}.zarr"),
        log:
            "logs/latents/encode_latents_{split}.log",
        benchmark:
            "benchmarks/latents/encode_latents_{split}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
        conda:
            ENV
        threads: 4
        resources:
            gpu=1,
        params:
            images=lambda wildcards, input: stores_root(input.images),
            cfg=section_json("latents", drop=("shards",)),
            diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
        shell:
            stage_command("encode_latents", omit=("shard", "shards"))

else:

    rule encode_latents:
        input:
            manifest=rules.prepare_data.output.manifest,
            model=vae_model(),
            images=lambda wildcards: image_stores([wildcards.split], LATENT_SIZE),
        output:
            store=temp(
                directory(f"{OUT}/latents/shards/{{split}}/{{shard}}-of-{SHARDS}.zarr")
            ),
        log:
            f"logs/latents/encode_latents_{{split}}_{{shard}}-of-{SHARDS}.log",
        benchmark:
            f"benchmarks/latents/encode_latents_{{split}}_{{shard}}-of-{SHARDS}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            shard=r"[0-9]+",
        conda:
            ENV
        threads: 4
        resources:
            gpu=1,
        params:
            images=lambda wildcards, input: stores_root(input.images),
            cfg=section_json("latents", drop=("shards",)),
            diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
            shards=SHARDS,
        shell:
            stage_command("encode_latents")

    # The shards are temp(): deleted once joined. Snakemake does not look behind a deleted
    # temporary file, so this rule carries everything a shard depends on (manifest, model,
    # the same params): whatever would re-encode the shards reruns it, and so their jobs.
    rule gather_latents:
        input:
            manifest=rules.prepare_data.output.manifest,
            model=vae_model(),
            shards=expand(
                f"{OUT}/latents/shards/{{split}}/{{shard}}-of-{SHARDS}.zarr",
                shard=range(1, SHARDS + 1),
                allow_missing=True,
            ),
        output:
            store=directory(f"{OUT}/latents/{{split}}.zarr"),
        log:
            "logs/latents/gather_latents_{split}.log",
        benchmark:
            "benchmarks/latents/gather_latents_{split}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
        conda:
            ENV
        params:
            cfg=section_json("latents", drop=("shards",)),
            diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
        shell:
            stage_command("gather_latents")
