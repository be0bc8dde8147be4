"""Random-draw helpers shared by the stages. Each consumes the generator exactly as written:
the order of draws is what makes a catalogue reproducible byte for byte."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def chunk_rng(seed: int, chunk: int, *stream: int) -> np.random.Generator:
    """The generator of one chunk (and of side streams of it, such as injected outliers):
    independent of every other chunk, so chunks can be made in any order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk, *stream)))


def cdf(p: npt.ArrayLike) -> np.ndarray:
    """Normalised cumulative sum ending at exactly 1, for `choose`."""
    c = np.cumsum(np.asarray(p, dtype=float))
    c /= c[-1]
    c[-1] = 1.0
    return c


def choose(rng: np.random.Generator, cum: np.ndarray, n: int) -> np.ndarray:
    """n category indices drawn from a CDF `cum` (one uniform each)."""
    return pick(cum, rng.random(n))


def pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The category index of each uniform `u` under the CDF `cum`."""
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def blocks(key: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by key, and the start of each key's block in that order."""
    if n_keys <= 2**16:
        # a stable sort of 8/16-bit keys is a radix sort in numpy: O(n)
        key = key.astype(np.uint8 if n_keys <= 2**8 else np.uint16)
    order = np.argsort(key, kind="stable")
    return order, np.searchsorted(key[order], np.arange(n_keys + 1))


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))
