# Fused latents to images: one synthetic set <variant>@<s> per value s of the variant's
# generate.steps (s = 0: the VAE decodes z_F; s > 0: the last s of generate.num_steps UNet steps
# first), one per draw of the sets (generate.seed advanced per draw), and the Fig. 2 panels of each
# variant (draw 0). A set's params leave out generate.steps, so adding a value runs only the new set.


rule generate:
    input:
        fused=rules.fuse.output.store,
        # generate.composite: the real training images the decoded ones are put together with
        images=lambda wildcards: (
            image_stores(["train"], LATENT_SIZE)
            if composites(wildcards.variant)
            else []
        ),
        # s = 0: the VAE only
        model=lambda wildcards: (
            vae_model() if wildcards.steps == "0" else diffusion_model()
        ),
    output:
        synthetic=directory(f"{OUT}/synthetic/{{variant}}@{{steps}}/draw{{draw}}"),
    log:
        "logs/generate/generate_{variant}@{steps}_draw{draw}.log",
    benchmark:
        "benchmarks/generate/generate_{variant}@{steps}_draw{draw}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
        steps=r"\d+",
        draw=r"\d+",
    priority: 10  # the method's chain is the demo's longest path: it goes first
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        # s = 0 uses no UNet: only the batch size and the composite reach it
        cfg=lambda wildcards: variant_json(
            wildcards.variant,
            "generate",
            keep=GENERATE_DECODE_KEYS if wildcards.steps == "0" else None,
            drop=("steps",),
            draw=None if wildcards.steps == "0" else wildcards.draw,
        ),
        images=lambda wildcards, input: stores_root(input.images),
        diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
    shell:
        stage_command("generate")


rule fig2_panels:
    input:
        manifest=rules.prepare_data.output.manifest,
        classes=rules.split_classes.output.classes,
        latents=f"{OUT}/latents/train.zarr",
        cams=lambda wildcards: cam_store(wildcards.variant),
        fused=f"{OUT}/fused/{{variant}}/draw0/latents.zarr",
        model=rules.train_il.output.model,
        sets=lambda wildcards: variant_sets(wildcards.variant),
    output:
        panels=report(
            directory(f"{OUT}/figures/fig2/{{variant}}"),
            patterns=["{name}.png"],
            caption="../report/fig2.rst",
            category="Fig. 2",
            subcategory="{variant}",
        ),
    log:
        "logs/figures/fig2_panels_{variant}.log",
    benchmark:
        "benchmarks/figures/fig2_panels_{variant}.tsv"
    wildcard_constraints:
        variant=VARIANT_PATTERN,
    conda:
        ENV
    params:
        window=WINDOW,
    shell:
        stage_command("fig2_panels")
