"""Stage fuse (ltaug.method.fused_store): one fused sample per pair, written to the fused latent store; the same store whatever the batch or chunk size; pairs and maps of another run refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import synthetic_latents, write_latent_store
from helpers.stage_models import CLASSES, SPLIT, cam_store_for, save_tiny_il

from ltaug.backbone.latents import open_latents
from ltaug.common.errors import InputError
from ltaug.method.cam import open_cams
from ltaug.method.checkpoint import load_il_model
from ltaug.method.fused_store import fuse_latents, plan, sample_generator
from ltaug.method.fusion import FusionConfig, fuse


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Training latents, a tiny untrained IL model, its CAM store and hand-written pairs."""
    root = tmp_path_factory.mktemp("fuse")
    z, labels = synthetic_latents(48, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8))
    latents = write_latent_store(root / "train.zarr", z, labels, CLASSES, chunk=16)
    model = save_tiny_il(root / "model.pt")
    cams = cam_store_for(latents, model, root / "cam.zarr")
    ids = open_latents(latents)["ids"][:]
    nodule = [i for i in range(48) if labels[i, 2]][:3]
    fracture = [i for i in range(48) if labels[i, 3]][:2]
    head = [i for i in range(48) if labels[i, 0] and not labels[i, 2] and not labels[i, 3]]
    (root / "pairs").mkdir()
    for n in (4, 5, 7, 100):  # pairs.csv for n_per_class n: tail samples cycled, head neighbours cycled
        pd.DataFrame({
            "j": [*range(n), *range(n)], "tail_class": ["Nodule"] * n + ["Fracture"] * n,
            "tail_id": [ids[nodule[j % 3]] for j in range(n)] + [ids[fracture[j % 2]] for j in range(n)],
            "head_class": "Cardiomegaly", "head_id": [ids[head[j % 5]] for j in range(2 * n)], "distance": 0.0,
        }).to_csv(root / "pairs" / f"{n}.csv", index=False)  # fmt: skip
    return root, latents, model, cams


def pairs_csv(root, n=100):
    return root / "pairs" / f"{n}.csv"


def run_stage(inputs, out, **cfg):
    root, latents, model, cams = inputs
    cfg = FusionConfig(**cfg)
    return fuse_latents(pairs_csv(root, cfg.n_per_class), latents, cams, model, SPLIT, out, cfg)


def test_plan_takes_one_pair_per_synthetic_sample():
    pairs = pd.DataFrame({"j": [2, 0, 1, 0, 1, 2], "tail_id": ["c", "a", "b", "d", "d", "d"],
                          "tail_class": ["Nodule"] * 3 + ["Fracture"] * 3, "head_class": "Cardiomegaly",
                          "head_id": ["h3", "h1", "h2", "h4", "h5", "h6"], "distance": 1.0})  # fmt: skip
    todo = plan(pairs, SPLIT, 3)
    nodule = todo[todo["tail_class"] == "Nodule"]
    assert nodule["tail_id"].tolist() == ["a", "b", "c"] and nodule["j"].tolist() == [0, 1, 2]
    assert nodule["head_id"].tolist() == ["h1", "h2", "h3"]
    assert todo[todo["tail_class"] == "Fracture"]["head_id"].tolist() == ["h4", "h5", "h6"]  # a fresh neighbour each
    assert todo["id"].iloc[0] == "fused-Nodule-00000" and todo["id"].is_unique


def test_plan_refuses_pairs_made_for_another_n_per_class():
    pairs = pd.DataFrame({"j": [0, 1], "tail_id": ["a", "b"], "tail_class": ["Nodule", "Fracture"],
                          "head_class": "Cardiomegaly", "head_id": ["h1", "h2"], "distance": 1.0})  # fmt: skip
    with pytest.raises(InputError, match=r"p\.csv: tail class 'Nodule' has pairs j = 0\.\.0 \(1 rows\), but "
                                         r"fusion\.n_per_class is 4.*Rerun pair_neighbours"):  # fmt: skip
        plan(pairs, SPLIT, 4, "p.csv")


@pytest.mark.parametrize("decode", ["d", "residual"])
def test_stage_writes_decoded_fused_latents(inputs, tmp_path, decode):
    root, latents, model, cams = inputs
    summary = run_stage(inputs, tmp_path / "fused.zarr", n_per_class=7, tau_h=0.4, tau_l=0.6, seed=3, chunk_size=4,
                        decode=decode)  # fmt: skip
    fused = open_latents(tmp_path / "fused.zarr")
    assert fused["z"].shape == (14, 4, 8, 8) and fused["labels"].shape == (14, len(CLASSES))
    assert list(fused["tail_class"][:]) == ["Nodule"] * 7 + ["Fracture"] * 7
    assert fused.attrs["tail"] == SPLIT.tail and fused.attrs["config"]["tau_h"] == 0.4
    store = open_latents(latents)
    row = {s: i for i, s in enumerate(store["ids"][:])}
    il = load_il_model(model)
    cam_maps = open_cams(cams)["maps"][:]
    for f in (0, 4, 8, 13):  # recompute Eqs. 6-13 for a few samples from scratch
        t, h = row[str(fused["tail_id"][f])], row[str(fused["head_id"][f])]
        t_index, j = (0, f) if f < 7 else (1, f - 7)
        with torch.no_grad():
            zs = il.model.student(torch.from_numpy(store["z"][[t, h]]))
            zs_f = fuse(zs[:1], zs[1:], torch.from_numpy(cam_maps[[t]]), torch.from_numpy(cam_maps[[h]]), 0.4, 0.6,
                        sample_generator(3, t_index, j))  # fmt: skip
            z_f = il.model.decoder(zs_f)
            if decode == "residual":  # Eq. 13 plus each source's round-trip error where F took it
                from_tail = (zs_f == zs[:1]).all(dim=1)  # (1, h, w): the positions taken from the tail vector
                assert torch.equal(from_tail, torch.from_numpy(fused["from_tail"][[f]]).bool())
                errors = torch.from_numpy(store["z"][[t, h]]) - il.model.decoder(zs)  # (2, C, h, w)
                z_f = z_f + torch.where(from_tail[:, None], errors[:1], errors[1:])
        np.testing.assert_allclose(fused["z"][f], z_f[0].numpy(), rtol=1e-5, atol=1e-5)
        want = np.maximum(store["labels"][t], store["labels"][h])  # union ...
        want[CLASSES.index("No Finding")] = 0  # ... without "No Finding": each sample has its tail class
        assert fused["labels"][f].tolist() == want.tolist()
    assert np.allclose(fused["tail_share"][:] + fused["head_share"][:], 1.0) and (fused["coin_share"][:] > 0).all()
    assert summary["tail_share"].tolist() == pytest.approx(fused["tail_share"][:].tolist())


def test_stage_does_not_depend_on_batch_or_chunk_size(inputs, tmp_path):
    run_stage(inputs, tmp_path / "a.zarr", n_per_class=5, batch_size=1, chunk_size=3)
    run_stage(inputs, tmp_path / "b.zarr", n_per_class=5, batch_size=64, chunk_size=256)
    a, b = open_latents(tmp_path / "a.zarr"), open_latents(tmp_path / "b.zarr")
    np.testing.assert_allclose(a["z"][:], b["z"][:], rtol=1e-5, atol=1e-6)  # the decoder's float sums may regroup
    for name in ("labels", "tail_share", "coin_share", "ids", "head_id"):
        assert np.array_equal(a[name][:], b[name][:]), name


def test_stage_same_seed_same_store(inputs, tmp_path):
    taus = {"tau_h": 0.3, "tau_l": 0.7}  # maps in (0.3, 0.7) are both tail-specific and generic: coins decide
    summary = run_stage(inputs, tmp_path / "a.zarr", n_per_class=4, seed=1, **taus)
    run_stage(inputs, tmp_path / "b.zarr", n_per_class=4, seed=1, **taus)
    run_stage(inputs, tmp_path / "c.zarr", n_per_class=4, seed=2, **taus)
    a, b, c = (open_latents(tmp_path / f"{x}.zarr")["z"][:] for x in "abc")
    assert (summary["coin_share"] > 0).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_stage_refuses_pairs_without_a_tail_class(inputs, tmp_path):
    root, latents, model, cams = inputs
    pairs = pd.read_csv(pairs_csv(root))
    pairs[pairs["tail_class"] == "Nodule"].to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.raises(InputError, match=r"pairs\.csv: no pair for tail class\(es\) 'Fracture'"):
        fuse_latents(tmp_path / "pairs.csv", latents, cams, model, SPLIT, tmp_path / "f.zarr", FusionConfig())
    assert not (tmp_path / "f.zarr").exists()


def test_stage_refuses_maps_of_another_il_model(inputs, tmp_path):
    root, latents, model, cams = inputs
    other = save_tiny_il(tmp_path / "other.pt", seed=1)
    with pytest.raises(InputError, match="il_fingerprint"):
        fuse_latents(pairs_csv(root), latents, cams, other, SPLIT, tmp_path / "f.zarr", FusionConfig())


def test_the_latent_space_control_is_the_blend_of_the_two_latents(inputs, tmp_path):
    root, latents, model, cams = inputs
    run_stage(inputs, tmp_path / "sparse.zarr", n_per_class=4, tau_h=0.4, tau_l=0.6, seed=2)
    run_stage(inputs, tmp_path / "latent.zarr", n_per_class=4, tau_h=0.4, tau_l=0.6, seed=2, space="latent")
    sparse, latent = open_latents(tmp_path / "sparse.zarr"), open_latents(tmp_path / "latent.zarr")
    assert np.array_equal(sparse["from_tail"][:], latent["from_tail"][:])  # the same masks
    store = open_latents(latents)
    row = {s: i for i, s in enumerate(store["ids"][:])}
    for f in range(8):  # z_F = F z_t + (1 - F) z_h, position by position, by hand
        z_t, z_h = store["z"][row[str(latent["tail_id"][f])]], store["z"][row[str(latent["head_id"][f])]]
        mask = latent["from_tail"][f].astype(bool)  # (h, w)
        want = np.where(mask[None], z_t, z_h)
        assert np.array_equal(latent["z"][f], want)
    assert not np.allclose(sparse["z"][:], latent["z"][:])  # the sparse space's decode is something else


def test_a_region_fused_sample_is_labelled_with_its_neighbour_s_classes_and_its_tail_class(inputs, tmp_path):
    root, latents, model, cams = inputs
    run_stage(inputs, tmp_path / "fused.zarr", n_per_class=5, tau_h=0.2, tau_l=1.0, tail_mask="region", overlap="tail")
    fused, store = open_latents(tmp_path / "fused.zarr"), open_latents(latents)
    assert fused.attrs["label_policy"] == "neighbour" and fused.attrs["config"]["label_policy"] == "auto"
    row = {s: i for i, s in enumerate(store["ids"][:])}
    for f in range(10):
        want = store["labels"][row[str(fused["head_id"][f])]].copy()
        want[CLASSES.index(str(fused["tail_class"][f]))] = 1
        want[CLASSES.index("No Finding")] = 0
        assert fused["labels"][f].tolist() == want.tolist()
        assert (fused["tail_labels"][f] == store["labels"][row[str(fused["tail_id"][f])]]).all()


def test_union_claims_a_second_tail_class_only_where_the_sample_carries_its_region(tmp_path):
    from ltaug.method.fusion import region_carried

    z, labels = synthetic_latents(48, [0.4, 0.3, 0.1, 0.1, 0.2], shape=(4, 8, 8))
    both = np.flatnonzero(labels[:, 2])[:3]
    labels[both, 3] = 1  # three Nodule images that show a Fracture too
    labels[both, 4] = 0
    latents = write_latent_store(tmp_path / "train.zarr", z, labels, CLASSES, chunk=16)
    model = save_tiny_il(tmp_path / "model.pt")
    layer = cam_store_for(latents, model, tmp_path / "layer.zarr", method="gradcam")  # a map per class and sample
    ids = open_latents(latents)["ids"][:]
    head = [i for i in range(48) if labels[i, 0] and not labels[i, 2:4].any()]
    fracture = [i for i in range(48) if labels[i, 3] and not labels[i, 2]]
    n = 6
    pd.DataFrame({
        "j": [*range(n), *range(n)], "tail_class": ["Nodule"] * n + ["Fracture"] * n,
        "tail_id": [ids[both[j % 3]] for j in range(n)] + [ids[fracture[j % len(fracture)]] for j in range(n)],
        "head_class": "Cardiomegaly", "head_id": [ids[head[j % len(head)]] for j in range(2 * n)], "distance": 0.0,
    }).to_csv(tmp_path / "pairs.csv", index=False)  # fmt: skip
    maps = open_cams(layer)
    classes = list(maps.attrs["map_classes"])
    seen = []
    for tau_h, grow in ((0.2, 1), (0.5, 0)):  # tau_l 0: no generic position, so the coin decides outside the region
        cfg = FusionConfig(n_per_class=n, tau_h=tau_h, tau_l=0.0, tail_mask="region", region_grow=grow, overlap="tail",
                           label_policy="union")  # fmt: skip
        out = tmp_path / f"fused{tau_h}.zarr"
        fuse_latents(tmp_path / "pairs.csv", latents, layer, model, SPLIT, out, cfg)
        fused = open_latents(out)
        for f in range(n):  # Nodule samples of tail images that show a Fracture too
            t = both[f % 3]
            m = torch.from_numpy(maps["maps"][[t], classes.index("Fracture")])
            carried = region_carried(m, torch.from_numpy(fused["from_tail"][[f]]).bool(), tau_h, "region", grow)[0]
            assert fused["labels"][f][CLASSES.index("Fracture")] == int(carried)
            assert fused["labels"][f][CLASSES.index("Nodule")] == 1
            seen.append(bool(carried))
    assert len(set(seen)) == 2, f"both cases occur: a sample that carries the second finding and one that does not ({seen})"
