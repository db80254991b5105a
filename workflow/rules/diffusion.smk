# Diffusion backbone: a local Stable Diffusion directory (diffusion.pretrained), or,
# when none is configured, a small model of the same format trained on the training images.


if not config["diffusion"]["pretrained"]:

    rule bootstrap_diffusion:
        input:
            manifest=rules.prepare_data.output.manifest,
        output:
            model=directory(f"{OUT}/diffusion/model"),
            samples=directory(f"{OUT}/diffusion/samples"),
        params:
            window=WINDOW,
            cfg=bootstrap_params(),
            diffusion=section_json("diffusion", keep=("device", "dtype")),
        log:
            "logs/diffusion/bootstrap_diffusion.log",
        benchmark:
            "benchmarks/diffusion/bootstrap_diffusion.tsv"
        threads: 2
        resources:
            gpu=1,
        conda:
            ENV
        shell:
            "python -m ltaug bootstrap_diffusion --manifest {input.manifest:q} --model {output.model:q}"
            " --samples {output.samples:q} --params {params.cfg:q} --diffusion {params.diffusion:q}"
            " --threads {threads} --window {params.window:q} > {log} 2>&1"
