"""Run inside a subprocess with 4 forced CPU devices (XLA_FLAGS set by the test):
fit a robust, bounded, weighted problem with standard and chunked, sharded over every
device and on one device, and print what the test compares (JSON on the last line)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nlsq_tasks
from nlsq_tasks.engine import sharded


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def main() -> None:
    rng = np.random.default_rng(7)
    n = 40_003  # not a multiple of 4: the last device holds padding
    x = np.linspace(0.0, 5.0, n)
    sigma = 0.05 + 0.02 * rng.random(n)
    y = 2.5 * np.exp(-1.3 * x) + 0.4 + sigma * rng.standard_normal(n)
    y[::97] += 3.0  # outliers: the robust loss matters
    kw = dict(p0=[1.0, 1.0, 0.0], sigma=sigma, bounds=([0.0, 0.0, -1.0], [10.0, 1.25, 2.0]),
              loss="soft_l1", f_scale=0.1, ftol=1e-10, xtol=1e-10, gtol=1e-10)
    out = {"n_devices_visible": len(jax.devices())}
    for strategy in ("standard", "chunked"):
        extra = {"chunk_size": 4096} if strategy == "chunked" else {}
        many = nlsq_tasks.fit(model, x, y, strategy=strategy, **kw, **extra)
        one = nlsq_tasks.fit(model, x, y, strategy=strategy, devices=1, **kw, **extra)
        out[strategy] = {
            "sharded": many.popt.tolist(), "one": one.popt.tolist(),
            "nfev": [many.nfev, one.nfev], "status": [many.status.name, one.status.name],
            "active": many.active_bounds.tolist(),
            "execution": many.execution, "execution_one": one.execution,
            "summary_execution": many.summary()["execution"], "report": many.report(),
            "chi2": [many.chi2, one.chi2], "r2": [many.r2, one.r2],
        }
    # Placement: every device holds its own rows (never a whole copy on device 0).
    ex = sharded.plan_devices(n, "chunked", chunk_size=4096)
    data = sharded.lay_out_arrays(x, y, sigma, ex)
    out["shards"] = [[str(s.device), int(s.data.shape[-1])] for s in data.y.addressable_shards]
    out["rows"] = ex.rows_per_device
    # Caps: the fit keyword, and a flow request's override carried by its preset.
    from flows.request import FitSettings
    from flows.resolve import apply_overrides
    from nlsq_tasks.workflow import load_preset

    out["cap_kwarg"] = nlsq_tasks.fit(model, x, y, strategy="standard", devices=2, max_nfev=2, **{
        k: v for k, v in kw.items() if k not in ("ftol", "xtol", "gtol")}).execution["n_devices"]
    preset = apply_overrides(load_preset("auto"), FitSettings(model="exponential_decay", overrides={"devices": 3}))
    out["cap_request"] = nlsq_tasks.plan_fit(n_points=n, n_params=3, workflow=preset, strategy="standard").devices[
        "n_devices"]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
