"""Scrambled Sobol points and Latin hypercube samples, in numpy (no I/O, no JAX).

Sobol sequence (Gray-code order, as in Antonov & Saleev): with direction numbers
:math:`v_{j,k}` for dimension :math:`j` and bit :math:`k`,

.. math::

    x_{i,j} = x_{i-1,j} \\oplus v_{j,c(i-1)},\\qquad x_{0,j} = 0,

where :math:`c(i)` is the index of the lowest zero bit of :math:`i`. Direction numbers
follow Joe & Kuo (2008), ``new-joe-kuo-6.21201``, dimensions 2..21 (dimension 1 is the
van der Corput sequence). The embedded table is primitive polynomial data (degree ``s``,
coefficients ``a``, initial numbers ``m``); it is checked against SciPy's unscrambled
Sobol in the tests.

Scrambling is a random *linear matrix scramble* (a random lower-triangular binary matrix
with unit diagonal applied to each dimension's direction numbers) followed by a random
*digital shift* (XOR with a random integer): the result keeps the (t, s)-net property of
the Sobol points while removing the point at the origin and the alignment of the
unscrambled sequence. Seeded, so a set of starts is reproducible.
"""

from __future__ import annotations

import numpy as np

_BITS = 32

# (s, a, m_1..m_s) for dimensions 2..21 (Joe & Kuo 2008).
_JOE_KUO = (
    (1, 0, (1,)),
    (2, 1, (1, 3)),
    (3, 1, (1, 3, 1)),
    (3, 2, (1, 1, 1)),
    (4, 1, (1, 1, 3, 3)),
    (4, 4, (1, 3, 5, 13)),
    (5, 2, (1, 1, 5, 5, 17)),
    (5, 4, (1, 1, 5, 5, 5)),
    (5, 7, (1, 1, 7, 11, 19)),
    (5, 11, (1, 1, 5, 1, 1)),
    (5, 13, (1, 1, 1, 3, 11)),
    (5, 14, (1, 3, 5, 5, 31)),
    (6, 1, (1, 3, 3, 9, 7, 49)),
    (6, 13, (1, 1, 1, 15, 21, 21)),
    (6, 16, (1, 3, 1, 13, 27, 49)),
    (6, 19, (1, 1, 1, 15, 7, 5)),
    (6, 22, (1, 3, 1, 15, 13, 25)),
    (6, 25, (1, 1, 5, 5, 19, 61)),
    (7, 1, (1, 3, 7, 11, 23, 15, 103)),
    (7, 4, (1, 3, 7, 13, 13, 15, 69)),
)
MAX_SOBOL_DIM = len(_JOE_KUO) + 1
SAMPLERS = ("sobol", "lhs")  # the start samplers: sobol() and latin_hypercube() below


def _direction_numbers(dim: int) -> np.ndarray:
    """``V[j, k]`` = direction number of dimension j for bit k, left-aligned in 32 bits."""
    v = np.zeros((dim, _BITS), dtype=np.uint64)
    v[0] = [1 << (_BITS - 1 - k) for k in range(_BITS)]
    for j in range(1, dim):
        s, a, m = _JOE_KUO[j - 1]
        row = [0] * _BITS
        for k in range(min(s, _BITS)):
            row[k] = m[k] << (_BITS - 1 - k)
        for k in range(s, _BITS):
            val = row[k - s] ^ (row[k - s] >> s)
            for t in range(1, s):
                if (a >> (s - 1 - t)) & 1:
                    val ^= row[k - t]
            row[k] = val
        v[j] = row
    return v


def _linear_matrix_scramble(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a random lower-triangular unit-diagonal binary matrix to every direction number."""
    dim = v.shape[0]
    out = np.zeros_like(v)
    for j in range(dim):
        # row r of the matrix: bit r is 1 (diagonal), bits above r (more significant) random.
        lower = np.tril(rng.integers(0, 2, size=(_BITS, _BITS)), -1) + np.eye(_BITS, dtype=np.int64)
        for k in range(_BITS):
            bits = [(int(v[j, k]) >> (_BITS - 1 - c)) & 1 for c in range(_BITS)]  # MSB first
            new_bits = (lower @ np.array(bits)) % 2
            out[j, k] = int("".join(str(int(b)) for b in new_bits), 2)
    return out


def sobol(n: int, dim: int, *, scramble: bool = True, seed: int = 0) -> np.ndarray:
    """``n`` points of the ``dim``-dimensional Sobol sequence in ``[0, 1)^dim``.

    Unscrambled, the first point is the origin (SciPy's ``Sobol(scramble=False)`` order).
    """
    if not 1 <= dim <= MAX_SOBOL_DIM:
        raise ValueError(f"sobol: dim={dim} is not supported; allowed is 1..{MAX_SOBOL_DIM} (use sampler='lhs').")
    if n < 0 or n >= 2**_BITS:
        raise ValueError(f"sobol: n={n} is out of range; allowed is 0..{2**_BITS - 1}.")
    v = _direction_numbers(dim)
    shift = np.zeros(dim, dtype=np.uint64)
    if scramble:
        rng = np.random.default_rng(seed)
        v = _linear_matrix_scramble(v, rng)
        shift = rng.integers(0, 2**_BITS, size=dim, dtype=np.uint64)
    ints = np.zeros((n, dim), dtype=np.uint64)
    cur = shift.copy()
    for i in range(n):  # bounded by n
        ints[i] = cur
        c = _lowest_zero_bit(i)
        cur = cur ^ v[:, c]
    return ints.astype(np.float64) / float(2**_BITS)


def _lowest_zero_bit(i: int) -> int:
    c = 0
    while (i >> c) & 1 and c < _BITS - 1:
        c += 1
    return c


def latin_hypercube(n: int, dim: int, *, seed: int = 0) -> np.ndarray:
    """A random Latin hypercube: one point in each of the ``n`` slabs of every axis."""
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(dim)], axis=1)
    return (perms + rng.random((n, dim))) / n
