# Stage 1: iterated learning of the sparse latent space (student/teacher, decoder, classifier).


rule train_il:
    input:
        train=f"{OUT}/latents/train.zarr",
        val=f"{OUT}/latents/val.zarr",
        classes=rules.split_classes.output.classes,
        model=vae_model(),
    output:
        model=f"{OUT}/il/model.pt",
        history=f"{OUT}/il/history.csv",
    log:
        "logs/il/train_il.log",
    benchmark:
        "benchmarks/il/train_il.tsv"
    priority: 10  # the method's chain is the demo's longest path: it goes first
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        cfg=section_json("il"),
        diffusion=section_json("diffusion", keep=("device",)),
        outdir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        # gen_{{g}}.pt checkpoints are not declared outputs: a killed run (--rerun-incomplete) resumes from them
        stage_command("train_il")
