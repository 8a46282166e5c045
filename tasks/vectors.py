"""Vector math shared by the stages (embed, dedupe, evaluation, vector sets): one implementation each."""

from __future__ import annotations

import numpy as np


def l2_normalize(vecs: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of a 2-D array, as contiguous float32 (zero rows stay zero)."""
    arr = np.ascontiguousarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)


def unit(vec: np.ndarray) -> np.ndarray:
    """One vector L2-normalised (float32; a zero vector stays zero)."""
    return l2_normalize(np.asarray(vec).reshape(1, -1))[0]
