"""H&E colour: stain concentrations to RGB through Beer-Lambert absorption.

Mixing in optical density (not in RGB) is what makes a nucleus on pink stroma purple rather than
grey, as on a real slide.
"""

from __future__ import annotations

import numpy as np

#: Optical density per unit concentration in R, G, B (haematoxylin is blue-purple, eosin pink).
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
EOSIN = np.array([0.10, 0.85, 0.38], dtype=np.float32)
#: Glass and mounting medium: about (240, 240, 240).
BACKGROUND_OD = np.float32(-np.log(240.0 / 255.0))
#: Per-pixel noise amplitudes: optical density everywhere, and relative chromatin texture in nuclei.
NOISE_OD = np.float32(0.018)
CHROMATIN = np.float32(0.3)


def compose_rgb(h: np.ndarray, e: np.ndarray, noise: np.ndarray, out: np.ndarray) -> None:
    """Write the RGB of a strip of pixels from its stain concentrations.

    Parameters
    ----------
    h, e
        float32 (rows, W): haematoxylin and eosin concentrations.
    noise
        uint8 (rows, W) uniform noise, shared by background grain and chromatin texture.
    out
        uint8 (rows, W, 3), written in place.
    """
    centred = noise.astype(np.float32)
    centred *= np.float32(1 / 127.5)
    centred -= np.float32(1.0)
    textured_h = centred * CHROMATIN
    textured_h += np.float32(1.0)
    textured_h *= h
    base = centred * NOISE_OD
    base += BACKGROUND_OD
    od = np.empty_like(base)
    for channel in range(3):
        np.multiply(textured_h, HAEMATOXYLIN[channel], out=od)
        od += base
        od += e * EOSIN[channel]
        np.negative(od, out=od)
        np.exp(od, out=od)
        # 255 * T + 0.5 then truncation rounds to the nearest level; T <= 1 keeps it <= 255.
        od *= np.float32(255.0)
        od += np.float32(0.5)
        np.minimum(od, np.float32(255.0), out=od)
        out[..., channel] = od  # float -> uint8 truncates
