"""Finding models by name: the built-in table, a registry, and ``resolve_model``.

Model *specs* are what YAML files and the Prefect UI may contain: names and expressions,
never import paths. ``resolve_model`` reads a string as follows:

1. ``name`` or ``name:option[,option]`` where ``name`` is registered or built in:
   ``"gaussian"``, ``"polynomial:3"`` (degree 3), ``"gaussian:offset"`` (adds ``offset``),
   ``"power_law:offset"``.
2. A ``+``-separated sum of such terms: ``"gaussian+gaussian+constant"``. A string whose
   terms are all bare words or ``name:option`` is read this way when at least one term is a
   model name, so a misspelt name (``"gausian+constant"``, or ``"gausian"`` alone) is an
   "unknown model" error with a suggestion rather than a silently different expression.
3. Anything else is an expression, compiled by :func:`expression_model` (whitelisted).

Registered names (``register_model``) are for models a deployment defines in its own
code; they cannot shadow built-in names.
"""

from __future__ import annotations

import difflib
import re
import threading
from typing import Any, Callable, Sequence

from .base import Model, model_from_callable, set_resolver, sum_models
from .expression import expression_model
from .library import ALIASES, BUILTINS

_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z0-9_.,]*))?$")
# A registered name: letters, digits, '_' and '-' (a deployment's "lab-decay"), starting with a
# letter. A name is looked up whole before any parsing, so '-' never reads as a minus.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_lock = threading.Lock()
_registered: dict[str, Model] = {}


def list_models() -> list[str]:
    """Built-in and registered model names, sorted."""
    with _lock:
        return sorted(set(BUILTINS) | set(_registered))


def _unknown(name: str) -> ValueError:
    names = list_models()
    close = difflib.get_close_matches(name, names + list(ALIASES), n=1, cutoff=0.6)
    hint = f" Did you mean {ALIASES.get(close[0], close[0])!r}?" if close else ""
    return ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(names)}.")


def get_model(name: str, **options: Any) -> Model:
    """A built-in or registered model by name; ``options`` go to the built-in's factory
    (``degree`` for polynomial, ``offset`` for gaussian, lorentzian, pseudo_voigt, power_law)."""
    if not isinstance(name, str):
        raise TypeError(f"get_model: name must be a string, got {type(name).__name__}.")
    with _lock:
        registered = _registered.get(name)
    if registered is not None:
        if options:
            raise ValueError(f"model {name!r} is registered as is; it takes no options (got {sorted(options)}).")
        return registered
    factory = BUILTINS.get(ALIASES.get(name, name))
    if factory is None:
        raise _unknown(name)
    try:
        return factory(**options)
    except TypeError:
        import inspect

        allowed = list(inspect.signature(factory).parameters) or ["none"]
        raise ValueError(f"model {name!r}: options {sorted(options)} are not allowed; allowed: {allowed}.") from None


def register_model(name: str, model: Model | Callable, *, overwrite: bool = False) -> Model:
    """Make ``model`` (a Model or a callable ``f(x, a, b, ...)``) available as ``name``.

    The one model registry (``flows.register_model`` is this function). Its rules: a
    built-in name is never shadowed (a request's "gaussian" always means the built-in), and
    a registered name is replaced only with ``overwrite=True``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"register_model: name {name!r} is not allowed; use letters, digits, '_' or '-', starting with a letter "
            "(max 64)."
        )
    if name in BUILTINS or name in ALIASES:
        raise ValueError(f"register_model: {name!r} is a built-in model name; choose another.")
    m = model if isinstance(model, Model) else model_from_callable(model)
    with _lock:
        if name in _registered and not overwrite and _registered[name] is not m:
            raise ValueError(f"register_model: {name!r} is already registered; pass overwrite=True to replace it.")
        _registered[name] = m
    return m


def unregister_model(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def registered_models() -> list[str]:
    """The names registered with :func:`register_model` (built-ins excluded), sorted."""
    with _lock:
        return sorted(_registered)


def _parse_options(name: str, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for tok in filter(None, text.split(",")):
        if tok.isdigit():
            options["degree"] = int(tok)
        elif tok == "offset":
            options["offset"] = True
        else:
            raise ValueError(
                f"model spec {name}:{text!r}: option {tok!r} is not understood; use an integer degree "
                "(polynomial:3) or 'offset' (gaussian:offset)."
            )
    return options


def _from_names(terms: list[re.Match]) -> Model:
    models = [get_model(m.group(1), **_parse_options(m.group(1), m.group(2) or "")) for m in terms]
    return models[0] if len(models) == 1 else sum_models(models)


def _is_name(word: str) -> bool:
    with _lock:
        return word in BUILTINS or word in ALIASES or word in _registered


def resolve_model(
    spec: Any, *, params: Sequence[str] | int | None = None, independent: str | Sequence[str] = "x"
) -> Model:
    """Any model description -> :class:`Model`.

    ``spec``: a Model (returned as is), a callable ``f(x, a, b, ...)``, a model name or sum
    of names, or an expression string. ``params``: for expressions, the declared parameter
    names; for callables, names (or a count, for ``f(x, *p)``) overriding the signature.
    """
    if isinstance(spec, Model):
        if params is not None and list(params) != spec.param_names:
            raise ValueError(f"params={params!r} disagree with the model's parameters {spec.param_names}.")
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("model: the spec is an empty string; give a model name or an expression.")
        with _lock:
            registered = _registered.get(text)
        if registered is not None:  # a registered name, whole ("lab-decay" is not "lab - decay")
            if params is not None:
                raise ValueError(f"params={params!r}: named models have fixed parameter names.")
            return registered
        terms = [_TERM.match(re.sub(r"\s*:\s*", ":", t.strip())) for t in text.split("+")]
        if all(terms):
            words = [m.group(1) for m in terms]
            has_options = any(m.group(2) is not None for m in terms)
            lone_word = len(words) == 1 and words[0] not in ([independent] if isinstance(independent, str) else independent)
            if has_options or lone_word or any(_is_name(w) for w in words):
                if params is not None:
                    raise ValueError(f"params={params!r}: named models have fixed parameter names.")
                return _from_names(terms)
        if isinstance(params, int):
            raise ValueError("params must be a list of names for an expression.")
        return expression_model(text, params=params, independent=independent)
    if callable(spec):
        if isinstance(params, int) and not isinstance(params, bool):
            return model_from_callable(spec, n_params=params)
        return model_from_callable(spec, param_names=params)
    raise TypeError(
        f"model: expected a Model, a callable f(x, *params), a model name or an expression string; "
        f"got {type(spec).__name__}."
    )


set_resolver(resolve_model)  # Model.__add__ resolves names and expressions through this registry
