"""Stain normalisation (Reinhard, Macenko): against skimage, against small numpy references written
here from the papers' formulas, and on synthetic H&E tiles rendered with known stains (Beer-Lambert)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from wsi_pipeline.features.stain import (
    REFERENCE_HE_STAINS,
    STAIN_METHODS,
    MacenkoTarget,
    ReinhardTarget,
    _od_plane,
    fit_macenko,
    fit_reinhard,
    lab_to_rgb,
    normalise,
    normalise_macenko,
    normalise_reinhard,
    rgb_to_lab,
    target_from_dict,
)

#: Two H&E stain sets (rows H, E; unit OD vectors): A is the published reference, B is bluer
#: haematoxylin and a more magenta eosin, ~8 degrees away from A's.
STAINS_A = np.array(REFERENCE_HE_STAINS)
STAINS_B = np.array([[0.65, 0.70, 0.29], [0.30, 0.83, 0.47]])
STAINS_B /= np.linalg.norm(STAINS_B, axis=1, keepdims=True)
SIZE = 64


def concentrations(seed: int, size: int = SIZE) -> np.ndarray:
    """(2, size, size) H and E concentrations: glass, pure H, pure E, and H+E mixtures."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=(size, size), p=[0.25, 0.15, 0.25, 0.35])
    h = np.select([kind == 1, kind == 3], [rng.uniform(0.4, 1.5, kind.shape), rng.uniform(0.2, 1.0, kind.shape)], 0.0)
    e = np.select([kind == 2, kind == 3], [rng.uniform(0.8, 1.2, kind.shape), rng.uniform(0.3, 0.9, kind.shape)], 0.0)
    return np.stack([h, e])


def render(conc: np.ndarray, stains: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Beer-Lambert: (3, H, W) float RGB in [0, 255] of concentrations (2, H, W) with stain rows (2, 3)."""
    od = np.einsum("khw,kc->chw", conc, stains)
    rgb = 255.0 * np.exp(-od)
    if noise:
        rgb = rgb + np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    return np.clip(rgb, 0.0, 255.0)


def tile(stains: np.ndarray, seed: int, noise: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(render(concentrations(seed), stains, noise, seed)).float()


def angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(min(1.0, abs(cos))))


# ---------------------------------------------------------------------------- numpy references


def np_macenko_stains(img: np.ndarray, io=255.0, beta=0.15, alpha=1.0):
    """Macenko 2009 on one (3, H, W) image: OD, drop OD < beta, plane of the two largest
    eigenvectors, alpha-percentile angles, H = the vector with the larger red OD."""
    od = -np.log(np.maximum(img.reshape(3, -1).T, 1.0) / io)
    tissue = (od >= beta).all(1)
    t = od[tissue]
    _, vecs = np.linalg.eigh(np.cov(t.T))
    e1, e2 = vecs[:, 2], vecs[:, 1]
    if t.mean(0) @ e1 < 0:
        e1 = -e1
    phi = np.arctan2(t @ e2, t @ e1)
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1, v2 = np.cos(lo) * e1 + np.sin(lo) * e2, np.cos(hi) * e1 + np.sin(hi) * e2
    stains = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])
    conc = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
    return stains, np.percentile(conc[:, tissue], 99, axis=1), od, conc


def np_macenko_normalise(img, target_stains, target_max, io=255.0):
    _, max_conc, _, conc = np_macenko_stains(img, io)
    conc = conc * (np.asarray(target_max) / max_conc)[:, None]
    return np.clip(io * np.exp(-(conc.T @ np.asarray(target_stains))), 0, 255).T.reshape(img.shape)


def np_reinhard_normalise(img, target_mean, target_std, l_threshold=90.0):
    lab = rgb2lab(img.transpose(1, 2, 0) / 255.0)
    tissue = lab[..., 0] < l_threshold
    mean, std = lab[tissue].mean(0), lab[tissue].std(0)
    out_lab = (lab - mean) / std * np.asarray(target_std) + np.asarray(target_mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns when it clips negative Z
        out = lab2rgb(out_lab) * 255.0
    return np.where(tissue[..., None], out, img.transpose(1, 2, 0)).transpose(2, 0, 1)


# ---------------------------------------------------------------------------- CIELAB


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
def test_rgb_lab_round_trip_matches_skimage(dtype, tol):
    rgb = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.0  # black, white and the linear segment near 0 of both curves
    rgb[0, :, 0, 1] = 1.0
    rgb[0, :, 0, 2] = 0.01
    lab = rgb_to_lab(rgb.to(dtype))
    ref = rgb2lab(rgb.permute(0, 2, 3, 1).numpy())
    assert lab.dtype == dtype and lab.shape == rgb.shape
    assert np.abs(lab.permute(0, 2, 3, 1).double().numpy() - ref).max() < tol
    back = lab_to_rgb(torch.from_numpy(ref).permute(0, 3, 1, 2).to(dtype))
    assert np.abs(back.permute(0, 2, 3, 1).double().numpy() - lab2rgb(ref)).max() < tol
    assert (back.double() - rgb).abs().max() < tol


def test_lab_to_rgb_clips_out_of_gamut_like_skimage():
    lab = np.array([[[50.0, 120.0, -120.0], [95.0, -100.0, 100.0], [10.0, 0.0, 90.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lab2rgb(lab)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-9


# ---------------------------------------------------------------------------- Reinhard


def test_reinhard_matches_target_statistics_on_tissue_and_keeps_background():
    source, reference = tile(STAINS_A, seed=1), tile(STAINS_B, seed=2)
    target = fit_reinhard(reference)
    out = normalise_reinhard(source[None], target)[0]
    lab_in = rgb2lab(source.permute(1, 2, 0).numpy() / 255.0)
    tissue = lab_in[..., 0] < target.l_threshold
    assert 0.3 < tissue.mean() < 0.95
    lab_out = rgb2lab(out.permute(1, 2, 0).numpy() / 255.0)[tissue]
    np.testing.assert_allclose(lab_out.mean(0), target.mean, atol=0.3)
    np.testing.assert_allclose(lab_out.std(0), target.std, atol=0.3)
    # and it did move: the source's statistics were far from the target's
    assert np.abs(lab_in[tissue].mean(0) - np.array(target.mean)).max() > 2.0
    assert torch.equal(out[:, torch.from_numpy(~tissue)], source[:, torch.from_numpy(~tissue)])


def test_reinhard_agrees_with_numpy_reference():
    source = tile(STAINS_A, seed=3)
    target = ReinhardTarget(mean=(62.0, 25.0, -12.0), std=(14.0, 9.0, 7.0))
    ours = normalise_reinhard(source.double(), target).numpy()
    ref = np_reinhard_normalise(source.double().numpy(), target.mean, target.std)
    assert np.abs(ours - ref).max() < 1e-6


def test_reinhard_fit_pools_batches_exactly():
    a, b = tile(STAINS_A, seed=4)[None], tile(STAINS_B, seed=5)[None]
    assert fit_reinhard([a, b]) == fit_reinhard(torch.cat([a, b]))
    with pytest.raises(ValueError, match="tissue pixels"):
        fit_reinhard(torch.full((1, 3, 16, 16), 250.0))


# ---------------------------------------------------------------------------- Macenko


@pytest.mark.parametrize("stains", [STAINS_A, STAINS_B], ids=["A", "B"])
def test_macenko_recovers_known_stain_vectors(stains):
    fitted = fit_macenko(tile(stains, seed=6))
    for got, want in zip(fitted.stains, stains, strict=True):  # H first, then E
        assert angle_deg(np.array(got), want) < 2.0
    # max concentrations: 99th percentile of the true tissue concentrations
    conc = concentrations(6)
    od = np.einsum("khw,kc->chw", conc, stains)
    tissue = (od >= 0.15).all(0)
    np.testing.assert_allclose(fitted.max_conc, np.percentile(conc[:, tissue], 99, axis=1), rtol=0.05)


def test_macenko_stains_match_numpy_reference():
    img = tile(STAINS_B, seed=7)
    ref_stains, ref_max, _, _ = np_macenko_stains(img.double().numpy())
    fitted = fit_macenko(img.double())
    np.testing.assert_allclose(np.array(fitted.stains), ref_stains, atol=2e-4)
    np.testing.assert_allclose(fitted.max_conc, ref_max, atol=2e-4)


def test_macenko_normalises_stains_a_to_stains_b():
    conc = concentrations(8)
    image_a = torch.from_numpy(render(conc, STAINS_A, noise=1.0, seed=8)).float()
    target = fit_macenko(tile(STAINS_B, seed=9))  # other pixels, same kind of tissue
    expected = render(conc, STAINS_B)
    out = normalise_macenko(image_a[None], target)[0].numpy()
    before = np.abs(image_a.numpy() - expected).mean()
    after = np.abs(out - expected).mean()
    assert before > 8.0 and after < 2.5 and after < before / 4, (before, after)


def test_macenko_agrees_with_numpy_reference():
    img = tile(STAINS_A, seed=10).double()
    target = MacenkoTarget()
    ours = normalise_macenko(img, target).numpy()
    ref = np_macenko_normalise(img.numpy(), target.stains, target.max_conc)
    assert np.abs(ours - ref).max() < 0.05


def test_default_macenko_target_is_the_published_reference():
    target = MacenkoTarget()
    assert target.stains == ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
    assert target.max_conc == (1.9705, 1.0308) and target.io == 255.0 and target.beta == 0.15
    out = normalise_macenko(tile(STAINS_B, seed=11))
    assert torch.isfinite(out).all() and (out - tile(STAINS_B, seed=11)).abs().mean() > 3.0


def test_macenko_per_slide_source_equals_per_tile_estimate_on_that_tile():
    img = tile(STAINS_B, seed=12)[None]
    target = fit_macenko(tile(STAINS_A, seed=13))
    per_tile = normalise_macenko(img, target)
    per_slide = normalise(img, target, source=fit_macenko(img))
    # the same estimate, only rounded to 4 digits in the fitted source
    assert (per_tile - per_slide).abs().max() < 1.0
    with pytest.raises(TypeError):
        normalise(img, target, source=fit_reinhard(img))


def test_od_plane_matches_eigh():
    a = torch.randn(64, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cov = a @ a.transpose(1, 2)
    mean = torch.rand(64, 3, dtype=torch.float64)
    e1, e2, ok = _od_plane(cov, mean)
    vecs = torch.linalg.eigh(cov).eigenvectors
    assert ok.all() and ((e1 * mean).sum(-1) > 0).all()  # e1 points along the data: no angle wrap-around
    assert torch.allclose((e1 * vecs[..., 2]).sum(-1).abs(), torch.ones(64, dtype=torch.float64), atol=1e-9)
    assert torch.allclose((torch.linalg.cross(e1, e2) * vecs[..., 0]).sum(-1).abs(), torch.ones(64, dtype=torch.float64), atol=1e-9)


# ---------------------------------------------------------------------------- both methods

METHODS = {
    "reinhard": lambda: fit_reinhard(tile(STAINS_B, seed=20)),
    "macenko": lambda: fit_macenko(tile(STAINS_B, seed=20)),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_white_and_single_colour_tiles_come_back_unchanged(method, dtype):
    target = METHODS[method]()
    white = torch.full((3, SIZE, SIZE), 255.0)
    glass = white - torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 8  # light, noisy
    flat = torch.tensor([150.0, 60.0, 170.0])[:, None, None].expand(3, SIZE, SIZE)  # one purple colour
    batch = torch.stack([white, glass, flat]).to(dtype)
    out = normalise(batch, target)
    assert out.dtype == dtype and torch.equal(out, batch)


@pytest.mark.parametrize("method", METHODS)
def test_tiles_with_too_little_tissue_come_back_unchanged(method):
    target = METHODS[method]()
    glass = torch.full((3, SIZE, SIZE), 252.0)
    sparse = glass.clone()
    tissue = tile(STAINS_A, seed=28)
    tissue_pixels = (tissue.max(0).values < 200).nonzero()[:40]  # 40 clearly stained pixels
    sparse[:, tissue_pixels[:, 0], tissue_pixels[:, 1]] = tissue[:, tissue_pixels[:, 0], tissue_pixels[:, 1]]
    assert torch.equal(normalise(sparse[None], target)[0], sparse)  # min_pixels = 64
    lenient = type(target).from_dict({**target.to_dict(), "min_pixels": 16})
    assert not torch.equal(normalise(sparse[None], lenient)[0], sparse)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_per_image(method):
    target = METHODS[method]()
    flat = torch.tensor([150.0, 60.0, 170.0])[:, None, None].expand(3, SIZE, SIZE)
    batch = torch.stack([tile(STAINS_A, 21), tile(STAINS_B, 22), torch.full((3, SIZE, SIZE), 255.0), flat, tile(STAINS_A, 23)])
    together = normalise(batch, target)
    one_by_one = torch.cat([normalise(batch[i : i + 1], target) for i in range(len(batch))])
    assert torch.isfinite(together).all()
    assert (together - one_by_one).abs().max() < 1e-3
    assert (together[0] - batch[0]).abs().mean() > 1.0  # tissue tiles did change


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16])
def test_dtype_and_shape_preserved(method, dtype):
    target = METHODS[method]()
    batch = torch.stack([tile(STAINS_A, 24), tile(STAINS_A, 25)]).round().to(dtype)
    out = normalise(batch, target)
    assert out.dtype == dtype and out.shape == batch.shape
    assert out.double().min() >= 0 and out.double().max() <= 255
    single = normalise(batch[0], target)
    assert single.shape == batch[0].shape
    if dtype == torch.uint8:  # uint8 in, the float path rounded
        reference = normalise(batch.float(), target)
        assert (out.float() - reference).abs().max() <= 0.5 + 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_target_dict_round_trip_is_json_and_stable(method):
    target = METHODS[method]()
    d = target.to_dict()
    assert d["method"] == method
    again = target_from_dict(json.loads(json.dumps(d)))
    assert again == target and json.dumps(again.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    assert STAIN_METHODS[method].target.from_dict(d) == target
    # fitted in another precision, the rounded target (what a store key hashes) is the same
    fit = STAIN_METHODS[method].fit
    assert fit(tile(STAINS_B, seed=20).double()).to_dict() == d
    with pytest.raises(ValueError):
        target_from_dict({**d, "method": "vahadane"})


def test_pooled_macenko_fit_from_an_iterable_of_batches():
    a, b = tile(STAINS_A, seed=26)[None], tile(STAINS_A, seed=27)[None]
    pooled = fit_macenko(iter([a, b]))
    assert pooled == fit_macenko(torch.cat([a, b]))
    for got, want in zip(pooled.stains, STAINS_A, strict=True):
        assert angle_deg(np.array(got), want) < 2.0
    with pytest.raises(ValueError, match="tissue pixels"):
        fit_macenko(torch.full((2, 3, 16, 16), 255, dtype=torch.uint8))
