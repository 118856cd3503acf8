"""NIST StRD nonlinear regression: a ``.dat`` parser and the 16 models as JAX functions.

The data files are read from the shared data folder (never copied into the repo).
LRE (log relative error) is NIST's score: the number of certified digits reproduced.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

NIST_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nist"


@dataclass
class NistProblem:
    name: str
    model_text: str
    start1: np.ndarray
    start2: np.ndarray
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    x: np.ndarray  # (n,) or (k, n)
    y: np.ndarray  # the response the model is fitted to (log y for Nelson)


_NUM = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"


def _line_range(text: str, label: str) -> tuple[int, int]:
    m = re.search(label + r"\s*\(lines\s+(\d+)\s+to\s+(\d+)\)", text)
    if m is None:
        raise ValueError(f"no '{label} (lines a to b)' in the header")
    return int(m.group(1)), int(m.group(2))


def parse_dat(path: Path) -> NistProblem:
    text = path.read_text()
    lines = text.splitlines()
    c_lo, c_hi = _line_range(text, "Certified Values")
    d_lo, d_hi = _line_range(text, "Data")
    start1, start2, cert, sd = [], [], [], []
    for ln in lines[c_lo - 1 : c_hi]:
        m = re.match(r"\s*b\d+\s*=\s*(" + _NUM + r")\s+(" + _NUM + r")\s+(" + _NUM + r")\s+(" + _NUM + r")", ln)
        if m:
            a, b, c, d = (float(g) for g in m.groups())
            start1.append(a), start2.append(b), cert.append(c), sd.append(d)
    rss = float(re.search(r"Residual Sum of Squares:\s*(" + _NUM + ")", text).group(1))
    model = re.search(r"Model:.*?\n(.*?)\n\s*\n\s*\n", text, re.S)
    rows = np.array([[float(v) for v in ln.split()] for ln in lines[d_lo - 1 : d_hi] if ln.strip()])
    y = rows[:, 0]
    x = rows[:, 1] if rows.shape[1] == 2 else rows[:, 1:].T.copy()
    name = path.stem
    if name == "Nelson":  # the certified model is for log(y)
        y = np.log(y)
    return NistProblem(
        name=name,
        model_text=" ".join(model.group(1).split()) if model else "",
        start1=np.array(start1),
        start2=np.array(start2),
        certified=np.array(cert),
        certified_sd=np.array(sd),
        certified_rss=rss,
        x=x,
        y=y,
    )


def _rat_cubic(x, b1, b2, b3, b4, b5, b6, b7):
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def _gauss(x, b1, b2, b3, b4, b5, b6, b7, b8):
    return b1 * jnp.exp(-b2 * x) + b3 * jnp.exp(-((x - b4) ** 2) / b5**2) + b6 * jnp.exp(-((x - b7) ** 2) / b8**2)


def _lanczos(x, b1, b2, b3, b4, b5, b6):
    return b1 * jnp.exp(-b2 * x) + b3 * jnp.exp(-b4 * x) + b5 * jnp.exp(-b6 * x)


def _exp_rise(x, b1, b2):
    return b1 * (1 - jnp.exp(-b2 * x))


def _chwirut(x, b1, b2, b3):
    return jnp.exp(-b1 * x) / (b2 + b3 * x)


MODELS = {
    "BoxBOD": _exp_rise,
    "Chwirut1": _chwirut,
    "Chwirut2": _chwirut,
    "DanWood": lambda x, b1, b2: b1 * x**b2,
    "Gauss1": _gauss,
    "Gauss3": _gauss,
    "Hahn1": _rat_cubic,
    "Kirby2": lambda x, b1, b2, b3, b4, b5: (b1 + b2 * x + b3 * x**2) / (1 + b4 * x + b5 * x**2),
    "Lanczos1": _lanczos,
    "Lanczos3": _lanczos,
    "MGH09": lambda x, b1, b2, b3, b4: b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4),
    "MGH17": lambda x, b1, b2, b3, b4, b5: b1 + b2 * jnp.exp(-x * b4) + b3 * jnp.exp(-x * b5),
    "Misra1a": _exp_rise,
    "Nelson": lambda x, b1, b2, b3: b1 - b2 * x[0] * jnp.exp(-b3 * x[1]),
    "Rat42": lambda x, b1, b2, b3: b1 / (1 + jnp.exp(b2 - b3 * x)),
    "Thurber": _rat_cubic,
}


def lre(estimate, certified, digits: float = 11.0) -> np.ndarray:
    """Log relative error per component, capped at ``digits`` (NIST certifies ~11)."""
    est, cert = np.asarray(estimate, float), np.asarray(certified, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(est - cert) / np.abs(cert)
        out = np.where(rel == 0, digits, -np.log10(rel))
    out = np.where(np.isfinite(out), out, 0.0)
    return np.clip(out, 0.0, digits)


def min_lre(estimate, certified) -> float:
    v = lre(estimate, certified)
    return float(v.min()) if v.size else math.nan


def available() -> list[Path]:
    return sorted(NIST_DIR.glob("*.dat")) if NIST_DIR.is_dir() else []
