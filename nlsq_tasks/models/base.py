"""``Model``: a JAX-traceable function of ``x`` with named parameters.

A model is ``f(x, p_1, ..., p_m)``. ``x`` is ``(n,)`` or, with ``k`` features, ``(k, n)``
(SciPy's layout); the output is ``(n,)``. Besides the function a model knows

* ``param_names``: unique identifiers, in the order of the positional parameters;
* ``guess(x, y)``: a data-driven start (NumPy only), or None when it has no idea;
* ``default_bounds()``: ``(lower, upper)`` arrays, possibly infinite;
* ``fingerprint()``: a string that names the function, stable across processes, so a
  checkpoint written for one model is never resumed with another.

Sums ``m1 + m2`` evaluate ``f_1(x, p_1) + f_2(x, p_2)`` with the parameter vectors
concatenated. When names collide, each colliding component is prefixed with its short
name and a counter (``gaussian + gaussian`` -> ``g1_amplitude, ..., g2_amplitude``);
``model.with_prefix("left_")`` gives a component a prefix of your choosing, which is
kept as is. The guess of a sum guesses one component at a time on what the earlier
ones left unexplained (shape components in the order written, baselines such as
``constant`` and ``linear`` last; write a background such as ``exponential`` first), then
refines by a few rounds of backfitting.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import keyword
import math
import types
from typing import Any, Callable, Sequence

import numpy as np

Guesser = Callable[[np.ndarray, np.ndarray], Any]


def _check_names(names: Sequence[str], what: str) -> list[str]:
    out = []
    for nm in names:
        if not isinstance(nm, str) or not nm.isidentifier() or keyword.iskeyword(nm):
            raise ValueError(f"{what}: parameter name {nm!r} is not a valid identifier (letters, digits, '_').")
        out.append(nm)
    dup = sorted({nm for nm in out if out.count(nm) > 1})
    if dup:
        raise ValueError(f"{what}: parameter names must be unique; repeated: {dup}.")
    return out


class Model:
    """A function ``fn(x, *params)`` with named parameters, a guess, bounds and an identity.

    Built-in models come from :func:`get_model`, expressions from :func:`expression_model`,
    plain callables from :func:`model_from_callable`; :func:`resolve_model` takes any of them.
    """

    def __init__(
        self,
        fn: Callable,
        param_names: Sequence[str],
        name: str | None = None,
        *,
        guess: Guesser | None = None,
        bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        identity: str | None = None,
        formula: str | None = None,
        n_features: int | None = None,
        spec: str | None = None,
        fallback: Sequence[float] | None = None,
        baseline: bool = False,
        short: str | None = None,
        _rebuild: tuple | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"Model: fn must be callable, got {type(fn).__name__}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "model")
        self.param_names = _check_names(list(param_names), f"model {self.name!r}")
        if not self.param_names:
            raise ValueError(f"model {self.name!r} has no parameters; there is nothing to fit.")
        m = len(self.param_names)
        lo, hi = (np.full(m, -np.inf), np.full(m, np.inf)) if bounds is None else bounds
        lo = np.broadcast_to(np.asarray(lo, dtype=float), (m,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=float), (m,)).copy()
        if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo > hi):
            raise ValueError(f"model {self.name!r}: bounds must satisfy lower <= upper; got {lo} and {hi}.")
        self._lower, self._upper = lo, hi
        self._guess = guess
        self._fallback = None if fallback is None else np.asarray(fallback, dtype=float).reshape(m)
        self._identity = identity or callable_identity(fn)
        self.formula = formula or f"{self.name}(x, {', '.join(self.param_names)})"
        self.n_features = n_features
        self.spec = spec  # a string resolve_model() turns back into this model, or None
        self.baseline = baseline
        self.short = short or "".join(c for c in self.name if c.isalnum())[:4].lower() or "m"
        self._rebuild = _rebuild
        self._prefixed = False
        self._parts: tuple[Model, ...] | None = None  # a sum's components, prefixes applied
        self._leaves: tuple[Model, ...] | None = None  # ... and as they were given

    # -- evaluation -------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def __call__(self, x, *params):
        if len(params) != self.n_params:
            raise TypeError(
                f"model {self.name!r} takes {self.n_params} parameters {self.param_names}, got {len(params)}."
            )
        return self.fn(x, *params)

    def default_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._lower.copy(), self._upper.copy()

    def fingerprint(self) -> str:
        return self._identity

    # -- the start --------------------------------------------------------------------
    def guess(self, x, y) -> np.ndarray | None:
        """A start inside the default bounds, from the data; None when the model has no guesser.

        Never raises: non-finite points are dropped first, and when the guesser cannot make
        sense of what is left (too few points, constant data, a shape it does not expect)
        the model's fixed fallback is returned instead.
        """
        if self._guess is None:
            return None
        p = None
        try:
            # A guess is advice, not a result: any failure on odd data means "use the fallback".
            with np.errstate(all="ignore"):
                xc, yc = _clean(x, y)
                if yc.size >= 1:
                    p = np.asarray(self._guess(xc, yc), dtype=float).reshape(-1)
            if p is None or p.shape != (self.n_params,) or not np.all(np.isfinite(p)):
                p = None
        except Exception:
            p = None
        if p is None:
            if self._fallback is None:
                return None
            p = self._fallback.copy()
        return _strictly_inside(p, self._lower, self._upper)

    # -- composition ------------------------------------------------------------------
    def with_prefix(self, prefix: str) -> "Model":
        """The same model with every parameter name prefixed (kept as is inside sums)."""
        if not isinstance(prefix, str) or not prefix or not (prefix + "x").isidentifier():
            raise ValueError(f"with_prefix: prefix {prefix!r} must start an identifier, e.g. 'g1_'.")
        out = Model(
            self.fn,
            [prefix + n for n in self.param_names],
            self.name,
            guess=self._guess,
            bounds=self.default_bounds(),
            identity=f"{self._identity}|prefix={prefix}",
            formula=self.formula,
            n_features=self.n_features,
            fallback=self._fallback,
            baseline=self.baseline,
            short=self.short,
            _rebuild=(_prefixed_model, (self, prefix)),
        )
        out._prefixed = True
        return out

    def __add__(self, other) -> "Model":
        if not isinstance(other, Model):
            other = _resolve(other)
        return sum_models([self, other])

    def __radd__(self, other) -> "Model":
        if isinstance(other, (int, float)) and other == 0:  # sum([m1, m2]) starts from 0
            return self
        return sum_models([_resolve(other), self])

    @property
    def components(self) -> tuple["Model", ...]:
        """The components of a sum (prefixes applied), or ``(self,)``."""
        return self._parts if self._parts is not None else (self,)

    def __reduce_ex__(self, protocol):
        # Library, expression and sum models rebuild from their description (their functions
        # are closures); a model around a plain callable pickles as usual (by reference).
        return self._rebuild if self._rebuild is not None else super().__reduce_ex__(protocol)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, params={self.param_names})"


def _prefixed_model(model: Model, prefix: str) -> Model:
    return model.with_prefix(prefix)


# -- sums ----------------------------------------------------------------------------------
def sum_models(models: Sequence[Model]) -> Model:
    """``models[0] + models[1] + ...`` with unique parameter names (see the module docstring)."""
    leaves: list[Model] = []
    for m in models:
        if not isinstance(m, Model):
            raise TypeError(f"sum_models: every term must be a Model, got {type(m).__name__}.")
        # An un-prefixed sum contributes its original leaves, so prefixes are decided once.
        leaves.extend(m._leaves if (m._parts is not None and not m._prefixed) else [m])
    feats = {m.n_features for m in leaves if m.n_features is not None}
    if len(feats) > 1:
        raise ValueError(f"cannot add models that expect different numbers of x features: {sorted(feats)}.")

    counts: dict[str, int] = {}
    for m in leaves:
        for n in m.param_names:
            counts[n] = counts.get(n, 0) + 1
    seen: dict[str, int] = {}
    parts = []
    for m in leaves:
        if not m._prefixed and any(counts[n] > 1 for n in m.param_names):
            seen[m.short] = seen.get(m.short, 0) + 1
            part = m.with_prefix(f"{m.short}{seen[m.short]}_")
        else:
            part = m
        parts.append(part)
    names = [n for p in parts for n in p.param_names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"the sum has repeated parameter names {dup}; give the components distinct prefixes "
            "with model.with_prefix('p1_')."
        )

    sizes = [p.n_params for p in parts]
    fns = [p.fn for p in parts]
    lowers, uppers = zip(*(p.default_bounds() for p in parts))
    specs = [m.spec for m in leaves]
    has_all_guesses = all(p._guess is not None for p in parts)
    fallbacks = [p._fallback for p in parts]

    fn = SumFunction(fns, sizes)
    total = Model(
        fn,
        names,
        " + ".join(p.name for p in parts),
        guess=functools.partial(_guess_sum, parts) if has_all_guesses else None,
        bounds=(np.concatenate(lowers), np.concatenate(uppers)),
        identity="sum(" + ",".join(p.fingerprint() for p in parts) + ")",
        formula=" + ".join(f"[{p.formula}]" for p in parts),
        n_features=feats.pop() if feats else None,
        spec="+".join(specs) if all(s is not None and not m._prefixed for s, m in zip(specs, leaves)) else None,
        fallback=None if any(f is None for f in fallbacks) else np.concatenate(fallbacks),
        baseline=all(p.baseline for p in parts),
        short="sum",
        _rebuild=(sum_models, (tuple(leaves),)),
    )
    total._parts = tuple(parts)
    total._leaves = tuple(leaves)
    return total


BACKFIT_ROUNDS = 3


class SumFunction:
    """``f(x, p) = sum_j f_j(x, p_j)``. Equal (and equally hashed) when the components are, so
    that resolving ``"gaussian+gaussian"`` twice gives a function the engine's compile cache
    (keyed by the function) recognises: compile once."""

    def __init__(self, fns: Sequence[Callable], sizes: Sequence[int]):
        self.fns, self.sizes = tuple(fns), tuple(sizes)
        self.__name__ = "sum"  # for logs that print fn.__name__

    def __call__(self, x, *params):
        out, i = 0.0, 0
        for f, k in zip(self.fns, self.sizes):
            out = out + f(x, *params[i : i + k])
            i += k
        return out

    def __eq__(self, other):
        return type(other) is SumFunction and self.fns == other.fns and self.sizes == other.sizes

    def __hash__(self):
        return hash((self.fns, self.sizes))


def _guess_sum(parts: Sequence[Model], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Guess one component at a time, each on the residual the earlier ones left (shape
    components in the order written, then baselines such as constant, linear, polynomial),
    then refine by *backfitting*: re-guess each component on ``y`` minus all the others, for
    a few rounds, keeping the start with the smallest sum of squares.

    A baseline guessed first would swallow the peaks; a peak guessed first on a steep
    background takes the background for a peak; so write backgrounds first
    (``exponential + gaussian + gaussian``). Backfitting repairs a first pass that let the
    background absorb part of the peaks (NIST Gauss3: two blended peaks on an exponential).
    """
    k = len(parts)
    order = [i for i in range(k) if not parts[i].baseline] + [i for i in range(k) if parts[i].baseline]
    guesses: list[np.ndarray] = [np.empty(0)] * k
    curves: list[np.ndarray] = [np.zeros_like(y)] * k
    for round_ in range(1 + BACKFIT_ROUNDS):  # bounded: a first pass and a few refinements
        for i in order:
            others = sum((curves[j] for j in range(k) if j != i), np.zeros_like(y))
            g = parts[i].guess(x, y - others)
            if g is None:
                raise ValueError("a component has no guess")
            guesses[i] = g
            curves[i] = np.asarray(parts[i].fn(x, *g), dtype=float)
        resid = y - sum(curves, np.zeros_like(y))
        ssr = float(resid @ resid)
        if round_ == 0 or ssr < best_ssr:
            best, best_ssr = np.concatenate(guesses), ssr
    return best


# -- callables -----------------------------------------------------------------------------
def model_from_callable(
    f: Callable, n_params: int | None = None, *, param_names: Sequence[str] | None = None, name: str | None = None
) -> Model:
    """A :class:`Model` around ``f(x, p1, p2, ...)``; names come from the signature.

    Every positional parameter after the first is a fit parameter (as in SciPy's curve_fit).
    ``f(x, *p)`` has no names: pass ``n_params`` (names become ``p0, p1, ...``) or
    ``param_names``. Keyword-only parameters must have defaults (they are never fitted).
    """
    if isinstance(f, Model):
        return f
    if not callable(f):
        raise TypeError(f"model: expected a callable f(x, *params), got {type(f).__name__}.")
    plain = n_params is None and param_names is None and name is None
    if plain:
        hit = _callable_models.get(f)
        if hit is not None:
            return hit
    model = _model_of_callable(f, n_params, param_names, name)
    if plain:
        _callable_models.put(f, model)
    return model


def _model_of_callable(f: Callable, n_params, param_names, name) -> Model:
    if param_names is not None:
        param_names = list(param_names)
        if n_params is not None and n_params != len(param_names):
            raise ValueError(f"n_params={n_params} disagrees with param_names={param_names}.")
        n_params = len(param_names)
    if n_params is not None and (not isinstance(n_params, int) or n_params < 1):
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
    label = name or getattr(f, "__name__", None) or type(f).__name__
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        sig = None
    if sig is None:
        if n_params is None:
            raise ValueError(f"cannot read the signature of {label!r}; pass n_params (or param_names).")
        names = param_names or [f"p{i}" for i in range(n_params)]
    else:
        positional = [
            p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        var_positional = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
        required_kw = [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
        if required_kw:
            raise ValueError(f"model {label!r}: keyword-only parameters {required_kw} need defaults (they are not fitted).")
        if not positional and not var_positional:
            raise ValueError(f"model {label!r} must take the independent variable x as its first argument.")
        named = positional[1:]
        if n_params is None:
            if var_positional and not named:
                raise ValueError(
                    f"model {label!r} takes only *args, so the number of parameters is unknown; "
                    "pass n_params (or param_names)."
                )
            names = named
        elif param_names is not None:
            if not var_positional and n_params != len(named):
                raise ValueError(f"param_names has {n_params} names but {label!r} takes {len(named)}: {named}.")
            names = param_names
        elif n_params < len(named) or (n_params > len(named) and not var_positional):
            raise ValueError(f"n_params={n_params}, but {label!r} takes {len(named)} parameters: {named}.")
        else:
            names = named + [f"p{i}" for i in range(len(named), n_params)]
    return Model(f, names, label, identity=callable_identity(f), formula=f"{label}(x, {', '.join(names)})")


class _CallableModels:
    """The Model of each plain function already seen, so that a fit repeated in a loop does
    not read its signature and hash its code again (``inspect.signature`` and the identity
    hash cost ~100 us, more than fitting 100 points).

    Keyed on the function object itself (a function redefined under the same name is
    another object) and valid only while what the Model was read from is unchanged: the
    entry also holds the function's ``__code__``, ``__defaults__`` and ``__kwdefaults__``
    objects (keyword defaults and the names by value), and a hit requires the same (assigning ``f.__code__``
    or ``f.__defaults__`` makes a miss; a function with a default that could change in place,
    such as a list, is not cached). Only plain Python functions without ``__wrapped__``
    are kept (a wrapper's identity is read from what it wraps, which may change
    independently; partials hold arguments that may be mutated). Bounded: the oldest of
    ``SIZE`` entries is dropped. A Model is never changed after it is built, so sharing
    one between fits is safe.
    """

    SIZE = 256

    def __init__(self):
        from .._lru import BoundedLRU

        self._entries = BoundedLRU(self.SIZE)

    _ATOMS = (int, float, complex, str, bytes, bool, type(None))

    @classmethod
    def _state(cls, f):
        """What the Model of ``f`` was read from, or None when ``f`` is not cached."""
        if type(f) is not types.FunctionType or "__wrapped__" in f.__dict__:
            return None
        defaults, kw = f.__defaults__, f.__kwdefaults__
        kw_items = None if kw is None else tuple(kw.items())  # a dict: compared by value
        for v in (defaults or ()) + (() if kw_items is None else tuple(v for _, v in kw_items)):
            if type(v) not in cls._ATOMS:  # a default that could change in place: not cached
                return None
        return (f.__code__, defaults, kw_items, (f.__name__, f.__qualname__, f.__module__))

    @staticmethod
    def _same(state, held) -> bool:
        return state[0] is held[0] and state[1] is held[1] and state[2] == held[2] and state[3] == held[3]

    def get(self, f) -> "Model | None":
        state = self._state(f)
        if state is None:
            return None
        entry = self._entries.get(f)
        if entry is None:
            return None
        model, held = entry
        return model if self._same(state, held) else None

    def put(self, f, model: "Model") -> None:
        state = self._state(f)
        if state is None:
            return
        self._entries.put(f, (model, state))

    def clear(self) -> None:
        self._entries.clear()


_callable_models = _CallableModels()


def callable_identity(f: Callable) -> str:
    """``module.qualname#hash`` where the hash covers the code (bytecode, constants, names) and
    defaults, so that editing a function's body changes its identity but a restart does not."""
    h = hashlib.sha256()
    target = f
    if isinstance(f, functools.partial):
        h.update(repr(f.args).encode())
        h.update(repr(sorted(f.keywords.items())).encode())
        target = f.func
    target = inspect.unwrap(target) if hasattr(target, "__wrapped__") else target
    code = getattr(target, "__code__", None)
    if code is None:
        code = getattr(getattr(target, "__call__", None), "__code__", None)
    if code is not None:
        _hash_code(h, code)
    defaults = getattr(target, "__defaults__", None)
    if defaults:
        h.update(repr(defaults).encode())
    mod = getattr(target, "__module__", None) or type(target).__module__
    qual = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"callable:{mod}.{qual}#{h.hexdigest()[:16]}"


def _hash_code(h, code, depth: int = 0) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    if depth > 20:  # nested code objects: bounded
        return
    for c in code.co_consts:
        if inspect.iscode(c):
            _hash_code(h, c, depth + 1)
        else:
            h.update(repr(c).encode())


# -- helpers for guessers ------------------------------------------------------------------
def _clean(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays with the non-finite points dropped (x ``(n,)`` or ``(k, n)``)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if x.ndim == 1 and x.size == y.size:
        keep = np.isfinite(x) & np.isfinite(y)
        return x[keep], y[keep]
    if x.ndim == 2 and x.shape[1] == y.size:
        keep = np.all(np.isfinite(x), axis=0) & np.isfinite(y)
        return x[:, keep], y[keep]
    raise ValueError(f"x of shape {x.shape} does not match y of shape {y.shape}")


def _strictly_inside(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Clip into the bounds, then step off a finite bound (solvers with bounds start inside)."""
    p = np.clip(p, lo, hi)
    span = np.where(np.isfinite(hi - lo), hi - lo, np.inf)
    for i in range(p.size):
        step = min(1e-3 * span[i], 1e-6 * max(1.0, abs(p[i])))
        if math.isfinite(lo[i]) and p[i] <= lo[i]:
            p[i] = lo[i] + step if step > 0 else lo[i]
        elif math.isfinite(hi[i]) and p[i] >= hi[i]:
            p[i] = hi[i] - step if step > 0 else hi[i]
    return p


# How ``model + "gaussian"`` turns the other operand into a Model. The registry installs its
# resolve_model here when it is imported (models/__init__ imports it), so that this module
# never imports the registry, which imports this module.
_resolver: Callable[[Any], "Model"] | None = None


def set_resolver(resolve: Callable[[Any], "Model"]) -> None:
    global _resolver
    _resolver = resolve


def _resolve(spec: Any) -> "Model":
    if _resolver is None:  # cannot happen through the package: nlsq_tasks.models imports the registry
        raise TypeError(f"cannot add {type(spec).__name__} to a Model: no model registry is loaded")
    return _resolver(spec)
