# Diffusion backbone: a local Stable Diffusion directory (diffusion.pretrained), or,
# when none is configured, a small model of the same format trained on the training images
# in two stages: the VAE, then the UNet and text encoder on its latents. The stages that need
# only the VAE (encoding, iterated learning, CAMs, fusion, ours@0, SMOTE) read bootstrap_vae's
# directory, which has the finished model's fingerprint, so they run while the UNet trains.


if not config["diffusion"]["pretrained"]:

    rule bootstrap_vae:
        input:
            manifest=rules.prepare_data.output.manifest,
            images=image_stores(["train", "val"], LATENT_SIZE),
        output:
            vae=directory(f"{OUT}/diffusion/vae"),
            latents=f"{OUT}/diffusion/train_latents.npy",
            samples=directory(f"{OUT}/diffusion/vae_samples"),
        log:
            "logs/diffusion/bootstrap_vae.log",
        benchmark:
            "benchmarks/diffusion/bootstrap_vae.tsv"
        conda:
            ENV
        threads: 2
        resources:
            gpu=1,
        params:
            images=lambda wildcards, input: stores_root(input.images),
            cfg=bootstrap_params(stage="vae"),
            diffusion=section_json("diffusion", keep=("device",)),
        shell:
            stage_command("bootstrap_vae")

    rule bootstrap_unet:
        input:
            manifest=rules.prepare_data.output.manifest,
            vae=rules.bootstrap_vae.output.vae,
            latents=rules.bootstrap_vae.output.latents,
            vae_samples=rules.bootstrap_vae.output.samples,
        output:
            model=directory(f"{OUT}/diffusion/model"),
            samples=directory(f"{OUT}/diffusion/samples"),
        log:
            "logs/diffusion/bootstrap_unet.log",
        benchmark:
            "benchmarks/diffusion/bootstrap_unet.tsv"
        conda:
            ENV
        threads: 2
        resources:
            gpu=1,
        params:
            cfg=bootstrap_params(stage="unet"),
            diffusion=section_json("diffusion", keep=("device",)),
        shell:
            stage_command("bootstrap_unet")
