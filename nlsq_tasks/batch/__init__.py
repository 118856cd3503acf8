"""Many fits at once: :func:`fit_batch` (one model, K data sets, one compiled ``vmap``)
and :func:`fit_global` (several data sets, some parameters shared).

>>> from nlsq_tasks.batch import fit_batch, fit_global  # doctest: +SKIP
"""

from ._fit import fit_batch
from .global_fit import GlobalFitResult, fit_global
from .result import BatchFitResult, concat_tables

__all__ = ["BatchFitResult", "GlobalFitResult", "concat_tables", "fit_batch", "fit_global"]
