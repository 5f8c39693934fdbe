"""The tile stage's memory follows its thumbnail, not the slide: huge and flat slides in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from wsi_pipeline.sources.synthetic import write_large_slide

#: Runs in a fresh interpreter and prints its own peak resident memory. VmHWM, not ru_maxrss:
#: Linux keeps ru_maxrss across exec, so a child of pytest would report pytest's peak.
_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    def peak_mb():
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    from wsi_pipeline.config import TilingConfig
    from wsi_pipeline.sources.registry import open_source
    from wsi_pipeline.tiling import tile_slide

    before = peak_mb()
    with open_source("wsi", sys.argv[1]) as source:
        if sys.argv[2] == "thumbnail":
            rgb, _ = source.thumbnail(float(sys.argv[3]))
            result = {"shape": list(rgb.shape)}
        else:
            tiling = tile_slide(source, TilingConfig(mpp=0.5, tile_px=256))
            result = {"kept": int(len(tiling.coords)), "mask": list(tiling.tissue.tissue.shape)}
    print(json.dumps({**result, "imports_mb": before, "peak_mb": peak_mb()}))
    """
)


def probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.slow
def test_a_150000_by_100000_slide_tiles_in_bounded_memory(tmp_path):
    # 15 Gpx: 45 GB of RGB at level 0, 15 Mpx at 8 µm/px; a little tissue, so the test is quick.
    path = tmp_path / "huge.tiff"
    write_large_slide(path, 150_000, 100_000, mpp=0.25, tissue_fraction=0.008, seed=0, workers=2)
    report = probe(str(path), "tile")
    assert report["kept"] > 300
    # Segmented coarser than 8 µm/px so the thumbnail stays under max_thumbnail_megapixels (4).
    assert report["mask"][0] * report["mask"][1] <= 4.05e6
    assert report["peak_mb"] - report["imports_mb"] < 250, report


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.slow
def test_a_flat_slide_thumbnail_is_streamed(tmp_path):
    # No pyramid: the thumbnail must come from level 0, read in bands, not as one 16k x 12k image
    # (768 MB as OpenSlide's RGBA).
    path = tmp_path / "flat.tiff"
    write_large_slide(path, 16_000, 12_000, mpp=0.25, tissue_fraction=0.3, seed=1, flat=True, workers=2)
    report = probe(str(path), "thumbnail", "8.0")
    assert report["shape"] == [375, 500, 3]
    assert report["peak_mb"] - report["imports_mb"] < 300, report
