"""Memory budget: how much a fit needs against how much the machine has.

For ``n`` points, ``p`` parameters, ``k`` features and ``b`` bytes per element:

.. math::

    \\text{data} = n (k + 1) b \\qquad
    J = n p b \\qquad
    \\text{peak} = \\text{data} + 1.3 J + \\text{solver}

    \\text{solver} = R + 2 n b + 4 p^2 b

The factor 1.3 on the Jacobian covers the temporaries of the Gauss-Newton products
(a scaled copy of ``J`` while forming ``J^T J``, about 0.3 J in XLA's fused kernels).
The solver term is our figure for everything else the trust-region loop holds:

- ``R`` = :data:`RUNTIME_ALLOWANCE_BYTES` (64 MiB): JAX/XLA runtime buffers and compiled
  executables that exist regardless of the problem size;
- ``2 n b``: the residual vector at the current and at the trial parameters;
- ``4 p^2 b``: ``J^T J``, its Cholesky/eigen factor, and the workspace of the
  decomposition (a few ``p x p`` matrices).

Sizes are reported in GB of ``1024**3`` bytes. For 10M points and 10 parameters this gives
data 0.149 GB, Jacobian 0.745 GB and peak 1.33 GB.

Detecting the available memory is the one impure step, kept in
:func:`detect_available_bytes`; :meth:`MemoryBudget.from_available` is a pure function of
explicit numbers, which is what :func:`~nlsq_tasks.workflow.decide_strategy` and the tests
use.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from ._checks import check_bool, check_float, check_int

logger = logging.getLogger("nlsq_tasks.workflow")

GB = 1024**3
RUNTIME_ALLOWANCE_BYTES = 64 * 1024**2
JACOBIAN_PEAK_FACTOR = 1.3


def solver_overhead_bytes(n_points: int, n_params: int, dtype_bytes: int = 8) -> int:
    """The solver term of the peak: runtime allowance + two residual vectors + four p x p matrices."""
    return RUNTIME_ALLOWANCE_BYTES + 2 * n_points * dtype_bytes + 4 * n_params**2 * dtype_bytes


@dataclass(frozen=True)
class MemoryBudget:
    """Memory needed by a fit against the memory available, in GB (``1024**3`` bytes).

    Attributes: ``available_gb`` (free CPU or GPU memory), ``threshold_gb``
    (``available_gb * safety_factor``), ``data_gb`` (x and y), ``jacobian_gb`` (the full
    ``n x p`` Jacobian) and ``peak_gb`` (data + 1.3 Jacobian + solver overhead; see the
    module docstring for the overhead figure). Build one with :meth:`compute`.
    """

    available_gb: float
    threshold_gb: float
    data_gb: float
    jacobian_gb: float
    peak_gb: float

    @property
    def fits_in_memory(self) -> bool:
        """True when the peak estimate is within the safe threshold."""
        return self.peak_gb <= self.threshold_gb

    @property
    def data_fits(self) -> bool:
        """True when the data arrays alone are within the safe threshold."""
        return self.data_gb <= self.threshold_gb

    def to_dict(self) -> dict[str, float | bool]:
        """Plain numbers (for FitResult.budget, logs and Prefect artifacts)."""
        return {**asdict(self), "fits_in_memory": self.fits_in_memory, "data_fits": self.data_fits}

    @classmethod
    def from_available(
        cls,
        n_points: int,
        n_params: int,
        available_bytes: int | float,
        n_features: int = 1,
        dtype_bytes: int = 8,
        safety_factor: float = 0.75,
    ) -> "MemoryBudget":
        """The budget for explicit numbers: a pure function, no probing of the machine."""
        n_points = check_int("n_points", n_points, minimum=1)
        n_params = check_int("n_params", n_params, minimum=1)
        n_features = check_int("n_features", n_features, minimum=1)
        dtype_bytes = check_int("dtype_bytes", dtype_bytes, minimum=1)
        safety_factor = check_float("safety_factor", safety_factor, gt=0.0, le=1.0)
        available_bytes = check_float("available_bytes", available_bytes, ge=0.0)
        data = n_points * (n_features + 1) * dtype_bytes
        jac = n_points * n_params * dtype_bytes
        peak = data + JACOBIAN_PEAK_FACTOR * jac + solver_overhead_bytes(n_points, n_params, dtype_bytes)
        return cls(
            available_gb=available_bytes / GB,
            threshold_gb=available_bytes * safety_factor / GB,
            data_gb=data / GB,
            jacobian_gb=jac / GB,
            peak_gb=peak / GB,
        )

    @classmethod
    def compute(
        cls,
        n_points: int,
        n_params: int,
        n_features: int = 1,
        dtype_bytes: int = 8,
        safety_factor: float = 0.75,
        memory_limit_gb: float | None = None,
        use_gpu: bool = False,
    ) -> "MemoryBudget":
        """The budget for a data set of ``n_points`` on this machine.

        ``memory_limit_gb`` overrides the detected memory; otherwise the available CPU
        memory (psutil) is used, or with ``use_gpu=True`` the free memory of the first JAX
        GPU (``bytes_limit - bytes_in_use``), falling back to CPU memory when there is none.

        Raises ValueError if n_points <= 0, n_params <= 0, n_features <= 0,
        dtype_bytes <= 0, safety_factor is outside (0, 1] or memory_limit_gb <= 0;
        TypeError for values of the wrong type.
        """
        # Validate everything before probing the machine, so errors do not depend on it.
        check_int("n_points", n_points, minimum=1)
        check_int("n_params", n_params, minimum=1)
        check_int("n_features", n_features, minimum=1)
        check_int("dtype_bytes", dtype_bytes, minimum=1)
        check_float("safety_factor", safety_factor, gt=0.0, le=1.0)
        use_gpu = check_bool("use_gpu", use_gpu)
        if memory_limit_gb is not None:
            available = check_float("memory_limit_gb", memory_limit_gb, gt=0.0) * GB
        else:
            available = detect_available_bytes(use_gpu=use_gpu)
        return cls.from_available(n_points, n_params, available, n_features, dtype_bytes, safety_factor)


def detect_available_bytes(use_gpu: bool = False) -> int:
    """Free memory in bytes: the first JAX GPU's when ``use_gpu`` and one exists, else CPU's."""
    if use_gpu:
        gpu = _gpu_free_bytes()
        if gpu is not None:
            return gpu
        logger.info("use_gpu=True but JAX sees no GPU with memory statistics; using CPU memory instead")
    import psutil  # imported here: only the machine probe needs it

    return int(psutil.virtual_memory().available)


def _gpu_free_bytes() -> int | None:
    import jax

    try:
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    except RuntimeError:  # no backend initialised
        return None
    if not gpus:
        return None
    stats = gpus[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
