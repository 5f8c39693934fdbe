"""The ``model`` tissue method with tiny TorchScript models built here."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wsi_pipeline.config.workflow import TissueConfig, TissueModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.synthetic import (
    MASK_DOWNSAMPLE,
    SyntheticSlideSpec,
    render_slide,
)
from wsi_pipeline.tiling.tissue import segment_tissue

# Building the test models with torch.jit.trace/save warns on recent torch (TorchScript is
# deprecated there in favour of torch.export); the pipeline's contract is still TorchScript.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:FutureWarning")

SLIDE_MPP = 3.0
MODEL_MPP = 16.0  # not the default thumbnail_mpp (8): the model's own scale must be used


class ColourModel(torch.nn.Module):
    """Tissue logit 40 * ((R + B) / 2 - G - 0.05): H&E is pink to purple, glass grey."""

    def __init__(self, two_classes: bool = False, stride: int = 1) -> None:
        super().__init__()
        self.two_classes = two_classes
        self.conv = torch.nn.Conv2d(3, 1, kernel_size=1, stride=stride)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.5, -1.0, 0.5]).view(1, 3, 1, 1) * 40.0)
            self.conv.bias.fill_(-0.05 * 40.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.conv(x)
        if self.two_classes:
            return torch.cat([-logit, logit], dim=1)  # softmax channel 1 = sigmoid(2 * logit)
        return logit


class Everything(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x[:, :1]) * 10.0


class WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)  # (1, H, W): no channel axis


def save_scripted(module: torch.nn.Module, path) -> str:
    traced = torch.jit.trace(module.eval(), torch.rand(1, 3, 32, 32))
    torch.jit.save(traced, str(path))
    return str(path)


def model_config(path: str, **kwargs) -> TissueConfig:
    return TissueConfig(method="model", model=TissueModelConfig(path=path, mpp=kwargs.pop("mpp", MODEL_MPP), **kwargs))


@pytest.fixture(scope="module")
def he_slide():
    """A plain synthetic H&E slide (4 x 3 mm) and its level-0 tissue truth."""
    spec = SyntheticSlideSpec(width=1365, height=1024, mpp=SLIDE_MPP, positive=False, seed=5)
    rgb, truth = render_slide(spec)
    d = MASK_DOWNSAMPLE
    level0 = np.repeat(np.repeat(truth.tissue_mask, d, axis=0), d, axis=1)[: spec.height, : spec.width]
    return rgb, level0


@pytest.mark.parametrize(
    "two_classes, stride", [(False, 1), (True, 2)], ids=["sigmoid", "softmax-half-resolution"]
)
def test_model_mask_matches_truth_at_the_models_mpp(
    he_slide, array_source, on_grid, dice_of, tmp_path, two_classes, stride
):
    rgb, truth = he_slide
    path = save_scripted(ColourModel(two_classes, stride), tmp_path / "colour.pt")
    source = array_source(rgb, SLIDE_MPP)
    result = segment_tissue(source, model_config(path, tissue_channel=1))
    assert source.thumbnail_calls == [MODEL_MPP]
    assert result.mpp == pytest.approx(MODEL_MPP, rel=0.01)
    assert result.tissue.shape == (192, 256)  # 4 x 3 mm at 16 µm/px
    assert result.modality == "brightfield" and not result.pen.any()
    assert dice_of(result.tissue, on_grid(truth, result.tissue.shape)) >= 0.85


def test_model_output_is_used_not_a_fallback(he_slide, array_source, tmp_path):
    rgb, _ = he_slide
    path = save_scripted(Everything(), tmp_path / "everything.pt")
    result = segment_tissue(array_source(rgb, SLIDE_MPP), model_config(path))
    assert result.tissue.all()


def test_model_mpp_finer_than_the_slide_is_clamped(array_source, tmp_path):
    path = save_scripted(Everything(), tmp_path / "everything.pt")
    source = array_source(np.full((64, 96, 3), 240, np.uint8), 2.0)
    result = segment_tissue(source, model_config(path, mpp=0.5))
    assert source.thumbnail_calls == [2.0]
    assert result.mpp == pytest.approx(2.0) and result.tissue.shape == (64, 96)


def test_missing_model_file(array_source, tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(WSIPipelineError) as error:
        segment_tissue(array_source(np.zeros((8, 8, 3), np.uint8), 1.0), model_config(str(missing)))
    assert error.value.where == f"tiling.tissue.model.path: {missing}"
    assert "TorchScript" in error.value.fix


@pytest.mark.parametrize("content", ["text", "state_dict"])
def test_file_that_is_not_torchscript(array_source, tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "text":
        path.write_bytes(b"this is not a model\n")
    else:
        torch.save(ColourModel().state_dict(), path)  # a checkpoint, not TorchScript
    with pytest.raises(WSIPipelineError, match="not a TorchScript file") as error:
        segment_tissue(array_source(np.zeros((8, 8, 3), np.uint8), 1.0), model_config(str(path)))
    assert error.value.where == f"tiling.tissue.model.path: {path}"
    assert "torch.jit.save" in error.value.fix


def test_model_with_wrong_output_shape(array_source, tmp_path):
    path = save_scripted(WrongShape(), tmp_path / "wrong.pt")
    with pytest.raises(WSIPipelineError, match=r"returned \(1, 8, 8\)") as error:
        segment_tissue(array_source(np.zeros((8, 8, 3), np.uint8), 1.0), model_config(path, mpp=1.0))
    assert "(1, 1, h, w)" in error.value.fix


def test_tissue_channel_beyond_the_outputs(array_source, tmp_path):
    path = save_scripted(ColourModel(two_classes=True), tmp_path / "two.pt")
    with pytest.raises(WSIPipelineError, match="2 channels") as error:
        segment_tissue(array_source(np.zeros((8, 8, 3), np.uint8), 1.0), model_config(path, tissue_channel=2))
    assert error.value.where == "tiling.tissue.model.tissue_channel"
