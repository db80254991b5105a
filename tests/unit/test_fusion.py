"""ltaug.method.fusion: Eqs. 6-13 on hand-made tensors, seeds, label policies, and the fuse stage on a tiny IL model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltaug.common.errors import ConfigError
from ltaug.common.variants import effective_policy
from ltaug.method.fusion import (
    FusionConfig,
    combine,
    decode_fused,
    fuse,
    fused_labels,
    fusion_masks,
    region_carried,
    shares,
)

C = 3  # C' of the hand-made sparse vectors
TAIL = torch.arange(C * 4, dtype=torch.float32).reshape(1, C, 2, 2) + 100  # z_t^s (1, C', 2, 2), every entry distinct
HEAD = torch.arange(C * 4, dtype=torch.float32).reshape(1, C, 2, 2) + 200  # z_h^s


def maps(rows) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)  # (1, 2, 2)


def coins(seed: int, shape=(1, 2, 2)) -> torch.Tensor:
    """The coins M^R a generator seeded with ``seed`` gives: its first uniform draws below 1/2."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5


def expected(from_tail: torch.Tensor) -> torch.Tensor:
    """Position by position, all C' channels from the tail or all from the head vector."""
    out = HEAD.clone()
    for i in range(2):
        for j in range(2):
            if from_tail[0, i, j]:
                out[0, :, i, j] = TAIL[0, :, i, j]
    return out


def run(m_tail, m_head, tau_h=0.5, tau_l=0.5, seed=0) -> torch.Tensor:
    return fuse(TAIL, HEAD, maps(m_tail), maps(m_head), tau_h, tau_l, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the four mask cases


def test_tail_specific_only_takes_the_tail_vector():
    # M^S = 1 (tail map 0.9 > 0.5), M^G = 0 (head map 0.9 is not < 0.5) everywhere
    assert torch.equal(run([[0.9, 0.9], [0.9, 0.9]], [[0.9, 0.9], [0.9, 0.9]]), TAIL)


def test_generic_only_takes_the_head_vector():
    # M^S = 0 (0.1 is not > 0.5), M^G = 1 (0.1 < 0.5) everywhere
    assert torch.equal(run([[0.1, 0.1], [0.1, 0.1]], [[0.1, 0.1], [0.1, 0.1]]), HEAD)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_both_masks_go_to_the_coin(seed):
    # M^S = 1 and M^G = 1 everywhere: every position is the coin's
    fused = run([[0.9, 0.9], [0.9, 0.9]], [[0.1, 0.1], [0.1, 0.1]], seed=seed)
    assert torch.equal(fused, expected(coins(seed)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_neither_mask_goes_to_the_coin(seed):
    fused = run([[0.1, 0.1], [0.1, 0.1]], [[0.9, 0.9], [0.9, 0.9]], seed=seed)
    assert torch.equal(fused, expected(coins(seed)))


def test_the_four_cases_in_one_sample():
    # (0,0): tail-specific only -> tail; (0,1): generic only -> head; (1,0): both -> coin; (1,1): neither -> coin
    for seed in range(8):
        c = coins(seed)
        want = torch.tensor([[[True, False], [bool(c[0, 1, 0]), bool(c[0, 1, 1])]]])
        fused = run([[0.9, 0.1], [0.9, 0.1]], [[0.9, 0.1], [0.1, 0.9]], seed=seed)
        assert torch.equal(fused, expected(want)), seed


def test_hand_computed_vector_with_known_coins():
    # seed 0's first four uniforms are 0.4963, 0.7682, 0.0885, 0.1320: coins tail, head, tail, tail
    assert coins(0).tolist() == [[[True, False], [True, True]]]
    fused = run([[0.9, 0.9], [0.9, 0.9]], [[0.1, 0.1], [0.1, 0.1]], seed=0)
    channel0 = [[100.0, 201.0], [102.0, 103.0]]  # channel 0 of z_t^s is 100..103, of z_h^s 200..203
    assert fused[0, 0].tolist() == channel0
    assert fused[0, 2].tolist() == [[108.0, 209.0], [110.0, 111.0]]


def test_masks_broadcast_over_all_channels():
    m_t, m_h = torch.rand(5, 6, 7), torch.rand(5, 6, 7)
    zs_t, zs_h = torch.randn(5, 11, 6, 7), torch.randn(5, 11, 6, 7) + 10  # never equal
    masks = fusion_masks(m_t, m_h, 0.5, 0.5, torch.Generator().manual_seed(0))
    fused = combine(zs_t, zs_h, masks.from_tail)
    from_tail = (fused == zs_t).all(dim=1)  # (5, 6, 7): every channel from the tail
    from_head = (fused == zs_h).all(dim=1)  # every channel from the head
    assert torch.equal(from_tail, masks.from_tail) and torch.equal(from_head, ~masks.from_tail)


def test_masks_are_those_of_the_convention():
    m_t = torch.tensor([[[0.2, 0.7], [0.5, 0.51]]])
    m_h = torch.tensor([[[0.2, 0.7], [0.3, 0.5]]])
    masks = fusion_masks(m_t, m_h, 0.5, 0.4, torch.Generator().manual_seed(0))
    assert masks.specific.tolist() == [[[False, True], [False, True]]]  # M_t > 0.5 (0.5 itself is not)
    assert masks.generic.tolist() == [[[True, False], [True, False]]]  # M_h < 0.4
    # (0,0) generic only -> head, (0,1) specific only -> tail, (1,0) generic only -> head, (1,1) specific only -> tail
    assert masks.from_tail.tolist() == [[[False, True], [False, True]]]


# ---------------------------------------------------------------------------- thresholds at the edges


def test_tau_h_0_and_tau_l_1():
    # tau_h = 0: every position with a positive tail map is tail-specific; tau_l = 1: every head map below 1 generic
    m_t, m_h = [[0.0, 0.3], [1.0, 0.5]], [[1.0, 0.2], [0.0, 1.0]]
    masks = fusion_masks(maps(m_t), maps(m_h), 0.0, 1.0, torch.Generator().manual_seed(5))
    assert masks.specific.tolist() == [[[False, True], [True, True]]]
    assert masks.generic.tolist() == [[[False, True], [True, False]]]
    c = coins(5)
    # (0,0) neither -> coin, (0,1) both -> coin, (1,0) both -> coin, (1,1) specific only -> tail
    want = torch.tensor([[[bool(c[0, 0, 0]), bool(c[0, 0, 1])], [bool(c[0, 1, 0]), True]]])
    assert torch.equal(masks.from_tail, want)
    assert torch.equal(run(m_t, m_h, 0.0, 1.0, seed=5), expected(want))


def test_tau_h_1_and_tau_l_0_leave_everything_to_the_coin():
    m = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])  # maps lie in [0, 1]: none > 1, none < 0
    masks = fusion_masks(m, m, 1.0, 0.0, torch.Generator().manual_seed(3))
    assert not masks.specific.any() and not masks.generic.any()
    assert torch.equal(masks.from_tail, coins(3))


def test_coin_is_fair():
    m = torch.full((200, 16, 16), 0.5)
    masks = fusion_masks(m, m, 1.0, 0.0, torch.Generator().manual_seed(0))  # all positions to the coin
    assert abs(masks.from_tail.float().mean().item() - 0.5) < 0.01


def test_coins_do_not_change_with_the_thresholds():
    m_t, m_h = torch.rand(2, 4, 4), torch.rand(2, 4, 4)
    a = fusion_masks(m_t, m_h, 0.2, 0.8, torch.Generator().manual_seed(9)).coin
    b = fusion_masks(m_t, m_h, 0.7, 0.1, torch.Generator().manual_seed(9)).coin
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- seeds, inputs, shares


def test_same_seed_same_vector_other_seed_other_vector():
    zs_t, zs_h, m = torch.rand(3, 8, 16, 16), torch.rand(3, 8, 16, 16), torch.full((3, 16, 16), 0.5)
    one = fuse(zs_t, zs_h, m, m, 1.0, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(one, fuse(zs_t, zs_h, m, m, 1.0, 0.0, torch.Generator().manual_seed(1)))
    assert not torch.equal(one, fuse(zs_t, zs_h, m, m, 1.0, 0.0, torch.Generator().manual_seed(2)))


def test_inputs_left_unmodified():
    zs_t, zs_h, m_t, m_h = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3), torch.rand(2, 3, 3), torch.rand(2, 3, 3)
    copies = [t.clone() for t in (zs_t, zs_h, m_t, m_h)]
    fuse(zs_t, zs_h, m_t, m_h, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((zs_t, zs_h, m_t, m_h), copies))


def test_shares():
    masks = fusion_masks(maps([[0.9, 0.1], [0.9, 0.1]]), maps([[0.9, 0.1], [0.1, 0.9]]), 0.5, 0.5,
                         torch.Generator().manual_seed(0))  # fmt: skip
    got = shares(masks)
    c = coins(0)
    assert got["tail_share"][0] == pytest.approx((1 + int(c[0, 1, 0]) + int(c[0, 1, 1])) / 4)
    assert got["head_share"][0] == pytest.approx(1 - got["tail_share"][0])
    assert got["coin_share"][0] == pytest.approx(0.5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        fusion_masks(torch.rand(1, 2, 2), torch.rand(1, 2, 3), 0.5, 0.5, torch.Generator())
    with pytest.raises(ValueError, match="must be"):
        combine(torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2), torch.ones(1, 3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------- labels, config, plan


def test_label_policies():
    y_t = np.array([[1, 0, 0, 1]], dtype=np.uint8)  # a tail sample of class 3 that also has class 0
    y_h = np.array([[0, 1, 0, 0]], dtype=np.uint8)
    probs = np.array([[0.2, 0.9, 0.6, 0.1]])
    tail = np.array([3])
    assert fused_labels("union", y_t, y_h, probs, 0.5, tail).tolist() == [[1, 1, 0, 1]]
    assert fused_labels("tail_only", y_t, y_h, probs, 0.5, tail).tolist() == [[1, 0, 0, 1]]
    assert fused_labels("classifier", y_t, y_h, probs, 0.5, tail).tolist() == [[0, 1, 1, 1]]  # + the tail class
    assert fused_labels("classifier", y_t, y_h, probs, 0.95, tail).tolist() == [[0, 0, 0, 1]]
    assert y_t.tolist() == [[1, 0, 0, 1]]  # input left alone


def test_a_region_pasted_into_a_neighbour_is_labelled_with_the_neighbour_s_classes_and_its_tail_class():
    y_t = np.array([[1, 0, 0, 1, 1, 0]], dtype=np.uint8)  # tail class 3, with head class 0 and a second tail class 4
    y_h = np.array([[0, 1, 0, 0, 0, 0]], dtype=np.uint8)  # the head neighbour: class 1 only
    tail = np.array([3])
    labels = fused_labels("neighbour", y_t, y_h, np.zeros((1, 6)), 0.5, tail)
    assert labels.tolist() == [[0, 1, 0, 1, 0, 0]]  # no class 0 (its heart is the neighbour's), no second tail class
    no_finding = np.array([[0, 0, 0, 0, 0, 1]], dtype=np.uint8)  # a normal neighbour: "No Finding" is cleared
    assert fused_labels("neighbour", y_t, no_finding, np.zeros((1, 6)), 0.5, tail, 5).tolist() == [[0, 0, 0, 1, 0, 0]]
    assert effective_policy("auto", "region") == "neighbour" and effective_policy("auto", "cells") == "union"
    assert effective_policy("union", "region") == "union"


def test_a_second_tail_class_is_claimed_only_by_a_sample_that_carries_its_region():
    m_second = torch.zeros(2, 4, 4)
    m_second[:, 0, 0:2] = 0.9  # the second finding sits in the top-left corner of both tail images
    from_tail = torch.zeros(2, 4, 4, dtype=torch.bool)
    from_tail[0, 0, 0:2] = True  # sample 0 took the corner from the tail image; sample 1 took it from the neighbour
    from_tail[1, 3, 3] = True
    carried = region_carried(m_second, from_tail, tau_h=0.5)
    assert carried.tolist() == [True, False]
    half = from_tail.clone()
    half[1, 0, 0] = True  # one of its two cells: half the region is carried
    assert region_carried(m_second, half, tau_h=0.5).tolist() == [True, True]
    assert region_carried(torch.zeros(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), 0.5).tolist() == [False]
    y_t = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=np.uint8)  # made for class 2, also positive for tail class 3
    y_h = np.array([[1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.uint8)
    known = np.ones((2, 4), dtype=bool)
    known[:, 3] = carried
    for policy in ("union", "tail_only"):
        labels = fused_labels(policy, y_t, y_h, np.zeros((2, 4)), 0.5, np.array([2, 2]), carried=known)
        assert labels[:, 3].tolist() == [1, 0] and labels[:, 2].tolist() == [1, 1]


def test_the_exclusive_class_is_cleared_when_another_class_is_positive():
    """A tail sample (class 2) fused with a normal neighbour (class 3 = No Finding) is not normal."""
    y_t = np.array([[0, 0, 1, 0], [0, 0, 1, 0]], dtype=np.uint8)
    y_h = np.array([[0, 0, 0, 1], [1, 0, 0, 0]], dtype=np.uint8)
    probs = np.array([[0.1, 0.1, 0.1, 0.9], [0.9, 0.1, 0.1, 0.1]])
    tail = np.array([2, 2])
    assert fused_labels("union", y_t, y_h, probs, 0.5, tail, exclusive_column=3).tolist() == [[0, 0, 1, 0], [1, 0, 1, 0]]
    assert fused_labels("classifier", y_t, y_h, probs, 0.5, tail, exclusive_column=3).tolist() == [[0, 0, 1, 0], [1, 0, 1, 0]]
    assert fused_labels("union", y_t, y_h, probs, 0.5, tail).tolist() == [[0, 0, 1, 1], [1, 0, 1, 0]]  # none named


@pytest.mark.parametrize(
    "key,value,pattern",
    [("tau_h", 1.5, r"fusion\.tau_h: 1\.5 is greater than the maximum of 1"), ("tau_l", -0.1, r"fusion\.tau_l"),
     ("label_policy", "both", r"fusion\.label_policy: 'both' is not one of \['auto', 'union', 'neighbour', 'tail_only', 'classifier'\]"),
     ("n_per_class", 0, r"fusion\.n_per_class: 0 is less than the minimum of 1")],
)  # fmt: skip
def test_config_errors_name_the_key(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        FusionConfig(**{key: value})


def test_residual_decode_adds_back_each_sources_round_trip_error():
    torch.manual_seed(0)
    b, c_sparse, c, h, w = 3, 6, 4, 5, 5
    zs_t, zs_h = torch.rand(b, c_sparse, h, w), torch.rand(b, c_sparse, h, w)
    z_t, z_h = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
    from_tail = torch.rand(b, h, w) < 0.5
    zs_f = combine(zs_t, zs_h, from_tail)
    pointwise = torch.nn.Conv2d(c_sparse, c, 1)  # a decoder without spatial context
    with torch.no_grad():
        assert torch.equal(decode_fused(pointwise, zs_f, from_tail), pointwise(zs_f))  # Eq. 13
        got = decode_fused(pointwise, zs_f, from_tail, "residual", (z_t, z_h, zs_t, zs_h))
        # every position is its source's latent exactly: the decoder's error there is added back
        assert torch.allclose(got, torch.where(from_tail[:, None], z_t, z_h), atol=1e-5)
        spatial = torch.nn.Conv2d(c_sparse, c, 3, padding=1)
        every = torch.ones(b, h, w, dtype=torch.bool)
        tail_only = decode_fused(spatial, combine(zs_t, zs_h, every), every, "residual", (z_t, z_h, zs_t, zs_h))
        assert torch.allclose(tail_only, z_t, atol=1e-5)  # all from the tail: the tail latent itself
        mixed = decode_fused(spatial, zs_f, from_tail, "residual", (z_t, z_h, zs_t, zs_h))
        expected = spatial(zs_f) + torch.where(from_tail[:, None], z_t - spatial(zs_t), z_h - spatial(zs_h))
        assert torch.allclose(mixed, expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs one of"):
        decode_fused(pointwise, zs_f, from_tail, "residual")
    with pytest.raises(ConfigError, match=r"fusion.decode: 'D' is not one of \['d', 'residual'\] \(how the fused sparse vector"):
        FusionConfig(decode="D")


# ---------------------------------------------------------------------------- the masks of the variants (not the paper's)


def test_a_region_mask_covers_the_finding_and_not_the_scattered_cells():
    """A hand-made 6 x 6 tail map: a finding of 2 x 2 cells around the peak, and one stray hot cell far away."""
    from ltaug.method.fusion import specific_mask

    m = torch.zeros(1, 6, 6)
    m[0, 1:3, 1:3] = torch.tensor([[0.6, 0.8], [0.7, 1.0]])  # the finding, its peak at (2, 2)
    m[0, 5, 5] = 0.9  # a stray cell above the threshold, not connected to the peak
    cells = specific_mask(m, 0.5, "cells")
    assert cells[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2], [5, 5]]
    region = specific_mask(m, 0.5, "region", grow=0)
    assert region[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]  # the finding only
    grown = specific_mask(m, 0.5, "region", grow=1)[0]
    want = torch.zeros(6, 6, dtype=torch.bool)
    want[0:4, 0:4] = True  # the finding grown by one cell on every side, diagonals included
    assert torch.equal(grown, want) and not grown[5, 5]
    assert not specific_mask(torch.full((1, 6, 6), 0.3), 0.5, "region").any()  # no cell above tau_h: empty


def test_overlap_tail_takes_the_tail_region_whole_and_the_rest_from_the_head():
    m_t = torch.zeros(1, 4, 4)
    m_t[0, 1:3, 1:3] = 0.9  # the finding
    m_h = torch.full((1, 4, 4), 0.2)  # the head map is low everywhere: every position is generic (tau_l 1)
    for seed in range(5):
        masks = fusion_masks(m_t, m_h, 0.5, 1.0, torch.Generator().manual_seed(seed), "region", 0, "tail")
        assert torch.equal(masks.from_tail, masks.specific)  # no coin anywhere: the tail region, pasted
        paper = fusion_masks(m_t, m_h, 0.5, 1.0, torch.Generator().manual_seed(seed), "region", 0, "coin")
        assert torch.equal(paper.from_tail[masks.specific], coins(seed, (1, 4, 4))[masks.specific])  # the convention's coin
        # what the fused store records: 4 of 16 positions from the tail, none by the coin (paper: the 4 both-claimed)
        assert shares(masks)["tail_share"][0] == 0.25 and shares(masks)["coin_share"][0] == 0.0
        assert shares(paper)["coin_share"][0] == 0.25
    m_h[0, 0, :] = 0.95  # the top row is neither generic nor the tail's: only there does the coin decide
    masks = fusion_masks(m_t, m_h, 0.5, 0.9, torch.Generator().manual_seed(0), "region", 0, "tail")
    assert masks.by_coin.tolist() == [[[True] * 4] + [[False] * 4] * 3] and shares(masks)["coin_share"][0] == 0.25
    assert torch.equal(masks.from_tail[0, 0], coins(0, (1, 4, 4))[0, 0])


def test_random_masks_keep_how_many_positions_come_from_the_tail_and_move_them():
    m_t = torch.zeros(1, 8, 8)
    m_t[0, 2:5, 2:5] = 0.9
    m_h = torch.full((1, 8, 8), 0.9)  # nothing generic: M^S from the tail, the rest by the coin
    moved = 0
    for seed in range(10):
        cam = fusion_masks(m_t, m_h, 0.5, 0.5, torch.Generator().manual_seed(seed))
        random = fusion_masks(m_t, m_h, 0.5, 0.5, torch.Generator().manual_seed(seed), shuffle=True)
        assert int(random.from_tail.sum()) == int(cam.from_tail.sum())  # the same size
        moved += int((random.from_tail & ~cam.from_tail).sum())
        again = fusion_masks(m_t, m_h, 0.5, 0.5, torch.Generator().manual_seed(seed), shuffle=True)
        assert torch.equal(random.from_tail, again.from_tail)  # seeded
    assert moved > 0
