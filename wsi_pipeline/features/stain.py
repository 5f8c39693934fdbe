"""Stain normalisation of H&E tiles on the device, in batches: Reinhard (2001) and Macenko (2009).

Every function takes a batch of RGB tiles as a ``(B, 3, H, W)`` tensor (a single ``(3, H, W)``
tile is accepted too), ``uint8`` or floating point in ``[0, 255]``, on any device. The
normalised batch comes back with the input's shape and dtype: ``uint8`` in gives ``uint8`` out
(rounded), a float tensor gives the same float dtype, in ``[0, 255]``.

The per-batch functions (:func:`normalise_reinhard`, :func:`normalise_macenko`,
:func:`normalise`) never move data to the host and never loop over images in Python, so on a
GPU they queue kernels and return: no ``.item()``, no boolean-mask indexing (which needs the
mask's count on the host), no ``torch.linalg`` solver that checks its error codes on the host
(``eigh``, ``solve``, ``lstsq`` all do). The 3x3 eigenproblem and the 2x2 least-squares system of
Macenko are solved in closed form instead; masked statistics and percentiles use per-image
weights and a sort. Fitting a target (:func:`fit_reinhard`, :func:`fit_macenko`) runs once per
cohort or slide and may synchronise.

Targets are small frozen dataclasses, rounded on construction so that their :meth:`to_dict`
is stable to hash (it is meant to go into an encoder's store key): the reference statistics
*and* every parameter that changes the output live in the target.

References
----------
E. Reinhard, M. Adhikhmin, B. Gooch, P. Shirley, "Color transfer between images",
IEEE Computer Graphics and Applications 21(5), 2001.
M. Macenko et al., "A method for normalizing histology slides for quantitative analysis",
ISBI 2009, pp. 1107-1110.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------
# sRGB <-> CIELAB (D65, 2 degree observer): the IEC 61966-2-1 sRGB curve and primaries and the
# CIE 1976 L*a*b* formulas, with the constants scikit-image uses so results agree with it.
# ----------------------------------------------------------------------------------------------

#: Linear sRGB -> XYZ (D65).
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
#: D65 reference white, 2 degree observer.
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: CIE's (6/29)^3 and its slope; skimage uses these rounded values, so do we.
_LAB_EPSILON = 0.008856
_LAB_KAPPA = 7.787
_LAB_F_EPSILON = 0.2068966  # (6/29), the f() value at _LAB_EPSILON


@lru_cache(maxsize=32)
def _lab_constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Built once per device and dtype: a host-to-device copy per batch would stall a GPU queue.
    return (
        torch.as_tensor(_XYZ_FROM_RGB / _WHITE_D65[:, None], dtype=dtype).to(device),
        torch.as_tensor(_RGB_FROM_XYZ * _WHITE_D65[None, :], dtype=dtype).to(device),
        torch.as_tensor(_WHITE_D65, dtype=dtype).to(device),
    )


def _channel_matmul(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``matrix @ pixel`` for every pixel of a ``(..., 3, H, W)`` tensor."""
    return torch.einsum("ij,...jhw->...ihw", matrix, image)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in ``[0, 1]`` to CIELAB (D65), batched.

    Parameters
    ----------
    rgb : torch.Tensor
        ``(..., 3, H, W)`` floating-point sRGB values in ``[0, 1]``, any device.

    Returns
    -------
    torch.Tensor
        Same shape and dtype: ``L*`` in ``[0, 100]``, ``a*`` and ``b*`` roughly in ``[-128, 127]``.
        Matches :func:`skimage.color.rgb2lab` to float rounding.
    """
    to_xyz, _, _ = _lab_constants(rgb.device, rgb.dtype)
    linear = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _channel_matmul(to_xyz, linear)  # already divided by the reference white
    # The clamp keeps the cube root's unused branch finite (no NaN from negative values).
    f = torch.where(xyz > _LAB_EPSILON, xyz.clamp(min=_LAB_EPSILON) ** (1.0 / 3.0), _LAB_KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65) to sRGB in ``[0, 1]``, batched; out-of-gamut colours are clipped.

    Parameters
    ----------
    lab : torch.Tensor
        ``(..., 3, H, W)`` floating-point ``L*a*b*``, any device.

    Returns
    -------
    torch.Tensor
        Same shape and dtype, sRGB clipped to ``[0, 1]``. Matches :func:`skimage.color.lab2rgb`
        (which also sets negative Z to 0 before converting).
    """
    _, from_xyz, _ = _lab_constants(lab.device, lab.dtype)
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, (fy - b / 200.0).clamp(min=0.0)), dim=-3)
    xyz = torch.where(f > _LAB_F_EPSILON, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA)
    linear = _channel_matmul(from_xyz, xyz)
    rgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * linear
    )
    return rgb.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------

#: Digits targets are rounded to: far below what changes a uint8 pixel, far above float32 noise
#: between devices, so a target fitted on a GPU and on a CPU usually hash the same.
ROUND_DIGITS = 4


def _round(values: Iterable[float]) -> tuple[float, ...]:
    # "+ 0.0" turns -0.0 into 0.0 so that equal targets serialise identically.
    return tuple(round(float(v), ROUND_DIGITS) + 0.0 for v in values)


def _as_batch(tiles: Any) -> torch.Tensor:
    """A ``(B, 3, H, W)`` view of a batch or single tile (tensor or array), dtype unchanged."""
    batch = tiles if isinstance(tiles, torch.Tensor) else torch.as_tensor(np.asarray(tiles))
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected RGB tiles shaped (B, 3, H, W) or (3, H, W), got {tuple(batch.shape)}")
    return batch


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 stays float64 (tests, CPU references); everything else, uint8 and half precision
    # included, is computed in float32: log/exp/pow in float16 lose whole intensity levels.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _restore(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast a float result in ``[0, 255]`` back to ``like``'s dtype (rounded for integers)."""
    out = out.clamp(0.0, 255.0)
    if like.dtype.is_floating_point:
        return out.to(like.dtype)
    return out.round().to(like.dtype)


def _iter_batches(tiles: Any) -> Iterable[torch.Tensor]:
    """One batch, a single tile, or an iterable of batches, as ``(B, 3, H, W)`` batches."""
    if isinstance(tiles, torch.Tensor | np.ndarray):
        yield _as_batch(tiles)
        return
    for batch in tiles:
        yield _as_batch(batch)


def _masked_mean_std(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and population std of ``(B, C, N)`` values over 0/1 weights ``(B, N)``."""
    count = weights.sum(-1)  # (B,)
    denom = count.clamp(min=1.0)[:, None]
    mean = (values * weights[:, None]).sum(-1) / denom
    var = (((values - mean[..., None]) ** 2) * weights[:, None]).sum(-1) / denom
    return mean, var.sqrt(), count


def _masked_percentile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """Percentile ``q`` (numpy's default 'linear' rule) of ``(B, ..., N)`` values over a ``(B, N)`` mask.

    A sort with masked-out values pushed to the end and a gather at each image's own rank:
    ``torch.quantile`` has no mask and ``kthvalue`` takes one ``k`` for the whole batch. Rows with
    an empty mask give 0 (callers flag them invalid).
    """
    mask = mask.reshape(mask.shape[0], *([1] * (values.ndim - 2)), mask.shape[-1]).expand_as(values)
    ordered = torch.where(mask, values, torch.full_like(values, math.inf)).sort(dim=-1).values
    count = mask.sum(-1, keepdim=True)
    last = (count - 1).clamp(min=0)
    # The rank q/100 * (n - 1) in integer millionths: exact for any pixel count (float32 is not
    # beyond 2^24 pooled pixels) and on devices without float64.
    scaled = last * round(q * 10_000)
    lower = scaled // 1_000_000
    fraction = (scaled - lower * 1_000_000).to(values.dtype) / 1_000_000
    low = ordered.gather(-1, lower)
    high = ordered.gather(-1, torch.minimum(lower + 1, last))
    result = low + fraction * (high - low)
    return torch.where(count > 0, result, torch.zeros_like(result)).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Reinhard
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReinhardTarget:
    """Reinhard's target: per-channel CIELAB mean and standard deviation of tissue pixels.

    Attributes
    ----------
    mean, std : tuple of 3 floats
        ``L*``, ``a*``, ``b*`` mean and population standard deviation of the reference's tissue.
    l_threshold : float
        Pixels with ``L* >= l_threshold`` are background (glass): excluded from every statistic
        and passed through unchanged.
    min_pixels : int
        An image with fewer tissue pixels (or a flat channel) is passed through unchanged.

    The original paper works in Ruderman's l-alpha-beta space; CIELAB is the usual choice for
    H&E and keeps the conversion exact and invertible.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    l_threshold: float = 90.0
    min_pixels: int = 64
    method: str = field(default="reinhard", init=False, repr=False)

    def __post_init__(self) -> None:
        mean, std = _round(self.mean), _round(self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("ReinhardTarget needs 3 means and 3 standard deviations (L*, a*, b*)")
        if min(std) <= 0:
            raise ValueError(f"ReinhardTarget standard deviations must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "l_threshold", float(self.l_threshold))
        object.__setattr__(self, "min_pixels", int(self.min_pixels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, rounded dict (``method`` included) for store keys and provenance."""
        d = asdict(self)
        return {"method": d.pop("method"), **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReinhardTarget:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if d.pop("method", "reinhard") != "reinhard":
            raise ValueError(f"not a Reinhard target: {d}")
        return cls(**d)


@lru_cache(maxsize=64)
def _reinhard_tensors(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(mean, dtype=dtype).to(device)[None, :, None],
        torch.tensor(std, dtype=dtype).to(device)[None, :, None],
    )


def _tissue_lab(batch: torch.Tensor, l_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened ``(B, 3, N)`` CIELAB of a ``[0, 255]`` batch and its ``(B, N)`` 0/1 tissue weights."""
    x = batch.to(_work_dtype(batch.dtype))
    lab = rgb_to_lab(x / 255.0).flatten(2)
    return lab, (lab[:, 0] < l_threshold).to(lab.dtype)


def fit_reinhard(tiles: Any, *, l_threshold: float = 90.0, min_pixels: int = 64) -> ReinhardTarget:
    """Fit a :class:`ReinhardTarget` on reference tiles, pooling all their tissue pixels.

    Parameters
    ----------
    tiles : tensor, array, or iterable of them
        A ``(B, 3, H, W)`` batch (or one ``(3, H, W)`` tile) in ``[0, 255]``, or an iterable of
        batches (a cohort sample, a slide's tiles), on any device.
    l_threshold, min_pixels
        Stored in the target; see :class:`ReinhardTarget`.

    Raises
    ------
    ValueError
        When the tiles hold fewer than ``min_pixels`` tissue pixels.
    """
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0.0
    for batch in _iter_batches(tiles):
        lab, weights = _tissue_lab(batch, l_threshold)
        lab, weights = lab.double(), weights.double()
        # Sums in float64 over all images of the batch: the pooled mean and variance are exact
        # whatever the batch split, unlike an average of per-batch statistics.
        total += (lab * weights[:, None]).sum((0, 2)).cpu()
        total_sq += (lab**2 * weights[:, None]).sum((0, 2)).cpu()
        count += float(weights.sum())
    if count < max(min_pixels, 1):
        raise ValueError(f"Reinhard reference has {int(count)} tissue pixels (L* < {l_threshold}); need {min_pixels}")
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=0.0).sqrt()
    return ReinhardTarget(mean=tuple(mean.tolist()), std=tuple(std.tolist()), l_threshold=l_threshold, min_pixels=min_pixels)


def normalise_reinhard(batch: torch.Tensor, target: ReinhardTarget, *, source: ReinhardTarget | None = None) -> torch.Tensor:
    """Match each image's tissue CIELAB mean and std to ``target``'s, per channel.

    Parameters
    ----------
    batch : torch.Tensor
        ``(B, 3, H, W)`` or ``(3, H, W)``, uint8 or float in ``[0, 255]``, any device.
    target : ReinhardTarget
        Reference statistics; its ``l_threshold`` and ``min_pixels`` define tissue for the batch too.
    source : ReinhardTarget, optional
        Source statistics to use for every image instead of each image's own, e.g. fitted with
        :func:`fit_reinhard` on a sample of the slide these tiles come from (then every tile of
        the slide gets the same transform). Only its ``mean`` and ``std`` are used.

    Returns
    -------
    torch.Tensor
        Input shape and dtype. Background pixels (``L* >= target.l_threshold``) are passed through
        bit for bit; with per-image statistics, an image with fewer than ``target.min_pixels``
        tissue pixels or a flat channel (std < 1e-3) is passed through whole.
    """
    single = batch.ndim == 3
    x = _as_batch(batch)
    b, _, h, w = x.shape
    lab, weights = _tissue_lab(x, target.l_threshold)
    dtype, device = lab.dtype, lab.device
    target_mean, target_std = _reinhard_tensors(target.mean, target.std, device, dtype)
    if source is None:
        source_mean, source_std, count = _masked_mean_std(lab, weights)
        valid = (count >= target.min_pixels) & (source_std.amin(-1) > 1e-3)
        source_mean, source_std = source_mean[..., None], source_std.clamp(min=1e-3)[..., None]
    else:
        source_mean, source_std = _reinhard_tensors(source.mean, source.std, device, dtype)
        valid = torch.ones(b, dtype=torch.bool, device=device)
    out_lab = (lab - source_mean) * (target_std / source_std) + target_mean
    out = lab_to_rgb(out_lab.reshape(b, 3, h, w)) * 255.0
    apply = (weights.reshape(b, 1, h, w) > 0) & valid[:, None, None, None]
    # Pass-through pixels come back bit for bit, also for uint8 (no float round trip).
    out = torch.where(apply, _restore(out, x), x)
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# Macenko
# ----------------------------------------------------------------------------------------------

#: Reference H&E optical-density vectors (rows: haematoxylin, eosin; unit length) and 99th
#: percentile concentrations published with the widely used Macenko implementations (the
#: ``HERef`` / ``maxCRef`` of the reference code; those were computed with I0 = 240).
REFERENCE_HE_STAINS: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.5626, 0.7201, 0.4062),
    (0.2159, 0.8012, 0.5581),
)
REFERENCE_HE_MAX_CONC: tuple[float, float] = (1.9705, 1.0308)

#: The two estimated stain vectors must be at least this far apart (sin^2 of ~1 degree) for
#: the 2x2 least-squares system to be meaningful; closer means one colour, not two stains.
_MIN_STAIN_SIN2 = 3e-4
#: Smallest usable 99th-percentile concentration of a stain (below: the stain is absent).
_MIN_MAX_CONC = 1e-3


@dataclass(frozen=True)
class MacenkoTarget:
    """Macenko's target: a stain matrix and robust maximum concentrations, plus the parameters.

    The default-constructed ``MacenkoTarget()`` is the published reference H&E target, so
    normalisation works without a reference image.

    Attributes
    ----------
    stains : 2 x 3 floats
        Stain matrix as rows ``(haematoxylin, eosin)``, each a unit optical-density vector
        ``(R, G, B)``: the transpose of the paper's 3 x 2 matrix ``V``. OD = concentrations @ stains.
    max_conc : 2 floats
        ``conc_percentile``-th percentile of each stain's concentration over tissue pixels.
    io : float
        Transmitted (background) light intensity I0; OD = -ln(max(I, 1) / io).
    beta : float
        Pixels whose OD is below ``beta`` in any channel are background: excluded from the
        stain estimate (they are still reconstructed, so white stays white).
    alpha : float
        Percentile of the angle extremes in the plane of the two main OD eigenvectors
        (``alpha`` and ``100 - alpha``).
    conc_percentile : float
        Percentile taken as each stain's maximum concentration.
    min_pixels : int
        An image with fewer tissue pixels, or whose stains cannot be told apart, is passed
        through unchanged.
    """

    stains: tuple[tuple[float, float, float], tuple[float, float, float]] = REFERENCE_HE_STAINS
    max_conc: tuple[float, float] = REFERENCE_HE_MAX_CONC
    io: float = 255.0
    beta: float = 0.15
    alpha: float = 1.0
    conc_percentile: float = 99.0
    min_pixels: int = 64
    method: str = field(default="macenko", init=False, repr=False)

    def __post_init__(self) -> None:
        stains = tuple(_round(row) for row in self.stains)
        max_conc = _round(self.max_conc)
        if len(stains) != 2 or any(len(row) != 3 for row in stains) or len(max_conc) != 2:
            raise ValueError("MacenkoTarget needs a 2 x 3 stain matrix (rows H, E) and 2 max concentrations")
        if min(max_conc) <= 0:
            raise ValueError(f"MacenkoTarget max concentrations must be positive, got {max_conc}")
        object.__setattr__(self, "stains", stains)
        object.__setattr__(self, "max_conc", max_conc)
        for name in ("io", "beta", "alpha", "conc_percentile"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "min_pixels", int(self.min_pixels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, rounded dict (``method`` included) for store keys and provenance."""
        d = asdict(self)
        return {
            "method": d.pop("method"),
            **d,
            "stains": [list(row) for row in self.stains],
            "max_conc": list(self.max_conc),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MacenkoTarget:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if d.pop("method", "macenko") != "macenko":
            raise ValueError(f"not a Macenko target: {d}")
        return cls(**d)


@lru_cache(maxsize=64)
def _macenko_tensors(stains: tuple, max_conc: tuple, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(stains, dtype=dtype).to(device), torch.tensor(max_conc, dtype=dtype).to(device)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _det3(m: torch.Tensor) -> torch.Tensor:
    """Determinants of ``(B, 3, 3)`` matrices by cofactors (``torch.det`` goes through an LU solver)."""
    return (
        m[:, 0, 0] * (m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
        - m[:, 0, 1] * (m[:, 1, 0] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 0])
        + m[:, 0, 2] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0])
    )


def _od_plane(cov: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormal ``(e1, e2)`` spanning the two largest eigenvectors of 3x3 covariances, batched.

    The same plane ``torch.linalg.eigh`` gives, in closed form (``eigh`` checks its error codes
    on the host, one synchronisation per batch on a GPU): the smallest eigenvalue from the
    trigonometric solution of the characteristic cubic (O. K. Smith, CACM 1961), its eigenvector
    as the largest cross product of two rows of ``cov - lambda I``, the plane as its orthogonal
    complement, and ``e1`` as the principal axis of the covariance restricted to the plane
    (``0.5 * atan2(2b, a - c)`` for a 2x2 ``[[a, b], [b, c]]``). ``e1`` points along the mean
    OD, so angles measured from it stay inside (-pi/2, pi/2) for non-negative OD.

    Returns ``e1``, ``e2`` ``(B, 3)`` and ``ok`` ``(B,)``: false where the smallest eigenvalue is
    not separated (the data do not span a plane).
    """
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device)
    q = cov.diagonal(dim1=-2, dim2=-1).sum(-1) / 3.0  # (B,)
    off = cov[:, 0, 1] ** 2 + cov[:, 0, 2] ** 2 + cov[:, 1, 2] ** 2
    centred = cov - q[:, None, None] * eye
    p = ((centred.diagonal(dim1=-2, dim2=-1) ** 2).sum(-1) + 2.0 * off) / 6.0
    p = p.clamp(min=1e-30).sqrt()
    r = (_det3(centred / p[:, None, None]) / 2.0).clamp(-1.0, 1.0)
    phi = torch.acos(r) / 3.0
    smallest = q + 2.0 * p * torch.cos(phi + 2.0 * math.pi / 3.0)

    rows = cov - smallest[:, None, None] * eye
    crosses = torch.stack(
        (_cross(rows[:, 0], rows[:, 1]), _cross(rows[:, 0], rows[:, 2]), _cross(rows[:, 1], rows[:, 2])), dim=1
    )  # (B, 3, 3)
    norms = crosses.norm(dim=-1)  # (B, 3)
    best = norms.argmax(-1)
    normal = crosses.gather(1, best[:, None, None].expand(-1, 1, 3)).squeeze(1)
    # The largest cross product is ~ (lambda1 - lambda3)(lambda2 - lambda3): relative to p^2 it
    # says how well the smallest eigenvalue is separated from the other two.
    ok = norms.amax(-1) > 1e-6 * p**2
    normal = _unit(normal)

    # Any orthonormal basis of the plane: cross the normal with the axis it is least aligned to.
    axis = eye[normal.abs().argmin(-1)]
    u = _unit(_cross(normal, axis))
    w = _cross(normal, u)
    a = torch.einsum("bi,bij,bj->b", u, cov, u)
    b = torch.einsum("bi,bij,bj->b", u, cov, w)
    c = torch.einsum("bi,bij,bj->b", w, cov, w)
    theta = 0.5 * torch.atan2(2.0 * b, a - c)
    e1 = torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * w
    e1 = torch.where(((e1 * mean).sum(-1) < 0)[:, None], -e1, e1)
    e2 = _cross(normal, e1)
    return e1, e2, ok


def _optical_density(x: torch.Tensor, io: float) -> torch.Tensor:
    """``(B, 3, N)`` OD of a ``(B, 3, H, W)`` float batch in ``[0, 255]``; I = 0 is read as 1."""
    return -torch.log(x.flatten(2).clamp(min=1.0) / io)


def _least_squares_rows(stains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-inverse ``(B, 2, 3)`` of stain rows ``(B, 2, 3)``: concentrations = pinv @ OD.

    The 2x2 normal equations are inverted in closed form (``torch.linalg.solve`` and ``lstsq``
    check for singularity on the host). Also returns the Gram determinant ``(B,)``, which for
    unit stains is sin^2 of the angle between them; callers reject tiny values.
    """
    gram = stains @ stains.transpose(1, 2)  # (B, 2, 2)
    det = gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] * gram[:, 1, 0]
    adjugate = torch.stack(
        (torch.stack((gram[:, 1, 1], -gram[:, 0, 1]), -1), torch.stack((-gram[:, 1, 0], gram[:, 0, 0]), -1)), 1
    )
    return adjugate / det.clamp(min=1e-12)[:, None, None] @ stains, det


def _estimate_stains(
    od: torch.Tensor, tissue: torch.Tensor, alpha: float, conc_percentile: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Macenko's estimate for every image of a batch at once.

    Parameters
    ----------
    od : ``(B, 3, N)`` optical densities.
    tissue : ``(B, N)`` bool, the pixels to estimate from.

    Returns
    -------
    stains ``(B, 2, 3)`` (rows H, E, unit), max_conc ``(B, 2)``, ok ``(B,)``.
    """
    weights = tissue.to(od.dtype)
    count = weights.sum(-1)
    mean = (od * weights[:, None]).sum(-1) / count.clamp(min=1.0)[:, None]
    centred = (od - mean[..., None]) * weights[:, None]
    cov = centred @ centred.transpose(1, 2) / (count - 1.0).clamp(min=1.0)[:, None, None]
    e1, e2, ok = _od_plane(cov, mean)

    # Angle of each tissue pixel in the plane; its alpha / (100 - alpha) percentiles are robust
    # versions of the two extreme directions, i.e. the purest haematoxylin and eosin pixels.
    angle = torch.atan2(torch.einsum("bc,bcn->bn", e2, od), torch.einsum("bc,bcn->bn", e1, od))
    low = _masked_percentile(angle, tissue, alpha)
    high = _masked_percentile(angle, tissue, 100.0 - alpha)
    v_low = torch.cos(low)[:, None] * e1 + torch.sin(low)[:, None] * e2
    v_high = torch.cos(high)[:, None] * e1 + torch.sin(high)[:, None] * e2
    # Haematoxylin absorbs red much more than eosin does: the vector with the larger red OD is H.
    low_is_h = (v_low[:, 0] > v_high[:, 0])[:, None]
    stains = torch.stack((torch.where(low_is_h, v_low, v_high), torch.where(low_is_h, v_high, v_low)), dim=1)

    _, det = _least_squares_rows(stains)
    ok = ok & (count >= 2) & (det > _MIN_STAIN_SIN2)
    # Replace unusable estimates by a well-conditioned matrix before solving, so no inf/NaN is
    # ever produced (the caller discards these images anyway).
    fallback = torch.eye(3, dtype=od.dtype, device=od.device)[:2].expand_as(stains)
    stains = torch.where(ok[:, None, None], stains, fallback)
    conc = _least_squares_rows(stains)[0] @ od  # (B, 2, N)
    max_conc = _masked_percentile(conc, tissue, conc_percentile)
    ok = ok & (max_conc > _MIN_MAX_CONC).all(-1)
    return stains, max_conc, ok


def fit_macenko(
    tiles: Any,
    *,
    io: float = 255.0,
    beta: float = 0.15,
    alpha: float = 1.0,
    conc_percentile: float = 99.0,
    min_pixels: int = 64,
    max_pixels_per_batch: int = 1 << 18,
) -> MacenkoTarget:
    """Fit a :class:`MacenkoTarget` on reference tiles, pooling all their tissue pixels.

    Parameters
    ----------
    tiles : tensor, array, or iterable of them
        A ``(B, 3, H, W)`` batch (or one ``(3, H, W)`` tile) in ``[0, 255]``, or an iterable of
        batches (a cohort sample, a sample of one slide's tiles), on any device.
    io, beta, alpha, conc_percentile, min_pixels
        Stored in the target; see :class:`MacenkoTarget`.
    max_pixels_per_batch : int
        Each batch contributes at most this many tissue pixels (an even, deterministic stride
        through them), which bounds memory for large samples; the result does not depend on
        the order of pixels.

    Raises
    ------
    ValueError
        When the tiles hold fewer than ``min_pixels`` tissue pixels or only one colour.
    """
    pooled = []
    for batch in _iter_batches(tiles):
        od = _optical_density(batch.to(_work_dtype(batch.dtype)), io)  # (B, 3, N)
        od = od.transpose(1, 2).reshape(-1, 3)
        od = od[(od >= beta).all(-1)]  # fitting may synchronise: it runs once, not per batch
        if od.shape[0] > max_pixels_per_batch:
            od = od[torch.linspace(0, od.shape[0] - 1, max_pixels_per_batch, device=od.device).long()]
        pooled.append(od)
    od = torch.cat(pooled) if pooled else torch.zeros(0, 3)
    if od.shape[0] < max(min_pixels, 2):
        raise ValueError(f"Macenko reference has {od.shape[0]} tissue pixels (OD >= {beta} in all channels); need {min_pixels}")
    od = od.T[None]  # (1, 3, N): the pooled pixels as one image
    everything = torch.ones(1, od.shape[-1], dtype=torch.bool, device=od.device)
    stains, max_conc, ok = _estimate_stains(od, everything, alpha, conc_percentile)
    if not bool(ok[0]):
        raise ValueError("Macenko reference does not show two distinguishable stains")
    return MacenkoTarget(
        stains=tuple(tuple(row) for row in stains[0].tolist()),
        max_conc=tuple(max_conc[0].tolist()),
        io=io,
        beta=beta,
        alpha=alpha,
        conc_percentile=conc_percentile,
        min_pixels=min_pixels,
    )


def normalise_macenko(
    batch: torch.Tensor, target: MacenkoTarget | None = None, *, source: MacenkoTarget | None = None
) -> torch.Tensor:
    """Re-render each image with ``target``'s stains and concentration range.

    Each image's stains and maximum concentrations are estimated on its own tissue pixels
    (batched: no Python loop over images), its concentrations found by least squares for
    every pixel, rescaled by ``target.max_conc / source max_conc``, and rendered back with
    ``target.stains``: ``I = io * exp(-C @ stains)``.

    Parameters
    ----------
    batch : torch.Tensor
        ``(B, 3, H, W)`` or ``(3, H, W)``, uint8 or float in ``[0, 255]``, any device.
    target : MacenkoTarget, optional
        Reference; ``MacenkoTarget()`` (the published H&E reference) when omitted. Its ``io``,
        ``beta``, ``alpha``, ``conc_percentile`` and ``min_pixels`` are used for the batch too.
    source : MacenkoTarget, optional
        Source stains and max concentrations to use for every image instead of each image's own
        estimate, e.g. fitted with :func:`fit_macenko` on a sample of the slide these tiles come
        from. Only its ``stains`` and ``max_conc`` are used.

    Returns
    -------
    torch.Tensor
        Input shape and dtype. With per-image estimates, an image with fewer than
        ``target.min_pixels`` tissue pixels (e.g. an all-background tile), or whose two stain
        directions cannot be told apart (a single colour), is returned unchanged.
    """
    target = MacenkoTarget() if target is None else target
    single = batch.ndim == 3
    x = _as_batch(batch)
    xf = x.to(_work_dtype(x.dtype))
    od = _optical_density(xf, target.io)
    dtype, device = od.dtype, od.device
    target_stains, target_max = _macenko_tensors(target.stains, target.max_conc, device, dtype)
    if source is None:
        tissue = (od >= target.beta).all(1)
        stains, max_conc, ok = _estimate_stains(od, tissue, target.alpha, target.conc_percentile)
        ok = ok & (tissue.sum(-1) >= target.min_pixels)
    else:
        source_stains, source_max = _macenko_tensors(source.stains, source.max_conc, device, dtype)
        stains, max_conc = source_stains.expand(x.shape[0], 2, 3), source_max.expand(x.shape[0], 2)
        ok = torch.ones(x.shape[0], dtype=torch.bool, device=device)
    conc = _least_squares_rows(stains)[0] @ od  # (B, 2, N)
    scale = target_max / torch.where(ok[:, None], max_conc, target_max).clamp(min=_MIN_MAX_CONC)
    rendered = target.io * torch.exp(-torch.einsum("bkn,kc->bcn", conc * scale[..., None], target_stains))
    out = torch.where(ok[:, None, None, None], rendered.reshape(x.shape), xf)
    out = torch.where(ok[:, None, None, None], _restore(out, x), x)
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------

StainTarget = ReinhardTarget | MacenkoTarget


class StainMethod(NamedTuple):
    """How to fit a target, normalise a batch to it, and rebuild the target from its dict."""

    fit: Callable[..., StainTarget]
    normalise: Callable[..., torch.Tensor]
    target: type[StainTarget]


#: Method name (as in ``target.method`` and ``to_dict()['method']``) to its functions.
STAIN_METHODS: dict[str, StainMethod] = {
    "reinhard": StainMethod(fit_reinhard, normalise_reinhard, ReinhardTarget),
    "macenko": StainMethod(fit_macenko, normalise_macenko, MacenkoTarget),
}


def target_from_dict(d: Mapping[str, Any]) -> StainTarget:
    """Rebuild any target from its :meth:`to_dict` output (dispatching on ``'method'``)."""
    try:
        method = STAIN_METHODS[d["method"]]
    except KeyError:
        raise ValueError(f"unknown stain normalisation target {dict(d)!r}; methods: {', '.join(STAIN_METHODS)}") from None
    return method.target.from_dict(d)


def normalise(batch: torch.Tensor, target: StainTarget, *, source: StainTarget | None = None) -> torch.Tensor:
    """Normalise a batch to ``target`` with the target's method (see the per-method functions).

    ``source``, when given, must be the same kind of target, fitted on the slide the batch comes
    from; otherwise each image's own statistics are used.
    """
    if source is not None and type(source) is not type(target):
        raise TypeError(f"source is a {type(source).__name__}, target a {type(target).__name__}")
    try:
        method = STAIN_METHODS[target.method]
    except (AttributeError, KeyError):
        raise TypeError(f"not a stain normalisation target: {target!r}") from None
    return method.normalise(batch, target, source=source)
