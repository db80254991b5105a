"""ltaug.evaluation.funnel: box measures on hand-made maps, and the funnel of a tiny pipeline with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from helpers.data import synthetic_latents, write_latent_store
from PIL import Image
from helpers.stage_models import CLASSES, SPLIT, cam_store_for, save_tiny_il, save_tiny_sd

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.model_dir import load_vae
from ltaug.data.synthetic import read_synthetic_set, write_synthetic_set
from ltaug.evaluation.funnel import COVER, HIT, PEAK, box_share, fidelity_funnel, markdown, peak_in_box


def test_peak_in_box_reads_the_latent_cell_of_the_maximum():
    cam = np.zeros((4, 4))
    cam[1, 2] = 1.0  # latent cell (row 1, col 2) = pixels x 16..23, y 8..15 at 8 px per cell
    assert peak_in_box(cam, (16, 8, 24, 16), 8)
    assert peak_in_box(cam, (23, 15, 40, 40), 8)  # overlaps the cell by one pixel
    assert not peak_in_box(cam, (24, 8, 32, 16), 8)  # the next cell to the right
    assert not peak_in_box(cam, (0, 0, 16, 8), 8)


def test_box_share_counts_the_pixels_of_the_box_in_the_mask():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True  # pixels 0..7 x 0..7
    assert box_share(mask, (0, 0, 8, 8), 8) == 1.0
    assert box_share(mask, (4, 0, 12, 8), 8) == 0.5  # half of the box's 8 columns lie in cell (0, 0)
    assert box_share(mask, (8, 8, 16, 16), 8) == 0.0
    assert box_share(mask, (0, 0, 16, 16), 8) == 0.25


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SD directory, latents, an IL model and a hand-made CAM store of 64 x 64-pixel images."""
    root = tmp_path_factory.mktemp("funnel")
    cfg = BootstrapConfig(vae_channels=[8, 8, 8, 8], vae_norm_groups=4, unet_channels=[32], unet_cross_attention=[True],
                          image_size=64, text_hidden_size=32, text_layers=1, text_heads=2)  # fmt: skip
    model_dir = save_tiny_sd(root / "sd", cfg, CLASSES)
    z, labels = synthetic_latents(24, [0.4, 0.3, 0.25, 0.25, 0.2], shape=(4, 8, 8), seed=4)
    latents = write_latent_store(root / "train.zarr", z, labels, CLASSES, chunk=8)
    il = save_tiny_il(root / "model.pt")
    cams = cam_store_for(latents, il, root / "cam.zarr")
    maps = np.zeros((24, 8, 8), dtype=np.float32)  # every map peaks in cell (1, 1): pixels 8..15 of a 64 px image
    maps[:, 1, 1] = 1.0
    maps[:, 1, 2] = 0.6
    zarr.open_group(cams, mode="r+")["maps"][:] = maps
    ids = zarr.open_group(latents, mode="r")["ids"][:]
    paths = []
    for i in ids:
        paths.append(str(root / f"{i}.png"))
        Image.fromarray(np.full((64, 64), 10, dtype=np.uint8)).save(paths[-1])
    manifest = pd.DataFrame({"id": ids, "path": paths, "split": "train"})
    manifest[CLASSES] = labels
    # boxes: Nodule samples' box covers cells (1, 1) and (1, 2) (x 8..23, y 8..15); Fracture's lies elsewhere
    boxes = []
    for i, row in zip(ids, labels):
        if row[2]:
            boxes.append((i, "train", "Nodule", 8, 8, 24, 16))
        if row[3]:
            boxes.append((i, "train", "Fracture", 48, 48, 64, 64))
    boxes = pd.DataFrame(boxes, columns=["dicom_id", "split", "class", "x0", "y0", "x1", "y1"])
    return root, model_dir, latents, il, cams, manifest, boxes, labels


def test_funnel_of_a_tiny_pipeline(tiny, tmp_path):
    root, model_dir, latents, il, cams, manifest, boxes, labels = tiny
    n = 4  # a synthetic set: Nodule samples all bright (judged positive), Fracture samples dark (negative)
    images = np.concatenate([np.full((n, 64, 64), 200, np.uint8), np.full((n, 64, 64), 10, np.uint8)])
    set_labels = np.zeros((2 * n, len(CLASSES)), dtype=np.uint8)
    set_labels[:n, 2] = set_labels[n:, 3] = 1
    provenance = pd.DataFrame({"tail_class": ["Nodule"] * n + ["Fracture"] * n})
    write_synthetic_set(tmp_path / "resample", "resample", images, provenance, set_labels, CLASSES, SPLIT.tail, n)
    sets = {"resample": read_synthetic_set(tmp_path / "resample", CLASSES, SPLIT.tail, n)}

    def judge(name, imgs):  # positive: a bright image
        return float(np.mean([im.mean() > 100 for im in imgs]))

    vae = load_vae(model_dir, torch.device("cpu"))
    table = fidelity_funnel(manifest, SPLIT, latents, cams, il, None, vae, sets, 0.5, judge, lambda name: 0.05,
                            boxes, box_size=64)  # fmt: skip
    value = table.set_index(["stage", "measure", "class"])["value"]
    assert value[("real", HIT, "Nodule")] == 0.0  # the real images are dark
    assert value[("resample", HIT, "Nodule")] == 1.0 and value[("resample", HIT, "Fracture")] == 0.0
    assert value[("resample", HIT, "mean")] == 0.5
    # maps peak in cell (1, 1) at 8 px per cell: inside the Nodule box, outside Fracture's
    assert value[("cam:eigencam", PEAK, "Nodule")] == 1.0 and value[("cam:eigencam", PEAK, "Fracture")] == 0.0
    # M^S = map > 0.5: cells (1, 1) and (1, 2) = pixels x 8..23, y 8..15, the whole Nodule box
    assert value[("cam:eigencam", COVER, "Nodule")] == 1.0 and value[("cam:eigencam", COVER, "Fracture")] == 0.0
    n_nodule = int(labels[:, 2].sum())
    assert table[(table["stage"] == "real") & (table["class"] == "Nodule")]["n"].item() == n_nodule
    assert set(table["fpr"].dropna()) == {0.05}
    text = markdown(table, SPLIT.tail)
    assert "| resample | hit_rate | 1.000 | 0.000 | 0.500 | 0.050 |" in text


def test_classifier_judge_scores_at_the_classifiers_thresholds(tmp_path):
    """Without boxes the judge is the real-data classifier: here one that says Nodule and never Fracture."""
    from dataclasses import asdict

    from ltaug.evaluation.classifier import ClassifierConfig, build_densenet, save_classifier
    from ltaug.evaluation.funnel import classifier_judge

    cfg = ClassifierConfig(image_size=32, growth_rate=4, block_config=[1, 1], num_init_features=8)
    model = build_densenet(cfg, len(CLASSES))
    torch.nn.init.zeros_(model.classifier.weight)
    model.classifier.bias.data = torch.tensor([0.0, 0.0, 5.0, -5.0, 0.0])  # Nodule ~0.99, Fracture ~0.01
    thresholds = {c: 0.5 for c in CLASSES}
    save_classifier(tmp_path / "baseline.pt", model, {"config": asdict(cfg), "classes": CLASSES, "head": SPLIT.head,
                                                      "tail": SPLIT.tail, "thresholds": thresholds, "method": "baseline"})  # fmt: skip
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((48, 48), 60 * i, dtype=np.uint8)).save(paths[-1])
    manifest = pd.DataFrame({"id": [f"t{i}" for i in range(4)], "path": paths, "split": "test"})
    manifest[CLASSES] = 0
    manifest.loc[0, "Nodule"] = 1
    judge, fpr = classifier_judge(tmp_path / "baseline.pt", manifest, torch.device("cpu"))
    images = [np.full((64, 64), 100, dtype=np.uint8)] * 3  # another size than the classifier's: resized
    assert judge("Nodule", images) == 1.0 and judge("Fracture", images) == 0.0
    assert fpr("Nodule") == 1.0 and fpr("Fracture") == 0.0  # on the 3 (4) real test images without the class
