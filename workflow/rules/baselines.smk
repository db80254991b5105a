# Baselines of Table 1, each a synthetic set in the layout of results/synthetic/<variant>@{s}/
# (ltaug.data.synthetic): SMOTE on the VAE latents, class-balanced resampling, text-to-image.


rule baseline_smote:
    input:
        latents=f"{OUT}/latents/train.zarr",
        classes=rules.split_classes.output.classes,
        model=vae_model(),
    output:
        synthetic=directory(f"{OUT}/synthetic/smote"),
    log:
        "logs/baselines/baseline_smote.log",
    benchmark:
        "benchmarks/baselines/baseline_smote.tsv"
    conda:
        ENV
    threads: 2
    params:
        cfg=section_json("baselines"),
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
        synthetic=directory(f"{OUT}/synthetic/resample"),
    log:
        "logs/baselines/baseline_resample.log",
    benchmark:
        "benchmarks/baselines/baseline_resample.tsv"
    conda:
        ENV
    params:
        images=lambda wildcards, input: stores_root(input.images),
        cfg=section_json("baselines"),
        n_per_class=config["fusion"]["n_per_class"],
        image_size=config["latents"]["image_size"],
    shell:
        stage_command("baseline_resample")


rule baseline_roentgen:
    input:
        classes=rules.split_classes.output.classes,
        model=diffusion_model(),
    output:
        synthetic=directory(f"{OUT}/synthetic/roentgen@{{steps}}"),
    log:
        "logs/baselines/baseline_roentgen@{steps}.log",
    benchmark:
        "benchmarks/baselines/baseline_roentgen@{steps}.tsv"
    wildcard_constraints:
        steps=r"\d+",
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        cfg=section_json("baselines"),
        n_per_class=config["fusion"]["n_per_class"],
        guidance=config["generate"]["guidance_scale"],
        template=lambda wildcards: config["generate"]["prompt_template"],  # a function: "{classes}" is no wildcard
        diffusion=section_json("diffusion", keep=("device", "dtype", "variant")),
    shell:
        stage_command("baseline_text_to_image")
