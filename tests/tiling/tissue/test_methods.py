"""Registered tissue methods, the segmentation scale, and a real Aperio slide."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.tiling.tissue import (
    TissueMap,
    base,
    get_tissue_method,
    otsu_saturation_mask,
    register_tissue_method,
    segment_tissue,
    segmentation_mpp,
    segmentation_thumbnail,
    tissue_method_names,
)


def test_builtin_methods_registered():
    assert {"auto", "otsu_saturation", "model"} <= set(tissue_method_names())
    assert TissueConfig().method == "auto"


def test_unknown_method_suggests_the_closest_name():
    with pytest.raises(WSIPipelineError, match="Did you mean 'otsu_saturation'") as error:
        get_tissue_method("otsu")
    assert error.value.where == "tiling.tissue.method"
    assert "auto" in error.value.fix
    with pytest.raises(WSIPipelineError, match="Did you mean 'auto'"):
        get_tissue_method("autp")
    with pytest.raises(WSIPipelineError, match="unknown tissue method 'nope'"):
        segment_tissue(object(), TissueConfig(method="nope"))


def test_segment_tissue_dispatches_to_a_registered_plugin(array_source):
    calls = []

    @register_tissue_method("test-constant")
    def constant(source, config):
        calls.append((source, config))
        empty = np.zeros((2, 2), dtype=bool)
        return TissueMap(empty, empty, 1.0, source.mpp, "brightfield")

    try:
        source = array_source(np.zeros((4, 4, 3), np.uint8), 0.5)
        config = TissueConfig(method="test-constant")
        assert segment_tissue(source, config).mpp == 0.5
        assert calls == [(source, config)]
    finally:
        base._METHODS.pop("test-constant")


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.25, 100_000, 80_000, 8.0), 8.0),  # a resection: the configured scale
        ((0.5, 2048, 1024, 8.0), 1.0),  # 1 mm: finer, for 1024 px on the long side
        ((2.0, 3072, 2048, 8.0), 6.0),
        ((0.5, 1024, 4096, 8.0), 2.0),  # the long side may be the height
        ((0.5, 500, 300, 8.0), 0.5),  # never finer than the slide
        ((0.25, 100_000, 80_000, 16.0, 2048), 25_000 / 2048),  # min_long_side given
        ((1.0, 4000, 3000, 2.0), 2.0),  # thumbnail_mpp finer than needed is kept
    ],
)
def test_segmentation_mpp(args, expected):
    assert segmentation_mpp(*args) == pytest.approx(expected)


def test_segmentation_mpp_rejects_non_positive():
    with pytest.raises(ValueError):
        segmentation_mpp(0.0, 100, 100, 8.0)


def test_segmentation_thumbnail_reports_the_mpp_it_got(array_source):
    source = array_source(np.full((1000, 3000, 3), 240, np.uint8), 0.5)  # 1.5 mm wide
    rgb, scale, mpp = segmentation_thumbnail(source, TissueConfig(thumbnail_mpp=8.0))
    assert source.thumbnail_calls == [pytest.approx(1500 / 1024)]
    assert rgb.shape[1] == 1024
    assert scale == pytest.approx(3000 / 1024)
    assert mpp == pytest.approx(scale * 0.5)


@pytest.fixture(scope="module")
def artefact_otsu(artefact_tiff) -> TissueMap:
    with open_source("wsi", artefact_tiff) as source:
        return get_tissue_method("otsu_saturation")(source, TissueConfig())


def test_otsu_saturation_method_runs_the_old_mask(artefact_otsu, artefact_tiff):
    assert artefact_otsu.modality == "brightfield" and not artefact_otsu.pen.any()
    with open_source("wsi", artefact_tiff) as source:
        thumbnail, _, mpp = segmentation_thumbnail(source, TissueConfig())
    assert mpp == pytest.approx(artefact_otsu.mpp)
    expected = otsu_saturation_mask(thumbnail, mpp=mpp)
    assert np.array_equal(artefact_otsu.tissue, expected)


def test_pen_and_padding_make_the_old_method_worse_than_auto(artefact_otsu, artefact_segmented, dice_of):
    # Why `auto` is the default: on the same slide, the plain method keeps ink as tissue.
    new, grid = artefact_segmented
    expected = grid["tissue"] & ~grid["pen"] & ~grid["border"]
    assert artefact_otsu.tissue.shape == new.tissue.shape
    assert dice_of(new.tissue, expected) > dice_of(artefact_otsu.tissue, expected) + 0.05


def test_remove_pen_false_keeps_coloured_ink_but_not_black(artefact_tiff, artefact_segmented):
    with_pen, grid = artefact_segmented
    with open_source("wsi", artefact_tiff) as source:
        without = segment_tissue(source, TissueConfig(remove_pen=False))
    assert with_pen.pen.mean() > 0.05 and not without.pen.any()
    blue, black = grid["ink_blue"], grid["ink_black"] | grid["border"]
    assert (without.tissue & blue).sum() / blue.sum() > 0.5  # blue ink is coloured: it passes as stain
    assert (without.tissue & black).sum() / black.sum() < 0.05  # black ink and padding never do


def test_real_aperio_slide(shared_slides):
    with open_source("wsi", shared_slides / "CMU-1-Small-Region.svs") as source:
        result = segment_tissue(source, TissueConfig())
        old = get_tissue_method("otsu_saturation")(source, TissueConfig())
        width, height = source.dimensions
        slide_mpp = source.mpp
    assert result.modality == "brightfield"
    # 2220 x 2967 px at 0.499 µm/px (1.5 mm): segmented at ~1.45 µm/px, 1024 px high.
    assert result.mpp == pytest.approx(segmentation_mpp(slide_mpp, width, height, 8.0), rel=0.01)
    assert result.tissue.shape[0] == 1024
    assert 0.30 <= result.tissue.mean() <= 0.50
    assert result.pen.mean() < 0.01
    # The old method found 0.36-0.39 of this slide; the two agree on where the tissue is.
    assert 2 * (result.tissue & old.tissue).sum() / (result.tissue.sum() + old.tissue.sum()) >= 0.9


def test_small_component_removal_matches_scikit_image():
    import numpy as np
    from skimage import morphology

    from wsi_pipeline.tiling.tissue.components import (
        remove_small_holes,
        remove_small_objects,
    )

    rng = np.random.default_rng(3)
    for density in (0.3, 0.55, 0.8):
        mask = rng.random((120, 90)) < density
        for size in (1, 4, 30):
            np.testing.assert_array_equal(remove_small_objects(mask, size), morphology.remove_small_objects(mask, max_size=size))
            np.testing.assert_array_equal(remove_small_holes(mask, size), morphology.remove_small_holes(mask, max_size=size))
    empty = np.zeros((5, 5), dtype=bool)
    assert not remove_small_objects(empty, 3).any() and remove_small_holes(empty, 3).sum() == 0
