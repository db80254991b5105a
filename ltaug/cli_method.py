"""The method's stages on the command line, data to synthetic images: ``python -m ltaug STAGE``.

The data (demo_dataset, prepare_data, split_classes), the diffusion model and its latents
(bootstrap_vae, bootstrap_unet, encode_latents, gather_latents), the sparse latent space (train_il),
its CAM maps (cam_maps, gather_cams), pairing, fusion and generation (pair_neighbours, fuse,
generate) and Fig. 2 (fig2_panels). Each stage's options are declared just above it.
"""

from __future__ import annotations

import argparse
import json

from ltaug.cli import (
    SPLITS,
    diffusion_argument,
    images_argument,
    runtime,
    section_with_threads,
    stage,
    training_stores_arguments,
)


def _demo_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outdir", required=True, help="directory for images/, {train,val,test}.csv, boxes.csv")


@stage("demo_dataset", "draw the long-tailed demo data set", _demo_dataset_arguments)
def _demo_dataset(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.demo import DemoConfig, make_demo

    make_demo(args.outdir, from_json(DemoConfig, args.params, "demo"), workers=args.threads)


def _prepare_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="output manifest.csv")


@stage("prepare_data", "validate the labels files and images, write the manifest", _prepare_data_arguments)
def _prepare_data(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.manifest import DataConfig, prepare_data

    frame = prepare_data(from_json(DataConfig, args.params, "data"), args.manifest, args.threads)
    counts = frame["split"].value_counts()
    print(f"{args.manifest}: {len(frame)} images (" + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS) + ")")


def _split_classes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--classes", required=True, help="output classes.json")
    p.add_argument("--labels", default="{}", help="how the labels were read (data.labels_format, uncertain, blank) as JSON")


@stage("split_classes", "split the classes into head, medium and tail", _split_classes_arguments)
def _split_classes(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.classes import LongTailConfig, write_classes

    split = write_classes(from_json(LongTailConfig, args.params, "long_tail"), args.manifest, args.classes,
                          json.loads(args.labels))  # fmt: skip
    for group in ("head", "medium", "tail"):
        names = getattr(split, group)
        print(f"{group}: " + ", ".join(f"{c} ({split.prevalence[c]:.3f})" for c in names))


def _check_class_names_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--keys", required=True, help='JSON {"config key": "class name"} of every key that names a class')
    p.add_argument("--out", required=True, help="output: the keys, checked")


@stage("check_class_names", "check that every config key naming a class names one of classes.json", _check_class_names_arguments)
def _check_class_names(args: argparse.Namespace) -> None:
    from ltaug.data.classes import check_class_names, read_classes

    check_class_names(json.loads(args.keys), read_classes(args.classes), args.out, source=args.classes)


def _bootstrap_vae_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="input manifest.csv (its training and val splits)")
    p.add_argument("--vae", required=True, help="output: the model directory's layout with the VAE's weights only")
    p.add_argument("--latents", required=True, help="output .npy: the scaled training latents the UNet trains on")
    p.add_argument("--samples", required=True, help="output directory of reconstructions.png and metrics.json")
    images_argument(p)
    diffusion_argument(p, "device")


@stage("bootstrap_vae", "train the VAE of the small demo Stable Diffusion model", _bootstrap_vae_arguments)
def _bootstrap_vae(args: argparse.Namespace) -> None:
    from ltaug.backbone.bootstrap import bootstrap_vae
    from ltaug.backbone.bootstrap_config import BootstrapConfig
    from ltaug.data.image_store import ImageStores

    cfg = section_with_threads(BootstrapConfig, args, "diffusion.bootstrap")
    bootstrap_vae(args.manifest, args.vae, args.latents, args.samples, cfg, runtime(args)[0], ImageStores(args.images))


def _bootstrap_unet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="input manifest.csv (its training split's labels)")
    p.add_argument("--vae", required=True, help="input: bootstrap_vae's directory")
    p.add_argument("--latents", required=True, help="input: bootstrap_vae's training latents (.npy)")
    p.add_argument("--vae-samples", required=True, help="input: bootstrap_vae's samples directory (its metrics.json)")
    p.add_argument("--model", required=True, help="output diffusers directory")
    p.add_argument("--samples", required=True, help="output directory of sample grids and metrics.json")
    diffusion_argument(p, "device")


@stage("bootstrap_unet", "train the UNet and text encoder of the small demo model", _bootstrap_unet_arguments)
def _bootstrap_unet(args: argparse.Namespace) -> None:
    from ltaug.backbone.bootstrap import bootstrap_unet
    from ltaug.backbone.bootstrap_config import BootstrapConfig

    cfg = section_with_threads(BootstrapConfig, args, "diffusion.bootstrap")
    bootstrap_unet(args.manifest, args.vae, args.latents, args.vae_samples, args.model, args.samples, cfg,
                   runtime(args)[0])  # fmt: skip


def _decode_images_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--split", required=True, choices=SPLITS, help="train, val or test")
    p.add_argument("--size", type=int, required=True, help="side of the stored square images, pixels")
    p.add_argument("--store", required=True, help="output .zarr store (results/images/{split}/{size}px.zarr)")
    p.add_argument("--shard", type=int, default=1, help="decode only shard SHARD (1-based) of the split's rows")
    p.add_argument("--shards", type=int, default=1, help="number of shards the split is decoded in (images.shards)")


@stage("decode_images", "read every image of one split once, resized, into a Zarr store", _decode_images_arguments,
       reads_images=True)  # fmt: skip
def _decode_images(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.manifest import read_manifest
    from ltaug.data.image_store import ImagesConfig, decode_split

    cfg = from_json(ImagesConfig, args.params, "images")
    n = decode_split(read_manifest(args.manifest), args.split, args.size, args.store, cfg, threads=args.threads,
                     source=args.manifest, shard=(args.shard, args.shards))  # fmt: skip
    print(f"{args.store}: {n} images at {args.size} px")


def _gather_arguments(p: argparse.ArgumentParser) -> None:
    """What every gather stage takes: the split, its shard stores in order, the joined store."""
    p.add_argument("--manifest", required=True, help="input manifest.csv (the split's row count)")
    p.add_argument("--split", required=True, choices=SPLITS, help="train, val or test")
    p.add_argument("--shards", nargs="+", required=True, help="the shard stores 1..S, in order")
    p.add_argument("--store", required=True, help="output .zarr store")


def _split_rows(args: argparse.Namespace) -> int:
    """The row count of --split in --manifest, which the shards must add up to."""
    from ltaug.data.manifest import read_manifest

    manifest = read_manifest(args.manifest)
    return int((manifest["split"] == args.split).sum())


def _gather_images_arguments(p: argparse.ArgumentParser) -> None:
    _gather_arguments(p)
    p.add_argument("--size", type=int, required=True, help="side of the stored square images, pixels")


@stage("gather_images", "join the shard stores of one split and size into its image store", _gather_images_arguments)
def _gather_images(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.image_store import ImagesConfig, gather_images

    cfg = from_json(ImagesConfig, args.params, "images")
    expect = {"split": args.split, "image_size": args.size, "split_rows": _split_rows(args)}
    rows = gather_images(args.shards, args.store, cfg.shard_size, expect)
    print(f"{args.store}: {rows} images from {len(args.shards)} shards")


def _encode_latents_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    p.add_argument("--split", required=True, help="train, val or test")
    p.add_argument("--store", required=True, help="output .zarr store")
    images_argument(p)
    diffusion_argument(p, "device, dtype")
    p.add_argument("--shard", type=int, default=1, help="encode only shard SHARD (1-based) of the split's rows")
    p.add_argument("--shards", type=int, default=1, help="number of shards the split is encoded in (latents.shards)")


@stage("encode_latents", "encode one split into a Zarr store of VAE latents", _encode_latents_arguments)
def _encode_latents(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.data.manifest import read_manifest
    from ltaug.data.image_store import ImageStores
    from ltaug.backbone.latents import LatentsConfig, encode_split
    from ltaug.backbone.model_dir import fingerprint, load_vae

    cfg = from_json(LatentsConfig, args.params, "latents")
    device, _, variant = runtime(args)
    model = {"path": args.model, "fingerprint": fingerprint(args.model)}
    vae = load_vae(args.model, device, variant)
    encode_split(read_manifest(args.manifest), args.split, vae, args.store, cfg, model, device,
                 stores=ImageStores(args.images), source=args.manifest, shard=(args.shard, args.shards))  # fmt: skip


def _gather_latents_arguments(p: argparse.ArgumentParser) -> None:
    _gather_arguments(p)
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory the shards must come from")


@stage("gather_latents", "join the shard stores of one split into its latent store", _gather_latents_arguments)
def _gather_latents(args: argparse.Namespace) -> None:
    from ltaug.common.config import from_json
    from ltaug.backbone.latents import LatentsConfig, gather_shards
    from ltaug.backbone.model_dir import fingerprint

    cfg = from_json(LatentsConfig, args.params, "latents")
    expect = {"model_fingerprint": fingerprint(args.model), "split_rows": _split_rows(args)}
    rows = gather_shards(args.shards, args.store, cfg.chunk_size, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


def _train_il_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training latent store (.zarr)")
    p.add_argument("--val", required=True, help="validation latent store (.zarr)")
    p.add_argument("--classes", required=True, help="classes.json (head and tail classes for validation mAP)")
    p.add_argument("--model", default="", help="the diffusion model directory the latents must come from")
    p.add_argument("--outdir", required=True, help="output directory: gen_{g}.pt, model.pt, history.csv")
    p.add_argument("--no-resume", action="store_true", help="train from scratch even if gen_{g}.pt checkpoints exist")
    diffusion_argument(p)


@stage("train_il", "iterated learning of the sparse latent space (S, D, C)", _train_il_arguments)
def _train_il(args: argparse.Namespace) -> None:
    from ltaug.data.classes import read_classes
    from ltaug.method.iterated import ILConfig
    from ltaug.method.train_il import train_iterated
    from ltaug.backbone.model_dir import fingerprint

    cfg = section_with_threads(ILConfig, args, "il")
    expect = {"model_fingerprint": fingerprint(args.model)} if args.model else None
    result = train_iterated(args.train, args.val, read_classes(args.classes), args.outdir, cfg, runtime(args)[0],
                            expect=expect, resume=not args.no_resume)  # fmt: skip
    last = result.generation
    print(f"{args.outdir}/model.pt: generation {last} of {cfg.generations}")


def _cam_maps_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latents", required=True, help="latent store of the split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")
    p.add_argument("--store", required=True, help="output CAM store (.zarr)")
    diffusion_argument(p)
    p.add_argument("--shard", type=int, default=1, help="map only shard SHARD (1-based) of the split's rows")
    p.add_argument("--shards", type=int, default=1, help="number of shards the split is mapped in (cam.shards)")


@stage("cam_maps", "CAM maps (cam.method) and probabilities of the IL classifier for one split", _cam_maps_arguments)
def _cam_maps(args: argparse.Namespace) -> None:
    import torch

    from ltaug.method.cam import CamConfig, cam_maps
    from ltaug.common.config import from_json

    torch.set_num_threads(args.threads)
    cfg = from_json(CamConfig, args.params, "cam")
    store = cam_maps(args.latents, args.model, args.store, cfg, runtime(args)[0], shard=(args.shard, args.shards))
    maps = store["maps"]
    kind = f"per-class maps of {store.attrs['map_classes']}" if cfg.class_specific else "maps"
    print(f"{args.store}: {maps.shape[0]} x {cfg.method} {kind}, {maps.shape[-2]} x {maps.shape[-1]} from "
          f"{store.attrs['target_layer']} at {store.attrs['layer_shape']}")


def _gather_cams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latents", required=True, help="latent store of the split (.zarr; its row count)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt) the shards must come from")
    p.add_argument("--shards", nargs="+", required=True, help="the shard stores 1..S, in order")
    p.add_argument("--store", required=True, help="output CAM store (.zarr)")


@stage("gather_cams", "join the CAM shard stores of one split into its CAM store", _gather_cams_arguments)
def _gather_cams(args: argparse.Namespace) -> None:
    from ltaug.method.cam import gather_cams, il_fingerprint
    from ltaug.backbone.latents import open_latents

    expect = {"il_fingerprint": il_fingerprint(args.model), "split_rows": int(open_latents(args.latents)["z"].shape[0])}
    rows = gather_cams(args.shards, args.store, expect)
    print(f"{args.store}: {rows} rows from {len(args.shards)} shards")


def _pair_neighbours_arguments(p: argparse.ArgumentParser) -> None:
    training_stores_arguments(p)
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--pairs", required=True, help="output pairs.csv")
    p.add_argument("--n-per-class", type=int, required=True, help="synthetic samples per tail class (fusion.n_per_class)")


@stage("pair_neighbours", "pair every tail sample with a head neighbour", _pair_neighbours_arguments)
def _pair_neighbours(args: argparse.Namespace) -> None:
    import torch

    from ltaug.common.config import from_json
    from ltaug.data.classes import read_classes
    from ltaug.method.pairing import PairingConfig, pair_neighbours

    torch.set_num_threads(args.threads)
    cfg = from_json(PairingConfig, args.params, "pairing")
    pairs = pair_neighbours(args.latents, args.cams, args.model, read_classes(args.classes), args.pairs, cfg,
                            args.n_per_class)  # fmt: skip
    for (tail, head), group in pairs.groupby(["tail_class", "head_class"], sort=False):
        print(f"{tail} <- {head}: {len(group)} synthetic samples of {group['tail_id'].nunique()} tail samples, "
              f"{group['head_id'].nunique()} different neighbours, mean distance {group['distance'].mean():.3f}")


def _fuse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="pairs.csv")
    training_stores_arguments(p)
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--store", required=True, help="output fused latent store (.zarr)")


@stage("fuse", "fuse tail and head sparse vectors by their CAM masks and decode them", _fuse_arguments)
def _fuse(args: argparse.Namespace) -> None:
    import torch

    from ltaug.common.config import from_json
    from ltaug.data.classes import read_classes
    from ltaug.method.fusion import FusionConfig
    from ltaug.method.fused_store import fuse_latents

    torch.set_num_threads(args.threads)
    cfg = from_json(FusionConfig, args.params, "fusion")
    fused = fuse_latents(args.pairs, args.latents, args.cams, args.model, read_classes(args.classes), args.store, cfg)
    for tail, group in fused.groupby("tail_class", sort=False):
        print(f"{tail}: {len(group)} fused samples, positions from the tail vector {group['tail_share'].mean():.3f}, "
              f"decided by the coin {group['coin_share'].mean():.3f}")  # fmt: skip


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fused", required=True, help="fused latent store (.zarr)")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    p.add_argument("--steps", type=int, required=True, help="s: the last s of generate.num_steps steps (0: decode only)")
    p.add_argument("--method", default="", help="the set's name, <variant>@<s> (default ours@<s>)")
    p.add_argument("--images", default="", help="results/images (rule decode_images): the real images of generate.composite")
    p.add_argument("--outdir", required=True, help="output set directory (results/synthetic/<variant>@{s})")
    diffusion_argument(p, "device, dtype")


@stage("generate", "fused latents to a synthetic image set, after s denoising steps", _generate_arguments)
def _generate(args: argparse.Namespace) -> None:
    import torch

    from ltaug.common.config import from_dict
    from ltaug.method.generate import GenerateConfig, generate_set
    from ltaug.data.image_store import ImageStores

    torch.set_num_threads(args.threads)
    device, dtype, variant = runtime(args)
    cfg = from_dict(GenerateConfig, {**json.loads(args.params), "steps": [args.steps]}, "generate")
    manifest = generate_set(args.fused, args.model, args.outdir, args.steps, cfg, device, dtype, variant,
                            args.method or None, ImageStores(args.images) if args.images else None)  # fmt: skip
    print(f"{args.outdir}: {len(manifest)} images")


def _fig2_panels_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.csv (paths of the real images)")
    p.add_argument("--classes", required=True, help="classes.json")
    training_stores_arguments(p)
    p.add_argument("--fused", required=True, help="fused latent store (.zarr)")
    p.add_argument("--sets", nargs="+", required=True, help="the variant's synthetic set directories <variant>@{s}")
    p.add_argument("--outdir", required=True, help="output directory, one PNG per tail class")


@stage(
    "fig2_panels", "Fig. 2: how the first fused sample of each tail class was made", _fig2_panels_arguments, reads_images=True
)
def _fig2_panels(args: argparse.Namespace) -> None:
    import torch

    from ltaug.data.classes import read_classes
    from ltaug.evaluation.fig2 import fig2_panels

    torch.set_num_threads(args.threads)
    paths = fig2_panels(args.manifest, read_classes(args.classes), args.latents, args.cams, args.fused, args.model,
                        args.sets, args.outdir)  # fmt: skip
    print("\n".join(map(str, paths)))
