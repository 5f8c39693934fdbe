"""TransMIL (Shao et al., NeurIPS 2021): ``transmil``.

The TPT module: instances are embedded (Linear -> ReLU); the sequence is squared, i.e.
extended to the next square number of tokens by repeating its first instances; a learned
class token is prepended; a Nyström self-attention layer mixes the tokens; the PPEG module
adds position information by reshaping the instance tokens to a square grid and adding
depthwise convolutions of kernel 7, 5 and 3 (the class token bypasses it); a second attention
layer follows; the layer-normed class token is scored by a linear head.

The order of the instances matters (PPEG and the grouping of tokens into landmarks are
positional), so TransMIL is **not** permutation invariant: bags are scored in the order given.

Defaults follow the reference implementation (szc19990412/TransMIL, ``models/TransMIL.py``):
hidden 512, 8 heads of hidden / 8, hidden / 2 landmarks (256), 6 pseudo-inverse iterations, a value
residual of depthwise kernel 33, dropout 0.1 after the attention's output projection, no
dropout elsewhere. The Nyström attention is written here after Xiong et al. (AAAI 2021) with
the choices of the ``nystrom-attention`` package the reference uses: landmarks are means of
consecutive token groups; the sequence is zero-padded at the front to a multiple of the
landmarks and those zero tokens are not masked (the reference does not mask them either).

Padding of a batch never changes a result: each bag is run alone on its real instances (the
square grid depends on a bag's own size). Attention: the exact softmax attention of the class
token over the instance tokens in the last layer, averaged over heads, with each repeated
token's weight added to the instance it repeats. (The Nyström approximation of that row can be
negative, so the exact row is reported; it explains the model rather than being used by it.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsi_pipeline.mil.aggregators.base import Aggregator, check_inputs


def iterative_pinv(x: Tensor, iterations: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of the (..., m, m) matrices ``x`` by Razavi et al.'s iteration.

    The starting point is ``x^T / (max row sum * max column sum)`` of absolute values, the
    maxima taken over the whole tensor, as in the Nyströmformer.
    """
    magnitude = x.abs()
    z = x.transpose(-1, -2) / (magnitude.sum(dim=-1).max() * magnitude.sum(dim=-2).max())
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention with the Nyström approximation of the softmax.

    Parameters
    ----------
    dim
        Token size; split into ``heads`` heads of ``dim // heads``.
    heads, landmarks, pinv_iterations
        Number of heads, of landmarks, and of pseudo-inverse iterations.
    residual_kernel
        Kernel length of the depthwise convolution of the values added to the output (0: none).
    dropout
        Dropout after the output projection.
    """

    def __init__(self, dim: int, heads: int, landmarks: int, pinv_iterations: int, residual_kernel: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.landmarks, self.pinv_iterations = heads, landmarks, pinv_iterations
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.residual = (
            nn.Conv2d(heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0), groups=heads, bias=False)
            if residual_kernel
            else None
        )

    def forward(self, x: Tensor, cls_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend over tokens (B, n, dim) -> (B, n, dim).

        With ``cls_attention``, also return the exact softmax attention (B, n - 1) of token 0
        over tokens 1..n-1, averaged over heads.
        """
        batch, n, dim = x.shape
        pad = (-n) % self.landmarks
        if pad:
            x = F.pad(x, (0, 0, pad, 0))
        length = n + pad
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        q = q * self.scale
        group = length // self.landmarks
        q_landmarks = q.reshape(batch, self.heads, self.landmarks, group, -1).mean(dim=3)
        k_landmarks = k.reshape(batch, self.heads, self.landmarks, group, -1).mean(dim=3)
        kernel_1 = torch.softmax(q @ k_landmarks.transpose(-1, -2), dim=-1)
        kernel_2 = torch.softmax(q_landmarks @ k_landmarks.transpose(-1, -2), dim=-1)
        kernel_3 = torch.softmax(q_landmarks @ k.transpose(-1, -2), dim=-1)
        out = (kernel_1 @ iterative_pinv(kernel_2, self.pinv_iterations)) @ (kernel_3 @ v)
        if self.residual is not None:
            out = out + self.residual(v)
        out = self.to_out(out.transpose(1, 2).reshape(batch, length, dim))[:, pad:]
        row = None
        if cls_attention:
            scores = q[:, :, pad : pad + 1] @ k[:, :, pad + 1 :].transpose(-1, -2)  # (B, heads, 1, n - 1)
            row = torch.softmax(scores, dim=-1).mean(dim=1).squeeze(1)
        return out, row


class _TransLayer(nn.Module):
    """Pre-norm residual attention layer: ``x + attention(LayerNorm(x))``."""

    def __init__(self, dim: int, **attention: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = NystromAttention(dim, **attention)

    def forward(self, x: Tensor, cls_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        out, row = self.attention(self.norm(x), cls_attention)
        return x + out, row


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise convolutions of kernel 7, 5 and 3 on the token grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv7 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.conv5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, tokens: Tensor, side: int) -> Tensor:
        """Tokens (B, 1 + side², dim): the class token first, then the grid row by row."""
        batch, _, dim = tokens.shape
        grid = tokens[:, 1:].transpose(1, 2).reshape(batch, dim, side, side)
        grid = grid + self.conv7(grid) + self.conv5(grid) + self.conv3(grid)
        return torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(Aggregator):
    """Transformer-based correlated MIL (registry name ``transmil``); see the module docstring.

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    hidden_dim
        Token size (reference: 512); a multiple of ``heads``.
    heads
        Attention heads (reference: 8).
    landmarks
        Nyström landmarks; 0 (default): ``hidden_dim // 2``, as the reference sets them from
        its token size (256 at 512). A smaller ``hidden_dim`` then also costs fewer landmarks:
        the pseudo-inverse works on landmarks x landmarks matrices per head.
    pinv_iterations
        Iterations of the pseudo-inverse (reference: 6).
    residual_kernel
        Length of the depthwise convolution of the values (reference: 33; 0 turns it off).
    dropout
        Dropout after each attention's output projection (reference: 0.1).
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        hidden_dim: int = 512,
        heads: int = 8,
        landmarks: int = 0,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_dim, n_outputs)
        if hidden_dim % heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a multiple of heads ({heads})")
        landmarks = landmarks or max(1, hidden_dim // 2)
        attention = {
            "heads": heads, "landmarks": landmarks, "pinv_iterations": pinv_iterations,
            "residual_kernel": residual_kernel, "dropout": dropout,
        }
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_dim))
        self.layer1 = _TransLayer(hidden_dim, **attention)
        self.ppeg = PPEG(hidden_dim)
        self.layer2 = _TransLayer(hidden_dim, **attention)
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, n_outputs)

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (B, n_outputs) and the class token's attention (B, N); each bag runs alone."""
        bags = check_inputs(bags, mask, self.in_dim)
        outputs, attention = [], torch.zeros(mask.shape, dtype=bags.dtype, device=bags.device)
        for b in range(bags.shape[0]):
            output, weights = self._one_bag(bags[b][mask[b]])
            outputs.append(output)
            attention[b, mask[b]] = weights
        return torch.stack(outputs), attention

    def _one_bag(self, instances: Tensor) -> tuple[Tensor, Tensor]:
        h = self.embed(instances)  # (n, hidden)
        n = h.shape[0]
        side = math.isqrt(n - 1) + 1  # ceil(sqrt(n))
        repeated = torch.arange(side * side - n, device=h.device) % n  # the first instances, again
        tokens = torch.cat([self.cls_token[0], h, h[repeated]]).unsqueeze(0)
        tokens, _ = self.layer1(tokens)
        tokens = self.ppeg(tokens, side)
        tokens, row = self.layer2(tokens, cls_attention=True)
        output = self.head(self.norm(tokens[:, 0]))[0]
        weights = row[0, :n].index_add(0, repeated, row[0, n:])
        return output, weights
