"""Export-time rewrites compute what the model computes, and leave the model as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moce.export.graphs import export_segment
from moce.export.patches import (
    DftSpectralMix,
    GramScores,
    GramSimilarity,
    SplitProjection,
    StridedDownsample,
    export_form,
    split_projection,
    strided_unshuffle,
)
from moce.model.complexity import expert_costs
from moce.model.global_stats import TileScores, TileSegments
from moce.model.layers import (
    ChannelAttention,
    Downsample,
    FFTAttention,
    Projecting,
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


def test_export_form_is_a_rewritten_copy_and_the_model_is_left_alone(tiny_model):
    classes = [type(m) for m in tiny_model.modules()]
    exported = export_form(tiny_model)
    assert [type(m) for m in tiny_model.modules()] == classes
    expected = {
        Projecting: SplitProjection,
        ChannelAttention: GramSimilarity,
        FFTAttention: DftSpectralMix,
        Downsample: StridedDownsample,
    }
    for layer, rewrite in expected.items():
        modules = [m for m in exported.modules() if isinstance(m, layer)]
        assert modules and all(isinstance(m, rewrite) for m in modules), layer
    assert all(isinstance(m.similarity, GramScores) for m in exported.modules() if isinstance(m, ChannelAttention))
    assert set(exported.state_dict()) == set(tiny_model.state_dict())
    again = export_form(exported)
    assert [type(m) for m in again.modules()] == [type(m) for m in exported.modules()]


def test_export_form_restores_like_the_model(tiny_model):
    image = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    want, want_routes = tiny_model.restore(image)
    got, got_routes = export_form(tiny_model).restore(image)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert all((a.experts == b.experts).all() for a, b in zip(got_routes, want_routes))


def test_flops_are_counted_on_whichever_form_is_given(tiny_model):
    """No context to remember: the model counts its FFT form (uncounted FFTs), the export form its
    DFT matrix products."""
    own = expert_costs(tiny_model, 64, 64)
    exported = expert_costs(export_form(tiny_model), 64, 64)
    assert all(e.flops > o.flops for o, e in zip(own, exported))
    assert expert_costs(tiny_model, 64, 64) == own


def test_tile_statistics_win_over_the_export_form_of_the_scores(tiny_model):
    tiles = TileSegments(export_form(tiny_model))
    attention = [m for m in tiles.model.modules() if isinstance(m, ChannelAttention)]
    assert attention and all(isinstance(m, GramSimilarity) and isinstance(m, TileScores) for m in attention)
    assert all(type(m).scores is TileScores.scores for m in attention)


def test_exported_segments_have_no_split_and_no_pixel_wide_normalisation(tiny_model):
    step = next(s for s in tiny_model.plan if isinstance(s, SegmentStep))
    ops = {n.op_type for n in export_segment(tiny_model, step).graph.node}
    assert "Conv" in ops and "MatMul" in ops
    assert not ops & {"Split", "Expand", "Slice"}, ops
