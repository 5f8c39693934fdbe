"""Tiling whole slides: synthetic ones with known truth, and a real Aperio slide."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from wsi_pipeline.config import TilingConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import (
    SyntheticSlideSpec,
    render_slide,
    write_pyramidal_tiff,
)
from wsi_pipeline.tiling import QC_COLUMNS, tile_slide, tiling_id
from wsi_pipeline.tiling.tile_qc import background_pixels


def coverage(mask: np.ndarray, cell: float, coords: np.ndarray, size: float) -> float:
    """Fraction of a mask's True cells (``cell`` level-0 px each) inside the union of tiles."""
    covered = np.zeros_like(mask)
    for x, y in coords:
        covered[int(y // cell) : int(np.ceil((y + size) / cell)), int(x // cell) : int(np.ceil((x + size) / cell))] = True
    return float((covered & mask).sum() / mask.sum())


@pytest.fixture(scope="module")
def edge_slide(tmp_path_factory):
    """A 0.5 µm/px slide cut so that tissue runs into its right edge, which is not a whole tile."""
    rgb, truth = render_slide(SyntheticSlideSpec(width=2048, height=1536, mpp=0.5, positive=True, seed=11, n_levels=3))
    cell = truth.mask_downsample
    columns = truth.tissue_mask.mean(axis=0)
    # The rightmost cut (not a multiple of the 256-px tile) with tissue in the last column.
    cut_cells = max(c for c in range(40, len(columns)) if columns[c - 1] > 0.3 and (c * cell) % 256 > 64)
    width = cut_cells * cell
    path = tmp_path_factory.mktemp("slides") / "edge.tiff"
    write_pyramidal_tiff(path, np.ascontiguousarray(rgb[:, :width]), 0.5, 3)
    return path, truth.tissue_mask[:, :cut_cells], cell, width


def test_tiles_cover_the_tissue_including_the_edge_strips(edge_slide):
    path, tissue, cell, width = edge_slide
    with open_source("wsi", path) as source:
        tiling = tile_slide(source, TilingConfig(mpp=1.0, tile_px=128))
    size = tiling.geometry.size_level0
    assert size == 256 and tiling.geometry.read_level == 1 and tiling.geometry.mpp == 1.0
    past_edge = tiling.coords[:, 0] + size > width
    assert past_edge.any(), "tissue in the right edge strip must be tiled"
    assert coverage(tissue, cell, tiling.coords, size) >= 0.95
    # Every kept tile holds tissue by the truth too, not only by the mask.
    for x, y in tiling.coords:
        block = tissue[int(y // cell) : int((y + size) // cell), int(x // cell) : int((x + size) // cell)]
        assert block.sum() / (size / cell) ** 2 >= 0.1


def test_every_kept_tile_carries_its_qc(edge_slide):
    path, _, _, _ = edge_slide
    with open_source("wsi", path) as source:
        tiling = tile_slide(source, TilingConfig(mpp=1.0, tile_px=128))
        pixels = np.concatenate(list(source.read_tiles(tiling.coords[:8], 256.0, 128, 8)))
    assert set(tiling.qc) == set(QC_COLUMNS)
    assert all(len(values) == len(tiling.coords) for values in tiling.qc.values())
    assert (tiling.qc["tissue_fraction"] >= 0.2).all() and (tiling.qc["pen_fraction"] <= 0.1).all()
    np.testing.assert_allclose(tiling.qc["background_fraction"][:8], background_pixels(pixels).mean(axis=(1, 2)), atol=1e-6)
    assert (tiling.qc["blur"] > 50).mean() > 0.9  # a sharp synthetic slide
    summary = tiling.summary()
    assert summary["n_kept"] == len(tiling.coords) and summary["modality"] == "brightfield"
    assert summary["tissue_area_mm2"] == pytest.approx(tiling.tissue.tissue.sum() * tiling.tissue.mpp**2 / 1e6, rel=1e-3)


def test_only_tiles_with_tissue_are_read(edge_slide, monkeypatch):
    path, _, _, _ = edge_slide
    with open_source("wsi", path) as source:
        read = []
        original = source.read_tiles

        def counting(coords, *args):
            read.append(len(coords))
            return original(coords, *args)

        monkeypatch.setattr(source, "read_tiles", counting)
        tiling = tile_slide(source, TilingConfig(mpp=1.0, tile_px=128))
    assert sum(read) == len(tiling.coords) < tiling.n_grid_tiles  # glass is never decoded


def test_an_mpp_override_moves_the_grid_and_the_key(edge_slide):
    path, _, _, _ = edge_slide
    config = TilingConfig(mpp=1.0, tile_px=128)
    with open_source("wsi", path) as stated, open_source("wsi", path, mpp_override=0.25) as overridden:
        a, b = tile_slide(stated, config), tile_slide(overridden, config)
        assert stated.uid == overridden.uid  # same file...
    assert a.geometry.size_level0 == 256 and b.geometry.size_level0 == 512  # ...but other tiles
    from wsi_pipeline.store.feature_store import slide_entry

    assert slide_entry(stated.uid, a.slide_mpp) != slide_entry(overridden.uid, b.slide_mpp)


def test_a_slide_without_mpp_is_an_error_naming_it(tmp_path):
    import tifffile

    path = tmp_path / "no_mpp.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    with open_source("wsi", path) as source, pytest.raises(WSIPipelineError, match="µm/px") as caught:
        tile_slide(source, TilingConfig())
    assert str(path) in caught.value.format() and "'mpp' column" in caught.value.format()


def test_tiling_id_changes_with_parameters():
    base = TilingConfig(mpp=0.5, tile_px=256)
    assert tiling_id(base) == tiling_id(TilingConfig(mpp="20x", tile_px=256))
    assert tiling_id(base) != tiling_id(TilingConfig(mpp=0.5, tile_px=224))
    assert tiling_id(base) != tiling_id(TilingConfig(mpp=0.5, tile_px=256, tissue={"method": "otsu_saturation"}))
    assert tiling_id(base) != tiling_id(TilingConfig(mpp=0.5, tile_px=256, qc={"max_pen": 0.5}))
    assert tiling_id(base).startswith("0.5um_256px_")


def test_real_aperio_slide_tiles_tissue_only_and_covers_it(shared_slides):
    with open_source("wsi", shared_slides / "CMU-1-Small-Region.svs") as source:
        tiling = tile_slide(source, TilingConfig(mpp=0.5, tile_px=256))
        tiles = np.concatenate(list(source.read_tiles(tiling.coords, tiling.geometry.size_level0, 256, 32)))
    # 0.499 µm/px is within the 2% tolerance of 0.5: level 0 is read as is.
    assert tiling.geometry.size_level0 == 256 and tiling.geometry.mpp == pytest.approx(0.499)
    mask, scale = tiling.tissue.tissue, tiling.tissue.scale
    assert 0.3 < mask.mean() < 0.5
    assert coverage(mask, scale, tiling.coords, 256) >= 0.95
    stained = (tiles.max(axis=3).astype(int) - tiles.min(axis=3)) > 25  # saturated = stained, not glass
    # Thin strands at the tissue's margin make a few tiles mostly glass, but every one holds tissue.
    assert (stained.mean(axis=(1, 2)) > 0.05).all(), "a kept tile is all glass"
    assert np.median(stained.mean(axis=(1, 2))) > 0.5
    assert tiling.coords[:, 1].max() + 256 > 2967  # the bottom strip, where the tissue is cut, is tiled


@pytest.fixture(scope="module")
def artefact_slide(tmp_path_factory):
    """Pale and IHC tissue, pen in three colours, a black border, debris and blurred patches, with truth."""
    from wsi_pipeline.sources.synthetic import write_artefact_slide

    path = tmp_path_factory.mktemp("slides") / "artefacts.tiff"
    truth = write_artefact_slide(path, seed=0)
    return path, truth


def truth_fraction(mask: np.ndarray, coords: np.ndarray, size: float) -> np.ndarray:
    """Fraction of each tile a full-resolution truth mask covers (outside the slide: not covered)."""
    side = round(size)
    return np.array([mask[y : y + side, x : x + side].sum() / side**2 for x, y in coords])


def test_pen_tiles_are_dropped_and_counted(artefact_slide):
    path, truth = artefact_slide
    with open_source("wsi", path) as source:
        strict = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64))
        lenient = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64, qc={"max_pen": 1.0}))
    size = strict.geometry.size_level0
    assert strict.dropped["pen"] > 10 and lenient.dropped["pen"] == 0
    assert len(lenient.coords) - len(strict.coords) == strict.dropped["pen"]
    assert truth_fraction(truth.pen, strict.coords, size).max() <= 0.2  # no kept tile is mostly ink
    # The stored pen fraction tracks the truth.
    estimated, actual = lenient.qc["pen_fraction"], truth_fraction(truth.pen, lenient.coords, size)
    assert np.corrcoef(estimated, actual)[0, 1] > 0.95
    assert strict.pen_area_mm2 == pytest.approx(truth.pen.sum() * 2.0**2 / 1e6, rel=0.35)


def test_blurred_tiles_are_flagged_and_can_be_dropped(artefact_slide):
    path, truth = artefact_slide
    with open_source("wsi", path) as source:
        flagged = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64, qc={"max_pen": 1.0}))
        dropped = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64, qc={"max_pen": 1.0, "min_blur": 50}))
    size = flagged.geometry.size_level0
    in_patch = truth_fraction(truth.blur, flagged.coords, size) > 0.9
    clear = truth_fraction(truth.blur, flagged.coords, size) == 0
    assert in_patch.sum() >= 3
    assert (flagged.qc["blur"][in_patch] < 50).all() and (flagged.qc["blur"][clear] > 50).mean() > 0.98
    assert flagged.n_blurred >= in_patch.sum() and flagged.dropped["blur"] == 0
    assert dropped.dropped["blur"] == flagged.n_blurred and (dropped.qc["blur"] >= 50).all()
    assert truth_fraction(truth.blur, dropped.coords, size).max() <= 0.9


def test_artefacts_never_make_tiles(artefact_slide):
    path, truth = artefact_slide
    with open_source("wsi", path) as source:
        tiling = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64))
    size = tiling.geometry.size_level0
    assert truth_fraction(truth.border, tiling.coords, size).max() < 0.2
    assert truth_fraction(truth.tissue, tiling.coords, size).min() >= 0.1
    # Pale and IHC tissue are tiled like the rest, where no ink covers them.
    with open_source("wsi", path) as source:
        lenient = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64, qc={"max_pen": 1.0}))
    for name in ("pale", "ihc"):
        visible = getattr(truth, name) & ~truth.pen
        assert coverage(visible[::8, ::8], 8, lenient.coords, size) > 0.85, name


def test_fluorescence_slide_is_tiled_on_its_signal_not_edge_to_edge(tmp_path):
    from wsi_pipeline.sources.synthetic import render_fluorescence_slide

    rgb, tissue = render_fluorescence_slide(2048, 1536, mpp=1.0, seed=2)
    path = tmp_path / "dapi.tiff"
    write_pyramidal_tiff(path, rgb, 1.0, 3)
    with open_source("wsi", path) as source:
        tiling = tile_slide(source, TilingConfig(mpp=2.0, tile_px=64))
    size = tiling.geometry.size_level0
    assert tiling.tissue.modality == "fluorescence"
    assert len(tiling.coords) < 0.8 * tiling.n_grid_tiles  # not the whole dark slide
    assert coverage(tissue[::8, ::8], 8, tiling.coords, size) >= 0.9
    assert truth_fraction(tissue, tiling.coords, size).min() >= 0.1
    # Background is dark here: a tile full of tissue is not "background" for its QC column.
    inside = truth_fraction(tissue, tiling.coords, size) > 0.95
    assert inside.any() and np.median(tiling.qc["background_fraction"][inside]) < 0.5


def test_a_segmentation_model_is_identified_by_its_content(tmp_path):
    torch = pytest.importorskip("torch")

    class Flat(torch.nn.Module):
        def __init__(self, bias: float) -> None:
            super().__init__()
            self.bias = bias

        def forward(self, x):
            return x[:, :1] * 0 + self.bias

    def save(bias, path):
        with warnings.catch_warnings():  # TorchScript is deprecated on recent torch; still our format
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(Flat(bias)), str(path))
        return path

    first = save(1.0, tmp_path / "a.pt")
    config = TilingConfig(tissue={"method": "model", "model": {"path": str(first), "mpp": 16}})
    moved = tmp_path / "moved.pt"
    moved.write_bytes(first.read_bytes())
    same = TilingConfig(tissue={"method": "model", "model": {"path": str(moved), "mpp": 16}})
    assert tiling_id(config) == tiling_id(same)  # a model moved elsewhere is the same model
    save(-1.0, first)
    assert tiling_id(config) != tiling_id(same)  # the file changed: new tiles
    missing = TilingConfig(tissue={"method": "model", "model": {"path": str(tmp_path / "nope.pt"), "mpp": 16}})
    with pytest.raises(WSIPipelineError, match="tiling.tissue.model.path"):
        tiling_id(missing)

