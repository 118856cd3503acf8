"""Safe expression models: a string such as ``"a*exp(-b*x) + c"`` becomes a JAX function.

These strings arrive from YAML files and from the Prefect UI, so this module is a security
boundary. Nothing here calls ``eval``, ``exec`` or ``compile``: the text is parsed with
``ast.parse(mode="eval")`` (which builds a syntax tree and runs nothing), every node is
checked against a whitelist, and the accepted tree is turned into a tree of closures over
``jax.numpy`` operations, an interpreter. No Python object is ever looked up by a name
taken from the text: names map through fixed tables to parameters, the independent
variable, two constants or the whitelisted functions.

Grammar (everything else is rejected with :class:`UnsafeExpressionError`, which names the
offending token and its 1-based column):

* numbers (int or float literals, finite), parameter names, the independent variable;
* ``+ - * / **`` and unary ``+ -``;
* calls by bare name of: ``exp log log10 log1p expm1 sqrt sin cos tan arcsin arccos arctan
  arctan2 sinh cosh tanh abs sign minimum maximum erf erfc where``, positional arguments only;
* ``where(condition, a, b)``, the only place comparisons ``< <= > >= == !=`` (chains allowed) may appear;
* constants ``pi`` and ``e``;
* several features (x of shape ``(k, n)``): either subscripts ``x[0]``, ``x[1]`` (non-negative
  integer literals) of the independent variable, or ``independent=("t", "T")`` naming the rows.

Limits: at most 2000 characters, ASCII only, nesting depth at most 100. Numbers are floats
from the start, so ``9**9**9**9`` is ``inf`` computed by XLA, not a Python big integer.

Parameters are the remaining names in order of first appearance, or exactly those in
``params=[...]`` (then any other name is an error). Integer exponents up to 64 use
``lax.integer_pow`` (exact, and no ``log(0)`` in the gradient at ``x = 0``).
"""

from __future__ import annotations

import ast
import hashlib
from typing import Callable, Sequence

import jax.numpy as jnp
import jax.scipy.special as jsp
from jax import lax

from .base import Model

MAX_LENGTH = 2000
MAX_DEPTH = 100
MAX_FEATURES = 64
MAX_INT_POWER = 64

FUNCTIONS: dict[str, tuple[Callable, int]] = {  # name -> (jnp function, number of arguments)
    "exp": (jnp.exp, 1),
    "log": (jnp.log, 1),
    "log10": (jnp.log10, 1),
    "log1p": (jnp.log1p, 1),
    "expm1": (jnp.expm1, 1),
    "sqrt": (jnp.sqrt, 1),
    "sin": (jnp.sin, 1),
    "cos": (jnp.cos, 1),
    "tan": (jnp.tan, 1),
    "arcsin": (jnp.arcsin, 1),
    "arccos": (jnp.arccos, 1),
    "arctan": (jnp.arctan, 1),
    "arctan2": (jnp.arctan2, 2),
    "sinh": (jnp.sinh, 1),
    "cosh": (jnp.cosh, 1),
    "tanh": (jnp.tanh, 1),
    "abs": (jnp.abs, 1),
    "sign": (jnp.sign, 1),
    "minimum": (jnp.minimum, 2),
    "maximum": (jnp.maximum, 2),
    "erf": (jsp.erf, 1),
    "erfc": (jsp.erfc, 1),
    "where": (jnp.where, 3),
}
CONSTANTS = {"pi": float(jnp.pi), "e": float(jnp.e)}
_BINOPS = {ast.Add: jnp.add, ast.Sub: jnp.subtract, ast.Mult: jnp.multiply, ast.Div: jnp.true_divide, ast.Pow: jnp.power}
_UNARY = {ast.UAdd: jnp.positive, ast.USub: jnp.negative}
_COMPARE = {ast.Lt: jnp.less, ast.LtE: jnp.less_equal, ast.Gt: jnp.greater, ast.GtE: jnp.greater_equal,
            ast.Eq: jnp.equal, ast.NotEq: jnp.not_equal}
_ALLOWED = (
    "numbers, parameter names, the independent variable, + - * / **, comparisons inside where(), "
    f"pi, e, and the functions {', '.join(FUNCTIONS)}"
)
_CONSTRUCTS = {  # readable names for the node types users (or attackers) are most likely to write
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "list comprehension", ast.SetComp: "set comprehension", ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string", ast.FormattedValue: "f-string",
    ast.NamedExpr: "assignment expression (:=)", ast.IfExp: "conditional expression (use where())",
    ast.BoolOp: "and/or (use where() with a comparison)", ast.List: "list", ast.Tuple: "tuple", ast.Set: "set",
    ast.Dict: "dict", ast.Starred: "starred argument", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield", ast.Slice: "slice", ast.Compare: "comparison outside where()",
}

Node = Callable  # compiled node: (x, params) -> array or float


class UnsafeExpressionError(ValueError):
    """An expression was rejected: not valid syntax, or outside the whitelisted grammar."""

    def __init__(self, reason: str, token: str | None = None, column: int | None = None):
        self.reason, self.token, self.column = reason, token, column
        where = f" at column {column}" if column is not None else ""
        tok = f" {token!r}" if token is not None else ""
        super().__init__(f"expression rejected: {reason}{tok}{where}. Allowed: {_ALLOWED}.")


def _fail(reason: str, node: ast.AST | None = None, token: str | None = None, text: str = "") -> None:
    column = node.col_offset if isinstance(node, (ast.expr, ast.keyword)) else None
    if isinstance(node, ast.Attribute) and node.end_col_offset is not None:
        column = node.end_col_offset - len(node.attr) - 1  # point at ".attr", not at the object
    if token is None and node is not None and text:
        token = ast.get_source_segment(text, node) or type(node).__name__
        token = token if len(token) <= 40 else token[:37] + "..."
    raise UnsafeExpressionError(reason, token, None if column is None else column + 1)


def parse_expression(text: str) -> tuple[ast.Expression, str]:
    """Length, character and syntax checks. Returns the (unvalidated) tree and the one-line
    source it was parsed from; tree columns are offsets into that source."""
    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}.")
    if len(text) > MAX_LENGTH:
        raise UnsafeExpressionError(f"the expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    for i, ch in enumerate(text):
        if not (" " <= ch <= "~" or ch in "\t\r\n"):
            raise UnsafeExpressionError("only printable ASCII characters are allowed; found", repr(ch)[1:-1], i + 1)
    # One line; a leading blank (an indentation error to the parser) becomes "(" so that
    # columns still match what the user typed. A newline inside would end the expression.
    src = text.replace("\t", " ").replace("\r", " ").replace("\n", " ").rstrip()
    lead = len(src) - len(src.lstrip())
    if not src.strip():
        raise UnsafeExpressionError("the expression is empty")
    if lead:
        src = "(" + src[1:] + ")"
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as exc:
        raise UnsafeExpressionError(f"invalid syntax ({exc.msg})", None, exc.offset) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise UnsafeExpressionError(f"the expression cannot be parsed ({type(exc).__name__})") from None
    return tree, src


def _check_depth(tree: ast.AST) -> None:
    """Iterative (an attacker controls the depth), so no recursion happens before the limit."""
    # The left operand of a chain a + b - c ... (a flat sum parses into a left-leaning tree)
    # stays at its parent's depth: a 300-term sum is flat, not 300 levels deep. Only
    # expression nodes count (context markers such as Load have no position to point at).
    stack = [(tree, 0)]
    budget = 10 * MAX_LENGTH  # nodes; a 2000-character text has far fewer
    while stack and budget > 0:
        budget -= 1
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            _fail(f"nesting deeper than {MAX_DEPTH} levels (calls, signs or powers inside each other)", node)
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.expr):
                continue
            flat = _is_chain(node) and child is node.left and _is_chain(child)
            stack.append((child, depth if flat else depth + 1))
    if stack:
        raise UnsafeExpressionError("the expression has too many parts")


_CHAIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)


def _is_chain(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, _CHAIN_OPS)


class _Compiler:
    def __init__(self, text: str, independent: Sequence[str], params: Sequence[str] | None):
        self.text = text
        self.independent = list(independent)
        self.declared = params is not None
        self.params: list[str] = list(params or [])
        self.max_index = -1  # largest x[i] seen
        self.bare_x = False

    def fail(self, reason: str, node: ast.AST, token: str | None = None):
        _fail(reason, node, token, self.text)

    def build(self, node: ast.AST, in_where_condition: bool = False) -> Node:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            op = _UNARY.get(type(node.op))
            if op is None:
                self.fail("operator not allowed:", node, {ast.Not: "not", ast.Invert: "~"}.get(type(node.op)))
            f = self.build(node.operand)
            return lambda x, p: op(f(x, p))
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            self.fail("attribute access is not allowed:", node, "." + node.attr)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Compare) and in_where_condition:
            return self.compare(node)
        self.fail(f"{_CONSTRUCTS.get(type(node), type(node).__name__)} is not allowed:", node)

    def constant(self, node: ast.Constant) -> Node:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            kind = {str: "string", bytes: "bytes", complex: "complex number", bool: "boolean"}.get(type(v), repr(v))
            self.fail(f"{kind} literals are not allowed:", node)
        try:
            f = float(v)
        except OverflowError:
            f = float("inf")
        if f != f or f in (float("inf"), float("-inf")):
            self.fail("numbers must be finite:", node)
        return lambda x, p: f

    def name(self, node: ast.Name) -> Node:
        nm = node.id
        if nm in self.independent:
            if len(self.independent) > 1:
                i = self.independent.index(nm)
                return lambda x, p: x[i]
            self.bare_x = True
            return lambda x, p: x
        if nm in self.params:
            i = self.params.index(nm)
            return lambda x, p: p[i]
        if nm in CONSTANTS:
            c = CONSTANTS[nm]
            return lambda x, p: c
        if nm in FUNCTIONS:
            self.fail("a function must be called, e.g. exp(x):", node)
        if self.declared:
            self.fail(f"unknown name (parameters are {self.params}):", node)
        if nm.startswith("_"):
            self.fail("names may not start with '_':", node)
        self.params.append(nm)
        i = len(self.params) - 1
        return lambda x, p: p[i]

    def binop(self, node: ast.BinOp) -> Node:
        if _is_chain(node) and _is_chain(node.left):
            return self.chain(node)
        op = _BINOPS.get(type(node.op))
        if op is None:
            hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
            self.fail(f"operator not allowed{hint}:", node, _op_symbol(node.op))
        left = self.build(node.left)
        n = _integer_exponent(node.right) if isinstance(node.op, ast.Pow) else None
        if n is not None:
            return lambda x, p: lax.integer_pow(jnp.asarray(left(x, p), dtype=float), n)
        right = self.build(node.right)
        return lambda x, p: op(left(x, p), right(x, p))

    def chain(self, node: ast.BinOp) -> Node:
        """``a + b - c * d ...`` as a loop over its terms: no Python recursion per term, so a
        long flat sum builds and evaluates like a short one."""
        links = []
        cur: ast.AST = node
        for _ in range(10 * MAX_LENGTH):  # bounded by the text's length
            if not _is_chain(cur):
                break
            links.append(cur)
            cur = cur.left
        first = self.build(cur)
        steps = [(_BINOPS[type(n.op)], self.build(n.right)) for n in reversed(links)]

        def evaluate(x, p):
            v = first(x, p)
            for op, g in steps:
                v = op(v, g(x, p))
            return v

        return evaluate

    def call(self, node: ast.Call) -> Node:
        if isinstance(node.func, ast.Attribute):
            self.fail("attribute access is not allowed:", node.func, "." + node.func.attr)
        if not isinstance(node.func, ast.Name):
            self.fail("only whitelisted functions called by bare name are allowed:", node.func)
        fname = node.func.id
        if fname not in FUNCTIONS:
            self.fail("unknown function:", node.func, fname)
        if node.keywords:
            kw = node.keywords[0]
            self.fail("keyword arguments are not allowed:", kw, kw.arg or "**")
        fn, arity = FUNCTIONS[fname]
        if len(node.args) != arity:
            self.fail(f"{fname}() takes {arity} argument(s), got {len(node.args)}:", node)
        if fname == "where" and not isinstance(node.args[0], ast.Compare):
            self.fail("the first argument of where() must be a comparison, e.g. where(x < c, a, b):", node.args[0])
        args = [self.build(a, in_where_condition=(fname == "where" and k == 0)) for k, a in enumerate(node.args)]
        if arity == 1:
            (a,) = args
            return lambda x, p: fn(a(x, p))
        return lambda x, p: fn(*[a(x, p) for a in args])

    def compare(self, node: ast.Compare) -> Node:
        ops = []
        for op in node.ops:
            if type(op) not in _COMPARE:
                self.fail("comparison not allowed:", node, _op_symbol(op))
            ops.append(_COMPARE[type(op)])
        terms = [self.build(node.left)] + [self.build(c) for c in node.comparators]

        def cond(x, p):
            vals = [t(x, p) for t in terms]
            out = ops[0](vals[0], vals[1])
            for k in range(1, len(ops)):  # a < b < c means a < b and b < c
                out = jnp.logical_and(out, ops[k](vals[k], vals[k + 1]))
            return out

        return cond

    def subscript(self, node: ast.Subscript) -> Node:
        if not (isinstance(node.value, ast.Name) and node.value.id in self.independent and len(self.independent) == 1):
            self.fail("subscripts are allowed only on the independent variable, as x[0]:", node)
        idx = node.slice
        if not (isinstance(idx, ast.Constant) and type(idx.value) is int and 0 <= idx.value < MAX_FEATURES):
            self.fail(f"a feature index must be an integer literal from 0 to {MAX_FEATURES - 1}:", idx)
        i = idx.value
        self.max_index = max(self.max_index, i)
        return lambda x, p: x[i]


def _integer_exponent(node: ast.AST) -> int | None:
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float) and float(node.value).is_integer():
        n = int(node.value)
        if 0 < abs(n) <= MAX_INT_POWER:
            return sign * n
    return None


def _op_symbol(op: ast.AST) -> str:
    symbols = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitXor: "^", ast.BitAnd: "&",
               ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.Is: "is", ast.IsNot: "is not",
               ast.In: "in", ast.NotIn: "not in"}
    return symbols.get(type(op), type(op).__name__)


def _check_dunders(tree: ast.AST, text: str) -> None:
    """Name the most telling token first: any dunder anywhere, before other rules trigger."""
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name is not None and "__" in name:
            _fail("dunder names are not allowed:", node, name if isinstance(node, ast.Name) else "." + name, text)


class ExpressionFunction:
    """The compiled expression as ``f(x, *params)``. Equal (and equally hashed) for equal
    digests of (syntax tree, independent names, parameter order), so the engine's compile
    cache, keyed by the function, compiles an expression once however often it is parsed."""

    def __init__(self, root: Node, digest: str, per_feature_rows: bool, bare_x: bool, source: tuple = ()):
        self.root, self.digest = root, digest
        self.__name__ = "expression"  # for logs that print fn.__name__
        self.per_feature_rows, self.bare_x = per_feature_rows, bare_x
        self._source = source  # (expression, params, independent): closures do not pickle, text does

    def __reduce__(self):
        return _function_of, self._source

    def __call__(self, x, *p):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(float)
        out = jnp.asarray(self.root(x, p), dtype=jnp.result_type(x.dtype, *[jnp.asarray(v).dtype for v in p]))
        rows = self.per_feature_rows or (not self.bare_x and x.ndim == 2)
        return jnp.broadcast_to(out, x.shape[1:] if rows else x.shape)  # "c" alone: one value per point

    def __eq__(self, other):
        return type(other) is ExpressionFunction and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)


def _function_of(expression, params, independent):
    return expression_model(expression, params, independent).fn


def expression_model(
    expression: str,
    params: Sequence[str] | None = None,
    independent: str | Sequence[str] = "x",
    name: str | None = None,
) -> Model:
    """Compile ``expression`` into a :class:`Model` (see the module docstring for the grammar)."""
    indep = [independent] if isinstance(independent, str) else list(independent)
    reserved = set(FUNCTIONS) | set(CONSTANTS)
    for v in indep:
        if not isinstance(v, str) or not v.isidentifier() or v.startswith("_") or v in reserved:
            raise ValueError(f"independent={independent!r}: {v!r} is not allowed (an identifier, not a function or constant).")
    if len(set(indep)) != len(indep) or not indep or len(indep) > MAX_FEATURES:
        raise ValueError(f"independent={independent!r}: give 1 to {MAX_FEATURES} distinct names.")
    if params is not None:
        params = list(params)
        for nm in params:
            if not isinstance(nm, str) or not nm.isidentifier() or nm.startswith("_") or nm in reserved or nm in indep:
                raise ValueError(
                    f"params: {nm!r} is not allowed (an identifier not starting with '_', not a function, "
                    f"constant or the independent variable)."
                )
    tree, src = parse_expression(expression)
    _check_depth(tree)
    _check_dunders(tree, src)
    flat = " ".join(expression.split())
    comp = _Compiler(src, indep, params)
    root = comp.build(tree)
    if comp.bare_x and comp.max_index >= 0:
        raise UnsafeExpressionError(f"{indep[0]!r} is used both bare and as {indep[0]}[i]; use one or the other")
    if not comp.params:
        raise UnsafeExpressionError("the expression has no parameters to fit")
    n_features = len(indep) if len(indep) > 1 else (comp.max_index + 1 if comp.max_index >= 0 else 1)
    per_feature_rows = len(indep) > 1 or comp.max_index >= 0
    digest = hashlib.sha256("\n".join([ast.dump(tree), ",".join(indep), ",".join(comp.params)]).encode()).hexdigest()
    fn = ExpressionFunction(root, digest[:32], per_feature_rows, comp.bare_x, (expression, params, independent))
    return Model(
        fn,
        comp.params,
        name or "expression",
        identity=f"expression:{digest[:32]}",
        formula=flat,
        n_features=n_features,
        spec=flat if (params is None and indep == ["x"]) else None,
        short="f",
        _rebuild=(expression_model, (expression, params, independent, name)),
    )
