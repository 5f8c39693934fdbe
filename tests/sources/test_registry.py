"""Sources by name: the built-in ``wsi``, code registrations, and third-party entry points."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import tifffile

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import TileSource
from wsi_pipeline.sources.registry import (
    ENTRY_POINT_GROUP,
    get_source_factory,
    open_source,
    register_source,
    source_names,
    unregister_source,
)
from wsi_pipeline.sources.wsi import OpenSlideSource


@pytest.fixture()
def slide(tmp_path):
    path = tmp_path / "s.tiff"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(128, 128), photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    return path


def test_wsi_is_built_in_and_meets_the_protocol(slide):
    assert "wsi" in source_names()
    with open_source("wsi", slide, mpp_override=0.3) as source:
        assert isinstance(source, OpenSlideSource) and isinstance(source, TileSource)
        assert source.mpp == 0.3


def test_unknown_source_suggests_the_closest_name():
    with pytest.raises(WSIPipelineError) as caught:
        get_source_factory("wsii", where="workflows/x.yaml: modality")
    message = caught.value.format()
    assert "Did you mean 'wsi'" in message and "workflows/x.yaml: modality" in message and ENTRY_POINT_GROUP in message


def test_a_source_registered_in_code_is_used(slide):
    opened = []

    def factory(path, mpp_override=None):
        opened.append((path, mpp_override))
        return OpenSlideSource(path, mpp_override)

    register_source("custom", factory)
    try:
        with open_source("custom", slide, mpp_override=0.4) as source:
            assert source.mpp == 0.4
        assert opened == [(slide, 0.4)] and "custom" in source_names()
    finally:
        unregister_source("custom")
    assert "custom" not in source_names()


def test_a_third_party_entry_point_is_found(tmp_path, slide, monkeypatch):
    """An installed distribution declaring a ``wsi_pipeline.sources`` entry point plugs in by name."""
    package = tmp_path / "site" / "plugin_reader"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from wsi_pipeline.sources.wsi import OpenSlideSource

            class Tagged(OpenSlideSource):
                tag = "from the plug-in"

            def open_tagged(path, mpp_override=None):
                return Tagged(path, mpp_override)
            """
        )
    )
    dist = tmp_path / "site" / "plugin_reader-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-reader\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntagged = plugin_reader:open_tagged\nbroken = plugin_reader:missing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        assert {"tagged", "broken"} <= set(source_names())
        with open_source("tagged", slide) as source:
            assert source.tag == "from the plug-in" and source.mpp == pytest.approx(0.5)
        with pytest.raises(WSIPipelineError, match="registered by entry point 'plugin_reader:missing' but cannot be loaded"):
            get_source_factory("broken")
    finally:
        sys.modules.pop("plugin_reader", None)
