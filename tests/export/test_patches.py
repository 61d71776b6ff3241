"""Export-time rewrites compute what the model computes, and leave the model as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moce.export.graphs import export_segment
from moce.export.patches import GramScores, export_patches, split_projection, strided_unshuffle
from moce.model.layers import (
    Attention,
    CrossAttention,
    Downsample,
    FeedForward,
    FFTAttention,
    conv_unshuffle,
    cosine_scores,
    fused_projection,
)
from moce.model.plan import SegmentStep


@pytest.mark.parametrize(("parts", "kernel", "bias"), [(2, 3, True), (3, 3, False), (2, 7, True)])
def test_split_projection_equals_the_fused_one(parts, kernel, bias):
    torch.manual_seed(0)
    pointwise = nn.Conv2d(8, 6 * parts, 1, bias=bias)
    depthwise = nn.Conv2d(6 * parts, 6 * parts, kernel, padding=kernel // 2, groups=6 * parts, bias=bias)
    x = torch.randn(2, 8, 13, 17)
    with torch.no_grad():
        fused = fused_projection(pointwise, depthwise, x, parts)
        split = split_projection(pointwise, depthwise, x, parts)
    assert len(split) == parts
    for a, b in zip(fused, split):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("channels", "height", "width"), [(16, 8, 12), (6, 2, 2), (10, 14, 6)])
def test_strided_unshuffle_equals_convolution_then_unshuffle(channels, height, width):
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False)
    x = torch.randn(2, channels, height, width)
    with torch.no_grad():
        torch.testing.assert_close(strided_unshuffle(conv, x), conv_unshuffle(conv, x), rtol=0, atol=1e-5)


def test_gram_scores_equal_cosine_scores_including_an_all_zero_channel():
    torch.manual_seed(0)
    q, k = torch.randn(2, 2, 5, 300), torch.randn(2, 2, 5, 300) * 40
    q[0, 1, 3] = 0  # F.normalize clamps the zero norm; so must the Gram form
    torch.testing.assert_close(GramScores()(q, k), cosine_scores(q, k), rtol=0, atol=1e-6)


def test_patches_apply_inside_the_block_and_are_undone_after(tiny_model):
    keys = set(tiny_model.state_dict())
    kinds = (FeedForward, Attention, CrossAttention, FFTAttention)
    modules = [m for m in tiny_model.modules() if isinstance(m, kinds)]
    assert {type(m) for m in modules} == set(kinds)
    with export_patches(tiny_model):
        assert all(m.project is split_projection for m in modules)
        assert all(isinstance(m.similarity, GramScores) for m in modules if isinstance(m, Attention | CrossAttention))
    assert all(m.project is fused_projection for m in modules)
    downs = [m for m in tiny_model.modules() if isinstance(m, Downsample)]
    with export_patches(tiny_model):
        assert downs and all(m.down is strided_unshuffle for m in downs)
    assert all(m.down is conv_unshuffle for m in downs)
    assert all(m.similarity is cosine_scores for m in modules if isinstance(m, Attention | CrossAttention))
    assert set(tiny_model.state_dict()) == keys


def test_exported_segments_have_no_split_and_no_pixel_wide_normalisation(tiny_model):
    step = next(s for s in tiny_model.plan if isinstance(s, SegmentStep))
    ops = {n.op_type for n in export_segment(tiny_model, step).graph.node}
    assert "Conv" in ops and "MatMul" in ops
    assert not ops & {"Split", "Expand", "Slice"}, ops
