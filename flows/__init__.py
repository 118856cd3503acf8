"""Prefect 3 orchestration of nlsq_tasks fits.

>>> from flows import fit_flow, FitRequest
>>> fit_flow(FitRequest(data={"uri": "data.npz"}, model="exponential_decay"))  # doctest: +SKIP

Modules: ``request`` (typed requests, the UI form), ``tasks`` (thin task wrappers),
``fit_flow`` / ``batch_flow`` (composition only), ``artifacts``, ``progress``, ``plotting``,
``registry`` (models a deployment registers by name), ``cli`` (``nlsq-flow``).
"""

from .registry import register_model, registered_models, unregister_model
from .request import BatchFitRequest, DataSpec, FitRequest

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


def __getattr__(name):
    # Flows import Prefect's engine and the library; load them on first use so that
    # `import flows.request` (UI forms, CLI argument checks) stays light.
    if name == "fit_flow":
        from .fit_flow import fit_flow

        return fit_flow
    if name == "batch_fit_flow":
        from .batch_flow import batch_fit_flow

        return batch_fit_flow
    raise AttributeError(name)
