# Every image of the data set read once per size a stage uses (IMAGE_SIZES: latents.image_size,
# eval.classifier.image_size and, on the demo, demo.image_size), into results/images/{split}/{size}px.zarr.
# Bit depth and data.window are applied here, once; every later stage reads these stores.
# images.shards = S > 1: S decode_images jobs per split and size (CPU) write temporary shard
# stores, and gather_images joins them into the same store one job writes.

IMAGE_SHARDS = config["images"]["shards"]


if IMAGE_SHARDS == 1:

    rule decode_images:
        input:
            manifest=rules.prepare_data.output.manifest,
        output:
            store=directory(f"{IMAGES}/{{split}}/{{size}}px.zarr"),
        log:
            "logs/images/decode_images_{split}_{size}px.log",
        benchmark:
            "benchmarks/images/decode_images_{split}_{size}px.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            size="|".join(map(str, IMAGE_SIZES)),
        conda:
            ENV
        threads: 4
        params:
            window=WINDOW,
            cfg=section_json("images", drop=("shards",)),
        shell:
            stage_command("decode_images", omit=("shard", "shards"))

else:

    rule decode_images:
        input:
            manifest=rules.prepare_data.output.manifest,
        output:
            store=temp(
                directory(
                    f"{IMAGES}/shards/{{split}}/{{size}}px/{{shard}}-of-{IMAGE_SHARDS}.zarr"
                )
            ),
        log:
            f"logs/images/decode_images_{{split}}_{{size}}px_{{shard}}-of-{IMAGE_SHARDS}.log",
        benchmark:
            f"benchmarks/images/decode_images_{{split}}_{{size}}px_{{shard}}-of-{IMAGE_SHARDS}.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            size="|".join(map(str, IMAGE_SIZES)),
            shard=r"[0-9]+",
        conda:
            ENV
        threads: 4
        params:
            window=WINDOW,
            cfg=section_json("images", drop=("shards",)),
            shards=IMAGE_SHARDS,
        shell:
            stage_command("decode_images")

    # The shards are temp(): this rule carries what they depend on (manifest, params), as gather_latents does.
    rule gather_images:
        input:
            manifest=rules.prepare_data.output.manifest,
            shards=expand(
                f"{IMAGES}/shards/{{split}}/{{size}}px/{{shard}}-of-{IMAGE_SHARDS}.zarr",
                shard=range(1, IMAGE_SHARDS + 1),
                allow_missing=True,
            ),
        output:
            store=directory(f"{IMAGES}/{{split}}/{{size}}px.zarr"),
        log:
            "logs/images/gather_images_{split}_{size}px.log",
        benchmark:
            "benchmarks/images/gather_images_{split}_{size}px.tsv"
        wildcard_constraints:
            split="|".join(SPLITS),
            size="|".join(map(str, IMAGE_SIZES)),
        conda:
            ENV
        params:
            window=WINDOW,
            cfg=section_json("images", drop=("shards",)),
        shell:
            stage_command("gather_images")
