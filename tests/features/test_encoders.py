"""Loaded encoders: offline weights (UNI from a checkpoint the test creates), store keys that
follow weights and preprocessing, the demo encoder, precision, compile, batch sizes."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features import ENCODERS, get_encoder_spec, load_encoder
from wsi_pipeline.features.encoder import encoder_id_for
from wsi_pipeline.features.network import build_network


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(WSIPipelineError, match="uni"):
        get_encoder_spec("unii")


def test_missing_uni_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WSIPipelineError, match=r"never downloaded unless features.allow_download[\s\S]*put pytorch_model\.bin in .*/uni"):
        load_encoder("uni", device="cpu")


def test_an_encoder_loads_its_checkpoint_from_the_weights_folder_and_embeds_like_its_network(tmp_path, monkeypatch):
    """The whole path: found in $WSI_PIPELINE_WEIGHTS/<name>/, hashed into the key, loaded, embedded.

    ResNet-50 cut after stage 3, from a checkpoint in torchvision's layout (stage 4 and the
    classifier included, as published): small enough to load at full size here.
    """
    import torchvision

    reference = torchvision.models.resnet50(weights=None).eval()
    folder = tmp_path / "resnet50-trunc"
    folder.mkdir()
    torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    encoder = load_encoder("resnet50-trunc", device="cpu")
    assert encoder.weights_path == str(folder / "pytorch_model.bin")
    assert encoder.encoder_id.startswith("resnet50-trunc-") and len(encoder.weights_sha256) == 64
    assert encoder.provenance()["preprocessing"]["resize_to"] == 224
    assert encoder_id_for("resnet50-trunc") == encoder.encoder_id
    tiles = np.random.default_rng(0).integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    features = encoder.embed(tiles)
    assert features.shape == (2, 1024) and np.isfinite(features).all()
    with torch.inference_mode():
        x = encoder.preprocess(tiles)
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = reference.layer3(reference.layer2(reference.layer1(x))).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_demo_encoder_is_deterministic_and_named_as_demo():
    first = load_encoder("demo-resnet18-random", device="cpu")
    provenance = first.provenance()
    assert provenance["encoder_is_demo"] is True and "DEMO" in provenance["encoder_description"]
    rebuilt = build_network(get_encoder_spec("demo-resnet18-random"), None)
    for key, tensor in rebuilt.state_dict().items():
        torch.testing.assert_close(tensor, first.model.state_dict()[key])
    tiles = np.random.default_rng(1).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    assert first.embed(tiles).shape == (3, 512)


def test_preprocess_resizes_and_normalises():
    encoder = load_encoder("demo-resnet18-random", device="cpu")
    white = np.full((1, 200, 200, 3), 255, dtype=np.uint8)
    batch = encoder.preprocess(white)
    assert tuple(batch.shape) == (1, 3, 128, 128)
    expected = (1 - np.array(encoder.preprocessing.mean)) / np.array(encoder.preprocessing.std)
    np.testing.assert_allclose(batch[0, :, 0, 0].numpy(), expected, rtol=1e-5)


def test_encoder_id_hashes_the_weights_file_and_follows_weights_and_preprocessing(tmp_path, monkeypatch):
    """The key is computed without building the model, and changes with the weights or the preprocessing."""
    import dataclasses

    from wsi_pipeline.features import network

    weights = tmp_path / "uni" / "pytorch_model.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"not a real checkpoint, only hashed")

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model must not be built to compute its store key")

    monkeypatch.setattr(network, "create_network", refuse)
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    first = encoder_id_for("uni")
    assert first.startswith("uni-") and len(first) == len("uni-") + 12
    assert encoder_id_for("uni") == first  # stable
    weights.write_bytes(b"other weights")
    assert encoder_id_for("uni") != first
    second = encoder_id_for("uni")
    spec = ENCODERS["uni"]
    for changed in (dataclasses.replace(spec, pretrained_cfg={**spec.pretrained_cfg, "mean": (0.5, 0.5, 0.5)}),
                    dataclasses.replace(spec, pretrained_cfg={**spec.pretrained_cfg, "interpolation": "bicubic"}),
                    dataclasses.replace(spec, pretrained_cfg={**spec.pretrained_cfg, "crop_pct": 0.875}),
                    dataclasses.replace(spec, output="class_token+mean_patch")):
        monkeypatch.setitem(ENCODERS, "uni", changed)
        assert encoder_id_for("uni") not in (first, second)
    monkeypatch.setitem(ENCODERS, "uni", spec)
    assert encoder_id_for("uni") == second


def test_precision_and_memory_format_follow_the_device():
    from wsi_pipeline.features.encoder import is_convolutional, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) is None and resolve_precision("auto", cuda) is torch.bfloat16
    assert resolve_precision("float16", cpu) is torch.float16 and resolve_precision("float32", cuda) is None
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cuda)
    assert is_convolutional(build_network(get_encoder_spec("demo-resnet18-random"), None))

    assert not is_convolutional(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0))


def test_bfloat16_autocast_on_the_cpu_stays_close_to_float32_and_is_recorded():
    plain = load_encoder("demo-resnet18-random", device="cpu")
    bf16 = load_encoder("demo-resnet18-random", device="cpu", precision="bfloat16")
    assert plain.precision == "float32" and bf16.precision == "bfloat16"
    assert bf16.provenance()["precision"] == "bfloat16" and bf16.encoder_id == plain.encoder_id
    tiles = np.random.default_rng(2).integers(0, 255, (4, 128, 128, 3), dtype=np.uint8)
    exact, approx = plain.embed(tiles), bf16.embed(tiles)
    assert approx.dtype == np.float32
    cosine = (exact * approx).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(approx, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(exact, approx)


def test_tiles_may_arrive_as_tensors_and_auto_batch_is_64_on_the_cpu():
    encoder = load_encoder("demo-resnet18-random", device="cpu")
    tiles = np.random.default_rng(4).integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(encoder.embed(torch.from_numpy(tiles)), encoder.embed(tiles))
    assert encoder.batch_size("auto") == 64 and encoder.batch_size(17) == 17


def test_threads_of_one_process_share_one_encoder_built_once(monkeypatch):
    """A worker's threads asking at once get the same encoder, built once (not once per thread)."""
    import threading

    from wsi_pipeline.features import encoder as encoder_module

    builds = []
    original = encoder_module.build_network

    def counting_build(spec, path):
        builds.append(threading.get_ident())
        return original(spec, path)

    monkeypatch.setattr(encoder_module, "build_network", counting_build)
    encoder_module._load_encoder_cached.cache_clear()
    barrier = threading.Barrier(4)
    got = []

    def load():
        barrier.wait()
        got.append(load_encoder("demo-resnet18-random", device="cpu"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    encoder_module._load_encoder_cached.cache_clear()
    assert len(builds) == 1 and len({id(e) for e in got}) == 1
    assert got[0].encoder_id == load_encoder("demo-resnet18-random", device="cpu").encoder_id


def test_a_compiled_encoder_gives_the_features_of_the_eager_one(monkeypatch):
    """``features.compile`` wraps the network in torch.compile; features must not change."""
    from torch import nn

    from wsi_pipeline.features import encoder as encoder_module
    from wsi_pipeline.features.registry import EncoderSpec, vit_cfg

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = nn.Linear(3, 8)

        def forward(self, batch):
            return self.proj(batch.mean(dim=(2, 3)))

    monkeypatch.setitem(ENCODERS, "tiny-test", EncoderSpec(name="tiny-test", architecture="tiny", factory=Tiny, dim=8, output="pooled",
                                                           pretrained_cfg=vit_cfg(32), random_seed=0))
    encoder_module._load_encoder_cached.cache_clear()
    try:
        eager = load_encoder("tiny-test", device="cpu")
        compiled = load_encoder("tiny-test", device="cpu", compile=True)
        assert compiled.compiled and compiled.provenance()["compiled"] is True and not eager.compiled
        assert compiled.model is not eager.model
        tiles = np.random.default_rng(5).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
        np.testing.assert_allclose(compiled.embed(tiles), eager.embed(tiles), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compiled.embed(tiles[:5]), eager.embed(tiles[:5]), rtol=1e-5, atol=1e-5)
    finally:
        encoder_module._load_encoder_cached.cache_clear()


def test_auto_batch_on_cuda_fits_free_memory_and_halves_on_out_of_memory(monkeypatch):
    """The 'auto' batch rule, with the CUDA memory calls replaced (no GPU here)."""
    from wsi_pipeline.features import encoder as encoder_module

    encoder = load_encoder("demo-resnet18-random", device="cpu")
    peak = {"bytes": 0}
    calls = []

    def fake_embed(tiles):
        n = len(tiles)
        calls.append(n)
        if n > 256:  # the real limit is lower than the estimate: fragmentation, workspaces
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        peak["bytes"] = 1000 + 10_000_000 * n  # 10 MB a tile over a 1 kB base
        return np.zeros((n, 512), np.float32)

    fake_cuda = {
        "empty_cache": lambda: None,
        "reset_peak_memory_stats": lambda device=None: None,
        "memory_allocated": lambda device=None: 1000,
        "max_memory_allocated": lambda device=None: peak["bytes"],
        "mem_get_info": lambda device=None: (8_000_000_000, 16_000_000_000),  # 8 GB free
    }
    for name, function in fake_cuda.items():
        monkeypatch.setattr(torch.cuda, name, function)
    monkeypatch.setattr(encoder, "embed", fake_embed)
    # 70% of 8 GB at 10 MB a tile is 560 tiles: 512 is tried, runs out of memory, 256 is kept.
    assert encoder_module._auto_cuda_batch(encoder) == 256
    assert calls == [16, 512, 256]
