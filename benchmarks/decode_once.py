"""Per-image read cost of every stage that sees the data set's pixels, before and after the image stores.

    python benchmarks/decode_once.py [--images 32] [--out benchmarks/decode_once]

Writes ``--images`` MIMIC-CXR-JPG-sized JPEGs (2544 x 3056 grayscale, quality 95; smooth random
content, so they compress like radiographs, not like noise) and measures, on one core each:

before   what a stage paid per image when it read the JPEG itself: open_image + resize to its size
         (encode_latents at 512 px with its Lanczos filter; the classifier, the judge, the real
         features and the distances at 224 px, bilinear), and how often a run paid it;
after    decode_images, once per image and size (the same read, written into the store), and what
         each stage then pays per image: a read of the store at 512 or 224 px, in batches of 32,
         in order (encode_latents) and at random rows (classifier training batches), over stores
         of 4 x ``--images`` rows (each JPEG four times);

plus the stores' bytes per image and the peak RSS of decode_images at N and 4N images (each in a
fresh process), which must stay flat. Results: results.json and results.md in ``--out``
(benchmarks/decode_once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "decode_once"
SIZES = (512, 224)  # RoentGen's VAE input, DenseNet121's
FULL = (2544, 3056)  # MIMIC-CXR-JPG's usual width x height
BATCH = 32
COPIES = 4  # each JPEG appears this many times (distinct ids) in the stores


def write_jpegs(root: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = (rng.random((FULL[1] // 16, FULL[0] // 16)) * 255).astype(np.uint8)
        path = root / f"{i:05d}.jpg"
        Image.fromarray(small).resize(FULL, Image.BILINEAR).save(path, quality=95)
        paths.append(path)
    return paths


def manifest_of(paths: list[Path], copies: int = 1):
    """A one-split manifest of ``paths`` repeated ``copies`` times (distinct ids), for decode_split."""
    import pandas as pd

    rows = [{"id": f"c{c}-{p.stem}", "path": str(p), "split": "train"} for c in range(copies) for p in paths]
    return pd.DataFrame(rows)


def before_encode(image, size: int):
    """What encode_latents did with each image before the image stores: RGB, Lanczos resize and centre crop, then
    [-1, 1] (3, S, S) float32."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    image = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def per_image(run, n: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / n


def measure(paths: list[Path], work: Path) -> dict:
    import numpy as np
    import torch

    from ltaug.data.image_store import ImagesConfig, ImageStores, decode_split, store_path
    from ltaug.common.images import load_image, open_image
    from ltaug.backbone.latents import to_vae_input

    torch.set_num_threads(1)
    n, row = len(paths), {}
    row["jpeg_mb"] = round(sum(p.stat().st_size for p in paths) / n / 1e6, 3)
    # before: each stage read the JPEG and resized it itself
    row["before_s_per_image"] = {
        "encode_latents (512 px, Lanczos)": per_image(lambda: [before_encode(open_image(p), 512) for p in paths], n),
        "classifier / judge / features / distances (224 px)": per_image(lambda: [load_image(p, 224) for p in paths], n),
        "decode only (open_image)": per_image(lambda: [open_image(p) for p in paths], n),
    }
    manifest = manifest_of(paths, COPIES)  # more rows than a batch, so that random batches are scattered
    n = len(manifest)
    root = work / "stores"
    row["decode_images_s_per_image"] = {}
    for size in SIZES:
        store = store_path(root, "train", size)
        row["decode_images_s_per_image"][f"{size} px"] = per_image(
            lambda: decode_split(manifest, "train", size, store, ImagesConfig(), threads=1), n)  # fmt: skip
        row.setdefault("store_bytes_per_image", {})[f"{size} px"] = round(
            sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / n)  # fmt: skip
    stores, rng = ImageStores(root), np.random.default_rng(0)
    ids = manifest["id"].tolist()
    row["after_s_per_image"] = {}
    for size in SIZES:
        stores.read_ids("train", ids[:1], size)  # open and index the store: once per stage

        def in_order() -> None:
            for a in range(0, n, BATCH):
                stores.read_ids("train", ids[a : a + BATCH], size)

        def at_random() -> None:
            order = rng.permutation(n)
            for a in range(0, n, BATCH):
                stores.read_ids("train", [ids[i] for i in order[a : a + BATCH]], size)

        name = "encode_latents (512 px)" if size == 512 else "classifier / judge / features / distances (224 px)"
        row["after_s_per_image"][f"{name}, in order"] = per_image(in_order, n)
        row["after_s_per_image"][f"{name}, random batches"] = per_image(at_random, n)
    batch = stores.read_ids("train", ids[:BATCH], 512)
    row["after_s_per_image"]["encode_latents: uint8 to the VAE's float32 input (3 channels, [-1, 1])"] = per_image(
        lambda: to_vae_input(batch), BATCH)  # fmt: skip
    for key in ("before_s_per_image", "decode_images_s_per_image", "after_s_per_image"):
        row[key] = {k: round(v, 5) for k, v in row[key].items()}
    return row


def memory(paths: list[Path], work: Path, copies: int) -> float:
    """Peak RSS (MiB) of decode_images over len(paths) * copies images at 512 px, in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--child", str(work), str(copies), *map(str, paths)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def child(work: Path, copies: int, paths: list[Path]) -> None:
    import torch

    from ltaug.data.image_store import ImagesConfig, decode_split, store_path

    torch.set_num_threads(1)
    manifest = manifest_of(paths, copies)
    decode_split(manifest, "train", 512, store_path(work / f"mem{copies}", "train", 512), ImagesConfig(), threads=2)
    print(json.dumps({"peak_rss_mib": round(peak_rss_mib(), 1)}))


def markdown(row: dict) -> str:
    lines = [f"{row['images']} JPEGs of {FULL[0]} x {FULL[1]} ({row['jpeg_mb']} MB each), one core, "
             f"{row['cpu']}.", "", "| read | s per image |", "|---|---:|"]  # fmt: skip
    for key, title in (("before_s_per_image", "before: the stage reads the JPEG"),
                       ("decode_images_s_per_image", "decode_images, once per image and size"),
                       ("after_s_per_image", "after: the stage reads the store")):  # fmt: skip
        lines += [f"| {title}: {k} | {v:.4f} |" for k, v in row[key].items()]
    lines += ["", "| store | bytes per image |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in row["store_bytes_per_image"].items()]
    lines += ["", f"decode_images peak RSS: {row['peak_rss_mib']['n']} MiB at {row['images']} images, "
              f"{row['peak_rss_mib']['4n']} MiB at {4 * row['images']} (ratio {row['peak_rss_ratio']})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(Path(sys.argv[2]), int(sys.argv[3]), [Path(p) for p in sys.argv[4:]])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="full-size JPEGs written and read")
    parser.add_argument("--out", default=str(OUT), help="directory of results.json and results.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_jpegs(work / "jpeg", args.images)
        row = {"images": args.images, "cpu": _cpu(), **measure(paths, work)}
        row["peak_rss_mib"] = {"n": memory(paths, work, 1), "4n": memory(paths, work, 4)}
        row["peak_rss_ratio"] = round(row["peak_rss_mib"]["4n"] / row["peak_rss_mib"]["n"], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(row, indent=1) + "\n")
    (out / "results.md").write_text(markdown(row))
    print(markdown(row))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} CPUs"
    return "unknown CPU"


if __name__ == "__main__":
    main()
