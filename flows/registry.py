"""Models a deployment registers by name, so requests can refer to them safely.

A request's ``model`` is a string; it is never imported. Code that the deployment owns
(its entry-point module, run at worker start) registers callables or ``Model`` objects,
and requests name them::

    from flows import register_model

    def lorentzian(x, a, x0, w):
        return a * w**2 / ((x - x0) ** 2 + w**2)

    register_model("lab_lorentzian", lorentzian)

There is one model registry, the library's (``nlsq_tasks.models.register_model``): these
names are that function and its companions. A built-in name is never shadowed, and a
registered name is replaced only with ``overwrite=True``. Expressions are compiled by
``nlsq_tasks.models.resolve_model`` through its whitelist.
"""

from nlsq_tasks.models import register_model, registered_models, unregister_model

__all__ = ["register_model", "registered_models", "unregister_model"]
