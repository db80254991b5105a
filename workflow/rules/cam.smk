# Stage 2: CAM maps of the IL classifier over z^s for every sample of a split, stored threshold-free,
# so that changing fusion.tau_h / tau_l never reruns this stage; one store per CAM method
# (results/cam/{cam}/{split}.zarr), shared by every variant that reads maps of that method.
# cam.shards = 1: one cam_maps job per split writes it.
# cam.shards = S > 1: S cam_maps jobs per split (one GPU each) write temporary shard stores,
# and gather_cams joins them into the same store.

CAM_SHARDS = config["cam"]["shards"]


if CAM_SHARDS == 1:

    rule cam_maps:
        input:
            latents=f"{OUT}/latents/{{split}}.zarr",
            model=rules.train_il.output.model,
        output:
            store=directory(f"{OUT}/cam/{{cam}}/{{split}}.zarr"),
        log:
            "logs/cam/cam_maps_{cam}_{split}.log",
        benchmark:
            "benchmarks/cam/cam_maps_{cam}_{split}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            cam=CAM_METHODS,
        priority: 10  # the method's chain is the demo's longest path: it goes first
        conda:
            ENV
        threads: 2
        resources:
            gpu=1,
        params:
            cfg=cam_json,
            diffusion=section_json("diffusion", keep=("device",)),
        shell:
            stage_command("cam_maps", omit=("shard", "shards"))

else:

    rule cam_maps:
        input:
            latents=f"{OUT}/latents/{{split}}.zarr",
            model=rules.train_il.output.model,
        output:
            store=temp(
                directory(
                    f"{OUT}/cam/shards/{{cam}}/{{split}}/{{shard}}-of-{CAM_SHARDS}.zarr"
                )
            ),
        log:
            f"logs/cam/cam_maps_{{cam}}_{{split}}_{{shard}}-of-{CAM_SHARDS}.log",
        benchmark:
            f"benchmarks/cam/cam_maps_{{cam}}_{{split}}_{{shard}}-of-{CAM_SHARDS}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            cam=CAM_METHODS,
            shard=r"[0-9]+",
        priority: 10  # the method's chain is the demo's longest path: it goes first
        conda:
            ENV
        threads: 2
        resources:
            gpu=1,
        params:
            cfg=cam_json,
            diffusion=section_json("diffusion", keep=("device",)),
            shards=CAM_SHARDS,
        shell:
            stage_command("cam_maps")

    # As gather_latents: the shards are temp(), so this rule carries everything a shard depends
    # on (latents, IL model, the same params), and whatever would remake the shards reruns it.
    rule gather_cams:
        input:
            latents=f"{OUT}/latents/{{split}}.zarr",
            model=rules.train_il.output.model,
            shards=expand(
                f"{OUT}/cam/shards/{{cam}}/{{split}}/{{shard}}-of-{CAM_SHARDS}.zarr",
                shard=range(1, CAM_SHARDS + 1),
                allow_missing=True,
            ),
        output:
            store=directory(f"{OUT}/cam/{{cam}}/{{split}}.zarr"),
        log:
            "logs/cam/gather_cams_{cam}_{split}.log",
        benchmark:
            "benchmarks/cam/gather_cams_{cam}_{split}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            cam=CAM_METHODS,
        conda:
            ENV
        params:
            cfg=cam_json,  # unused by the command: reruns it with the shards
        shell:
            stage_command("gather_cams")
