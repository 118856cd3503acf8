r"""Eigen- and singular value decompositions of the ``p x p`` trust-region matrices, in-graph.

For a handful of parameters these are a few hundred flops, but XLA:CPU runs
``jnp.linalg.eigh`` and ``jnp.linalg.svd`` as LAPACK calls, one call per matrix: with a
batch of ``K`` fits (``vmap``) that is ``K`` tiny calls per decomposition, two per
trust-region step, and they were about half of a batched fit's time (measured at p = 3,
K = 1280: 0.8 us per matrix for ``eigh``, 1.1 us for ``svd``, against 1.2 us for the whole
100-point data pass). Written out entry by entry for small ``p`` (static), the same
algorithms become element-wise array operations that XLA fuses and vectorizes over the
batch, and a single fit saves the call overhead too.

Both are cyclic Jacobi methods, the most accurate ones known for small matrices
(Demmel & Veselic 1992: relative accuracy in every eigen/singular value of a well-scaled
matrix), swept pair by pair in a fixed order, a fixed number of sweeps (:func:`sweeps`; convergence
is quadratic, and a sweep of a converged matrix rotates nothing):

- :func:`eigh`: two-sided Jacobi on a symmetric :math:`A`. For the pair :math:`(i, j)`,
  :math:`\zeta = (a_{jj} - a_{ii}) / (2 a_{ij})`,
  :math:`t = \mathrm{sign}(\zeta) / (|\zeta| + \sqrt{1 + \zeta^2})`,
  :math:`c = 1/\sqrt{1 + t^2}`, :math:`s = c t` zero :math:`a_{ij}` (Rutishauser's form);
  a pair is skipped when :math:`|a_{ij}| \le \epsilon \sqrt{|a_{ii} a_{jj}|}`.
- :func:`svd`: one-sided Jacobi (Hestenes) on the columns of :math:`B`: the same rotation
  from :math:`\alpha = \|b_i\|^2`, :math:`\beta = \|b_j\|^2`, :math:`\gamma = b_i^T b_j`
  makes the two columns orthogonal, accumulated in :math:`V`; at the end
  :math:`\sigma_k = \|b_k\|`, :math:`u_k = b_k / \sigma_k`, so :math:`B = U \Sigma V^T`
  without ever forming :math:`B^T B` (the condition number is not squared).

Unlike LAPACK's, the values come **unsorted** (callers take ``max``/``min``, never
``[0]``/``[-1]``), and a zero singular value gets a zero ``u`` column. Above
:data:`UNROLL_MAX` parameters, where the unrolled graph (``p^2/2`` rotations of ``O(p)``
terms per sweep) costs more compile time than the call overhead it saves, the LAPACK
routines are used (sorted, as LAPACK returns them).

The sweeps are a ``fori_loop`` with the same count for every matrix, so a fit's
decomposition is the same alone and under ``vmap``. (A parallel, round-robin ordering,
each round one array operation over disjoint pairs, was tried: fewer operations to
compile, but XLA:CPU left them unfused and the loop ran 2.5x slower.)
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

UNROLL_MAX = 4  # measured compile time of a fit's loop vs LAPACK: +0.5 s at p = 3 or 4, +3 s at p = 5
EPS = float(jnp.finfo(jnp.float64).eps)


def _rotation(zeta):
    """``(c, s)`` of the Jacobi rotation for ``zeta`` (finite; huge ``zeta``: tiny angle)."""
    t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + jnp.hypot(1.0, zeta))
    c = 1.0 / jnp.sqrt(1.0 + t * t)
    return c, c * t


def sweeps(p: int) -> int:
    """Sweeps run: more than ``p x p`` matrices need (measured on random scaled Gram and
    square matrices, counting the last sweep, which rotates nothing: p = 2 in 2 to 3,
    p = 3 in 3 to 5, p = 4 in 4 to 6, p = 8 in 5 to 8). Extra sweeps of a converged
    matrix rotate nothing."""
    return min(p + 3, 9)


def _sweeps(sweep, state, p: int):
    """:func:`sweeps` ``(p)`` runs of ``sweep(state) -> (state, rotated)`` in a ``fori_loop``.

    Not a ``while_loop`` on convergence: under ``vmap`` it selects its whole carry per
    sweep (measured: more than the sweeps cost), and a second loop for stragglers doubles
    the compiled graph. ``state`` is one array: a loop carry of many scalars compiles to
    many small kernels (measured: seconds of compile time for a 3 x 3 matrix)."""
    return lax.fori_loop(0, sweeps(p), lambda _, st: sweep(st)[0], state)


def _matrix(rows):
    return jnp.stack([jnp.stack(r) for r in rows])


def eigh(a):
    """``(w, v)``: eigenvalues and eigenvectors (columns of ``v``) of a symmetric ``p x p``
    ``a``, ``a = v diag(w) v^T``. Unsorted for ``p <= UNROLL_MAX`` (see module docstring)."""
    p = a.shape[-1]
    if p > UNROLL_MAX:
        return jnp.linalg.eigh(a)
    a = 0.5 * (a + a.T)

    def sweep(st):
        # entries as scalars: every operation below is element-wise, fused over a vmap batch
        m = [[st[0, i, j] for j in range(p)] for i in range(p)]
        v = [[st[1, i, j] for j in range(p)] for i in range(p)]
        rotated = jnp.asarray(False)
        for i in range(p):
            for j in range(i + 1, p):
                aij, aii, ajj = m[i][j], m[i][i], m[j][j]
                go = (aij != 0) & (jnp.abs(aij) > EPS * jnp.sqrt(jnp.abs(aii * ajj)))
                c, s = _rotation((ajj - aii) / jnp.where(go, 2.0 * aij, 1.0))
                c, s = jnp.where(go, c, 1.0), jnp.where(go, s, 0.0)
                t = jnp.where(go, s / c, 0.0)
                m[i][i], m[j][j] = aii - t * aij, ajj + t * aij
                m[i][j] = m[j][i] = jnp.where(go, 0.0, aij)
                for k in range(p):
                    if k != i and k != j:
                        aki, akj = m[k][i], m[k][j]
                        m[k][i] = m[i][k] = c * aki - s * akj
                        m[k][j] = m[j][k] = s * aki + c * akj
                    vki, vkj = v[k][i], v[k][j]
                    v[k][i], v[k][j] = c * vki - s * vkj, s * vki + c * vkj
                rotated = rotated | go
        return jnp.stack([_matrix(m), _matrix(v)]), rotated

    st = _sweeps(sweep, jnp.stack([a, jnp.eye(p, dtype=a.dtype)]), p)
    return jnp.diagonal(st[0]), st[1]


def svd(b):
    """``(u, s, vt)`` of a square ``p x p`` ``b``: ``b = u diag(s) vt``, as
    ``jnp.linalg.svd(b, full_matrices=False)``, but unsorted for ``p <= UNROLL_MAX`` and
    with a zero ``u`` column for a zero singular value (see module docstring)."""
    p = b.shape[-1]
    if p > UNROLL_MAX or b.shape[0] != p:
        return jnp.linalg.svd(b, full_matrices=False)

    def dot(x, y):
        acc = x[0] * y[0]
        for xr, yr in zip(x[1:], y[1:]):
            acc = acc + xr * yr
        return acc

    def sweep(st):  # st[0] = B's columns, st[1] = V's columns, as rows: st[., j, r] = col j entry r
        cols = [[st[0, j, r] for r in range(p)] for j in range(p)]
        vcols = [[st[1, j, r] for r in range(p)] for j in range(p)]
        rotated = jnp.asarray(False)
        for i in range(p):
            for j in range(i + 1, p):
                alpha, beta, gamma = dot(cols[i], cols[i]), dot(cols[j], cols[j]), dot(cols[i], cols[j])
                go = (gamma != 0) & (jnp.abs(gamma) > EPS * jnp.sqrt(alpha * beta))
                c, s = _rotation((beta - alpha) / jnp.where(go, 2.0 * gamma, 1.0))
                c, s = jnp.where(go, c, 1.0), jnp.where(go, s, 0.0)
                for vecs in (cols, vcols):
                    xi, xj = vecs[i], vecs[j]
                    vecs[i] = [c * a - s * bb for a, bb in zip(xi, xj)]
                    vecs[j] = [s * a + c * bb for a, bb in zip(xi, xj)]
                rotated = rotated | go
        return jnp.stack([_matrix(cols), _matrix(vcols)]), rotated

    st = _sweeps(sweep, jnp.stack([b.T, jnp.eye(p, dtype=b.dtype)]), p)
    s = jnp.sqrt(jnp.sum(st[0] * st[0], axis=1))
    inv = jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0), 0.0)
    return st[0].T * inv[None, :], s, st[1]  # row k of st[1] is column k of V: V^T
