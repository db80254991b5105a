"""The method's stages on the command line, data to synthetic images: ``python -m ltaug STAGE``.

The data (demo_dataset, prepare_data, split_classes, check_class_names), the image stores
(decode_images, gather_images), the diffusion model and its latents (bootstrap_vae, bootstrap_unet,
encode_latents, gather_latents), the sparse latent space (train_il), its CAM maps (cam_maps,
gather_cams), pairing, fusion and generation (pair_neighbours, fuse, generate) and Fig. 2
(fig2_panels). Each stage is declared once (:mod:`ltaug.cli`): its options, where its rule takes
them from, its config section; its run function gets them built (:class:`ltaug.cli.Job`).
"""

from __future__ import annotations

import argparse

from ltaug.cli import (
    SPLITS,
    Input,
    Job,
    Option,
    Output,
    Param,
    Wildcard,
    gather_options,
    images_option,
    shard_options,
    stage,
    stages,
    training_store_options,
)


@stage("demo_dataset", "draw the long-tailed demo data set",
       Param("outdir", "directory for images/, {train,val,test}.csv, boxes.csv"),
       section=("demo", "ltaug.data.demo:DemoConfig"), threads=True)  # fmt: skip
def _demo_dataset(job: Job) -> None:
    from ltaug.data.demo import make_demo

    make_demo(job.args.outdir, job.cfg, workers=job.args.threads)


@stage("prepare_data", "validate the labels files and images, write the manifest",
       Output("manifest", "output manifest.csv"),
       Param("oracle", "the eval.oracle section as JSON ('{}': nothing held out)", default="{}"),
       Param("long_tail", "the long_tail section as JSON (which classes are tail, for the held-out share)",
             default="{}"),
       section=("data", "ltaug.data.manifest:DataConfig"), threads=True)  # fmt: skip
def _prepare_data(job: Job) -> None:
    from ltaug.common.config import from_json, section_values
    from ltaug.data.classes import LongTailConfig
    from ltaug.data.holdout import hold_out
    from ltaug.data.manifest import prepare_data

    args = job.args
    oracle = section_values(args.oracle, "eval.oracle")
    held = None
    if oracle:
        long_tail = from_json(LongTailConfig, args.long_tail, "long_tail")
        held = lambda frame: hold_out(frame, long_tail, oracle["holdout"], oracle["seed"])  # noqa: E731
    frame = prepare_data(job.cfg, args.manifest, args.threads, held)
    counts = frame["split"].value_counts()
    print(f"{args.manifest}: {len(frame)} images (" + ", ".join(f"{s} {counts.get(s, 0)}" for s in (*SPLITS, "holdout")) + ")")


@stage("split_classes", "split the classes into head, medium and tail",
       Input("manifest", "input manifest.csv"),
       Output("classes", "output classes.json"),
       Param("labels", "how the labels were read (data.labels_format, uncertain, blank) as JSON", default="{}"),
       section=("long_tail", "ltaug.data.classes:LongTailConfig"))  # fmt: skip
def _split_classes(job: Job) -> None:
    import json

    from ltaug.data.classes import write_classes

    split = write_classes(job.cfg, job.args.manifest, job.args.classes, json.loads(job.args.labels))
    for group in ("head", "medium", "tail"):
        names = getattr(split, group)
        print(f"{group}: " + ", ".join(f"{c} ({split.prevalence[c]:.3f})" for c in names))


@stage("check_class_names", "check that every config key naming a class names one of classes.json",
       Input("classes", "classes.json"),
       Option("keys", 'JSON {"config key": "class name"} of every key that names a class', "params.names"),
       Option("out", "output: the keys, checked", "output.checked"))  # fmt: skip
def _check_class_names(job: Job) -> None:
    import json

    from ltaug.data.classes import check_class_names, read_classes

    args = job.args
    check_class_names(json.loads(args.keys), read_classes(args.classes), args.out, source=args.classes)


BOOTSTRAP = ("diffusion.bootstrap", "ltaug.backbone.bootstrap_config:BootstrapConfig")


@stage("bootstrap_vae", "train the VAE of the small demo Stable Diffusion model",
       Input("manifest", "input manifest.csv (its training and val splits)"),
       Output("vae", "output: the model directory's layout with the VAE's weights only"),
       Output("latents", "output .npy: the scaled training latents the UNet trains on"),
       Output("samples", "output directory of reconstructions.png and metrics.json"),
       images_option(),
       section=BOOTSTRAP, torch=True, runtime=True)  # fmt: skip
def _bootstrap_vae(job: Job) -> None:
    from ltaug.backbone.bootstrap import bootstrap_vae
    from ltaug.data.image_store import ImageStores

    args = job.args
    bootstrap_vae(args.manifest, args.vae, args.latents, args.samples, job.cfg, job.runtime.device, ImageStores(args.images))


@stage("bootstrap_unet", "train the UNet and text encoder of the small demo model",
       Input("manifest", "input manifest.csv (its training split's labels)"),
       Input("vae", "input: bootstrap_vae's directory"),
       Input("latents", "input: bootstrap_vae's training latents (.npy)"),
       Input("vae_samples", "input: bootstrap_vae's samples directory (its metrics.json)"),
       Output("model", "output diffusers directory"),
       Output("samples", "output directory of sample grids and metrics.json"),
       section=BOOTSTRAP, torch=True, runtime=True)  # fmt: skip
def _bootstrap_unet(job: Job) -> None:
    from ltaug.backbone.bootstrap import bootstrap_unet

    args = job.args
    bootstrap_unet(args.manifest, args.vae, args.latents, args.vae_samples, args.model, args.samples, job.cfg,
                   job.runtime.device)  # fmt: skip


IMAGES = ("images", "ltaug.data.image_store:ImagesConfig")
SIZE = Wildcard("size", "side of the stored square images, pixels", type=int)


@stage("decode_images", "read every image of one split once, resized, into a Zarr store",
       Input("manifest", "input manifest.csv"),
       Wildcard("split", "train, val or test", choices=SPLITS),
       SIZE,
       Output("store", "output .zarr store (results/images/{split}/{size}px.zarr)"),
       *shard_options("decode", "decoded", "images.shards"),
       section=IMAGES, threads=True, reads_images=True)  # fmt: skip
def _decode_images(job: Job) -> None:
    from ltaug.data.image_store import decode_split
    from ltaug.data.manifest import read_manifest

    args = job.args
    n = decode_split(read_manifest(args.manifest), args.split, args.size, args.store, job.cfg, threads=args.threads,
                     source=args.manifest, shard=(args.shard, args.shards))  # fmt: skip
    print(f"{args.store}: {n} images at {args.size} px")


def _split_rows(args: argparse.Namespace) -> int:
    """The row count of --split in --manifest, which the shards must add up to."""
    from ltaug.data.manifest import read_manifest

    manifest = read_manifest(args.manifest)
    return int((manifest["split"] == args.split).sum())


@stage("gather_images", "join the shard stores of one split and size into its image store",
       Input("manifest", "input manifest.csv (the split's row count)"),
       *gather_options(),
       SIZE,
       section=IMAGES)  # fmt: skip
def _gather_images(job: Job) -> None:
    from ltaug.data.image_store import gather_images

    args = job.args
    expect = {"split": args.split, "image_size": args.size, "split_rows": _split_rows(args)}
    rows = gather_images(args.shards, args.store, job.cfg.shard_size, expect)
    print(f"{args.store}: {rows} images from {len(args.shards)} shards")


LATENTS = ("latents", "ltaug.backbone.latents:LatentsConfig")


@stage("encode_latents", "encode one split into a Zarr store of VAE latents",
       Input("manifest", "input manifest.csv"),
       Input("model", "diffusers Stable Diffusion directory"),
       Wildcard("split", "train, val or test", choices=SPLITS),
       Output("store", "output .zarr store"),
       images_option(),
       *shard_options("encode", "encoded", "latents.shards"),
       section=LATENTS, threads=True, runtime=True)  # fmt: skip
def _encode_latents(job: Job) -> None:
    from ltaug.backbone.latents import encode_split
    from ltaug.backbone.model_dir import fingerprint, load_vae
    from ltaug.data.image_store import ImageStores
    from ltaug.data.manifest import read_manifest

    args, (device, _, variant) = job.args, job.runtime
    model = {"path": args.model, "fingerprint": fingerprint(args.model)}
    vae = load_vae(args.model, device, variant)
    encode_split(read_manifest(args.manifest), args.split, vae, args.store, job.cfg, model, device,
                 stores=ImageStores(args.images), source=args.manifest, shard=(args.shard, args.shards))  # fmt: skip


@stage("gather_latents", "join the shard stores of one split into its latent store",
       Input("manifest", "input manifest.csv (the split's row count)"),
       *gather_options(),
       Input("model", "diffusers Stable Diffusion directory the shards must come from"),
       section=LATENTS)  # fmt: skip
def _gather_latents(job: Job) -> None:
    from ltaug.backbone.latents import gather_shards
    from ltaug.backbone.model_dir import fingerprint

    args = job.args
    expect = {"model_fingerprint": fingerprint(args.model), "split_rows": _split_rows(args)}
    rows = gather_shards(args.shards, args.store, job.cfg.chunk_size, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


@stage("train_il", "iterated learning of the sparse latent space (S, D, C)",
       Input("train", "training latent store (.zarr)"),
       Input("val", "validation latent store (.zarr)"),
       Input("classes", "classes.json (head and tail classes for validation mAP)"),
       Input("model", "the diffusion model directory the latents must come from", default=""),
       Param("outdir", "output directory: gen_{g}.pt, model.pt, history.csv"),
       Option("no_resume", "train from scratch even if gen_{g}.pt checkpoints exist", None, flag=True),
       section=("il", "ltaug.method.iterated:ILConfig"), torch=True, runtime=True)  # fmt: skip
def _train_il(job: Job) -> None:
    from ltaug.backbone.model_dir import fingerprint
    from ltaug.data.classes import read_classes
    from ltaug.method.train_il import train_iterated

    args, cfg = job.args, job.cfg
    expect = {"model_fingerprint": fingerprint(args.model)} if args.model else None
    result = train_iterated(args.train, args.val, read_classes(args.classes), args.outdir, cfg, job.runtime.device,
                            expect=expect, resume=not args.no_resume)  # fmt: skip
    print(f"{args.outdir}/model.pt: generation {result.generation} of {cfg.generations}")


@stage("cam_maps", "CAM maps (cam.method) and probabilities of the IL classifier for one split",
       Input("latents", "latent store of the split (.zarr)"),
       Input("model", "IL model (results/il/model.pt)"),
       Output("store", "output CAM store (.zarr)"),
       *shard_options("map", "mapped", "cam.shards"),
       section=("cam", "ltaug.method.cam:CamConfig"), torch=True, runtime=True)  # fmt: skip
def _cam_maps(job: Job) -> None:
    from ltaug.method.cam import cam_maps

    args, cfg = job.args, job.cfg
    store = cam_maps(args.latents, args.model, args.store, cfg, job.runtime.device, shard=(args.shard, args.shards))
    maps = store["maps"]
    kind = f"per-class maps of {store.attrs['map_classes']}" if cfg.class_specific else "maps"
    print(f"{args.store}: {maps.shape[0]} x {cfg.method} {kind}, {maps.shape[-2]} x {maps.shape[-1]} from "
          f"{store.attrs['target_layer']} at {store.attrs['layer_shape']}")


@stage("gather_cams", "join the CAM shard stores of one split into its CAM store",
       Input("latents", "latent store of the split (.zarr; its row count)"),
       Input("model", "IL model (results/il/model.pt) the shards must come from"),
       Input("shards", "the shard stores 1..S, in order", many=True),
       Output("store", "output CAM store (.zarr)"))  # fmt: skip
def _gather_cams(job: Job) -> None:
    from ltaug.backbone.latents import open_latents
    from ltaug.method.cam import gather_cams, il_fingerprint

    args = job.args
    expect = {"il_fingerprint": il_fingerprint(args.model), "split_rows": int(open_latents(args.latents)["z"].shape[0])}
    rows = gather_cams(args.shards, args.store, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


@stage("pair_neighbours", "pair every tail sample with a head neighbour",
       *training_store_options(),
       Input("classes", "classes.json"),
       Output("pairs", "output pairs.csv"),
       Param("n_per_class", "synthetic samples per tail class (fusion.n_per_class)", type=int),
       section=("pairing", "ltaug.method.pairing:PairingConfig"), torch=True)  # fmt: skip
def _pair_neighbours(job: Job) -> None:
    from ltaug.data.classes import read_classes
    from ltaug.method.pairing import pair_neighbours

    args = job.args
    pairs = pair_neighbours(args.latents, args.cams, args.model, read_classes(args.classes), args.pairs, job.cfg,
                            args.n_per_class)  # fmt: skip
    for (tail, head), group in pairs.groupby(["tail_class", "head_class"], sort=False):
        print(f"{tail} <- {head}: {len(group)} synthetic samples of {group['tail_id'].nunique()} tail samples, "
              f"{group['head_id'].nunique()} different neighbours, mean distance {group['distance'].mean():.3f}")


@stage("fuse", "fuse tail and head sparse vectors by their CAM masks and decode them",
       Input("pairs", "pairs.csv"),
       *training_store_options(),
       Input("classes", "classes.json"),
       Output("store", "output fused latent store (.zarr)"),
       section=("fusion", "ltaug.method.fusion:FusionConfig"), torch=True)  # fmt: skip
def _fuse(job: Job) -> None:
    from ltaug.data.classes import read_classes
    from ltaug.method.fused_store import fuse_latents

    args = job.args
    fused = fuse_latents(args.pairs, args.latents, args.cams, args.model, read_classes(args.classes), args.store, job.cfg)
    for tail, group in fused.groupby("tail_class", sort=False):
        print(f"{tail}: {len(group)} fused samples, positions from the tail vector {group['tail_share'].mean():.3f}, "
              f"decided by the coin {group['coin_share'].mean():.3f}")  # fmt: skip


@stage("generate", "fused latents to a synthetic image set, after s denoising steps",
       Input("fused", "fused latent store (.zarr)"),
       Input("model", "diffusers Stable Diffusion directory"),
       Wildcard("steps", "s: the last s of generate.num_steps steps (0: decode only)", type=int),
       Option("method", "the set's name, <variant>@<s> (default ours@<s>)", "{wildcards.variant}@{wildcards.steps}",
              default=""),
       Param("images", "results/images (rule decode_images): the real images of generate.composite", default=""),
       Option("outdir", "output set directory (results/synthetic/<variant>@{s})", "output.synthetic"),
       section=("generate", "ltaug.method.generate:GenerateConfig"), torch=True, runtime=True,
       section_values=lambda args: {"steps": [args.steps]})  # fmt: skip
def _generate(job: Job) -> None:
    from ltaug.data.image_store import ImageStores
    from ltaug.method.generate import generate_set

    args, (device, dtype, variant) = job.args, job.runtime
    manifest = generate_set(args.fused, args.model, args.outdir, args.steps, job.cfg, device, dtype, variant,
                            args.method or None, ImageStores(args.images) if args.images else None)  # fmt: skip
    print(f"{args.outdir}: {len(manifest)} images")


@stage("fig2_panels", "Fig. 2: how the first fused sample of each tail class was made",
       Input("manifest", "manifest.csv (paths of the real images)"),
       Input("classes", "classes.json"),
       *training_store_options(),
       Input("fused", "fused latent store (.zarr)"),
       Input("sets", "the variant's synthetic set directories <variant>@{s}", many=True),
       Option("outdir", "output directory, one PNG per tail class", "output.panels"),
       torch=True, reads_images=True)  # fmt: skip
def _fig2_panels(job: Job) -> None:
    from ltaug.data.classes import read_classes
    from ltaug.evaluation.fig2 import fig2_panels

    args = job.args
    paths = fig2_panels(args.manifest, read_classes(args.classes), args.latents, args.cams, args.fused, args.model,
                        args.sets, args.outdir)  # fmt: skip
    print("\n".join(map(str, paths)))


# the stages of this module, in the order `python -m ltaug --help` lists them
STAGES = stages(
    _demo_dataset, _prepare_data, _split_classes, _check_class_names, _bootstrap_vae, _bootstrap_unet,
    _decode_images, _gather_images, _encode_latents, _gather_latents, _train_il, _cam_maps, _gather_cams,
    _pair_neighbours, _fuse, _generate, _fig2_panels
)
