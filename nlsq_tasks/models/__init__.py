"""Models: the built-in library, plain callables and safe expression strings.

>>> from nlsq_tasks.models import get_model, resolve_model
>>> m = resolve_model("gaussian + gaussian + constant")   # g1_amplitude, ..., c
>>> m = resolve_model("a*exp(-b*x) + c")                  # compiled, never eval()'d
"""

from .base import Model, model_from_callable, sum_models
from .expression import UnsafeExpressionError, expression_model
from .registry import get_model, list_models, register_model, registered_models, resolve_model, unregister_model

__all__ = [
    "Model",
    "UnsafeExpressionError",
    "expression_model",
    "get_model",
    "list_models",
    "model_from_callable",
    "register_model",
    "registered_models",
    "resolve_model",
    "sum_models",
    "unregister_model",
]
