"""Prefect 3 orchestration of nlsq_tasks fits.

>>> from flows import fit_flow, FitRequest
>>> fit_flow(FitRequest(data={"uri": "data.npz"}, model="exponential_decay"))  # doctest: +SKIP

Modules: ``request`` (typed requests, the UI form), ``tasks`` (thin task wrappers),
``fit_flow`` / ``batch_flow`` (composition only), ``artifacts``, ``progress``, ``plotting``,
``registry`` (models a deployment registers by name), ``cli`` (``nlsq-flow``).
"""

from .registry import register_model, registered_models, unregister_model
from .request import BatchFitRequest, DataSpec, FitRequest

# Imported eagerly: the modules share the flows' names, and a lazily imported submodule
# would shadow the function of the same name on the package.
from .fit_flow import fit_flow  # noqa: E402
from .batch_flow import batch_fit_flow  # noqa: E402

__all__ = [
    "BatchFitRequest",
    "DataSpec",
    "FitRequest",
    "batch_fit_flow",
    "fit_flow",
    "register_model",
    "registered_models",
    "unregister_model",
]
