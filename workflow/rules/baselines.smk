# Baselines of Table 1, each a synthetic set in the layout of results/synthetic/<variant>@{s}/draw{d}/
# (ltaug.data.synthetic), one per draw (baselines.seed advanced per draw): SMOTE on the VAE latents,
# class-balanced resampling, text-to-image, and the oracle's fresh real tail images.


rule baseline_smote:
    input:
        latents=f"{OUT}/latents/train.zarr",
        classes=rules.split_classes.output.classes,
        model=vae_model(),
    output:
        synthetic=directory(f"{OUT}/synthetic/smote/draw{{draw}}"),
    log:
        "logs/baselines/baseline_smote_draw{draw}.log",
    benchmark:
        "benchmarks/baselines/baseline_smote_draw{draw}.tsv"
    wildcard_constraints:
        draw=r"\d+",
    conda:
        ENV
    threads: 2
    params:
        cfg=lambda wildcards: draw_json("baselines", wildcards.draw),
        n_per_class=config["fusion"]["n_per_class"],
        diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
    shell:
        stage_command("baseline_smote")


rule baseline_resample:
    input:
        manifest=rules.prepare_data.output.manifest,
        classes=rules.split_classes.output.classes,
        images=image_stores(["train"], LATENT_SIZE),
    output:
        synthetic=directory(f"{OUT}/synthetic/resample/draw{{draw}}"),
    log:
        "logs/baselines/baseline_resample_draw{draw}.log",
    benchmark:
        "benchmarks/baselines/baseline_resample_draw{draw}.tsv"
    wildcard_constraints:
        draw=r"\d+",
    conda:
        ENV
    params:
        images=lambda wildcards, input: stores_root(input.images),
        cfg=lambda wildcards: draw_json("baselines", wildcards.draw),
        n_per_class=config["fusion"]["n_per_class"],
        image_size=config["latents"]["image_size"],
    shell:
        stage_command("baseline_resample")


rule baseline_roentgen:
    input:
        classes=rules.split_classes.output.classes,
        model=diffusion_model(),
    output:
        synthetic=directory(f"{OUT}/synthetic/roentgen@{{steps}}/draw{{draw}}"),
    log:
        "logs/baselines/baseline_roentgen@{steps}_draw{draw}.log",
    benchmark:
        "benchmarks/baselines/baseline_roentgen@{steps}_draw{draw}.tsv"
    wildcard_constraints:
        steps=r"\d+",
        draw=r"\d+",
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        cfg=lambda wildcards: draw_json("baselines", wildcards.draw),
        n_per_class=config["fusion"]["n_per_class"],
        guidance=config["generate"]["guidance_scale"],
        template=lambda wildcards: config["generate"]["prompt_template"],  # a function: "{classes}" is no wildcard
        diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
    shell:
        stage_command("baseline_text_to_image")


# The oracle: fresh real images of every tail class, added as a generator's samples would be; the most
# any generator could add. The demo draws them from streams of their own; real data holds out a
# share of each tail class's training images (eval.oracle.holdout, split holdout of the manifest).
rule baseline_oracle:
    input:
        manifest=rules.prepare_data.output.manifest,
        classes=rules.split_classes.output.classes,
        demo=demo_outputs(),
    output:
        synthetic=directory(f"{OUT}/synthetic/oracle/draw{{draw}}"),
    log:
        "logs/baselines/baseline_oracle_draw{draw}.log",
    benchmark:
        "benchmarks/baselines/baseline_oracle_draw{draw}.tsv"
    wildcard_constraints:
        draw=r"\d+",
    conda:
        ENV
    params:
        n_per_class=config["fusion"]["n_per_class"],
        image_size=config["latents"]["image_size"],
        draw=lambda wildcards: int(wildcards.draw),
        demo=(
            section_json("demo", drop=("enabled", "outdir"))
            if config["demo"]["enabled"]
            else ""
        ),
        oracle=section_json("eval.oracle"),
        window=WINDOW,
    shell:
        stage_command("baseline_oracle")
