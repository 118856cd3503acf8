"""Run inside a subprocess with 4 forced CPU devices (XLA_FLAGS set by the test):
fit a robust, bounded, weighted problem with standard and chunked, sharded over every
device and on one device, and print what the test compares (JSON on the last line)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import nlsq_tasks
from flows.request import FitSettings
from flows.resolve import apply_overrides
from nlsq_tasks.engine import sharded
from nlsq_tasks.workflow import load_preset


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def sum6(x, a0, a1, a2, a3, a4, a5):
    """Linear in its parameters and ill-conditioned: the normal equations lose too many
    digits after a few passes and the fit switches to the TSQR pass (issue 11)."""
    return sum(a * jnp.exp(-0.1 * i * x) for i, a in enumerate((a0, a1, a2, a3, a4, a5)))


def ill_conditioned() -> dict:
    from nlsq_tasks.engine import loop

    rng = np.random.default_rng(1)
    n = 16_411  # >= 4096 rows per device on 4 devices
    x = np.linspace(0.0, 5.0, n)
    truth = rng.uniform(0.5, 2.0, 6)
    y = sum6(x, *truth) + 0.01 * rng.standard_normal(n)
    many = nlsq_tasks.fit(sum6, x, y, p0=np.ones(6), strategy="standard")
    one = nlsq_tasks.fit(sum6, x, y, p0=np.ones(6), strategy="standard", devices=1)
    return {
        "sharded": many.popt.tolist(), "one": one.popt.tolist(), "nfev": [many.nfev, one.nfev],
        "status": [many.status.name, one.status.name], "n_devices": many.execution["n_devices"],
        "cost": [many.cost, one.cost],
        # which passes were compiled: the sharded driver's QR program, the one-device loop's
        "qr_sharded": any(key[-1] == sharded.QR and key[0] is sum6 for key in sharded._compiled),
        "gram_sharded": any(key[-1] == sharded.GRAM and key[0] is sum6 for key in sharded._compiled),
        "qr_one": any(key[0] == "qr" and key[1] is sum6 for key in loop._cache),
    }


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
    out["ill_conditioned"] = ill_conditioned()
    # The per-device batch: capped by a request (through its preset); the fit on 2 devices
    # is bit-identical to the one on 4 (the tiles and their fold do not depend on the count)
    capped = apply_overrides(load_preset("auto"), FitSettings(model="exponential_decay",
                                                              overrides={"per_device_batch": 2048}))
    std = {k: v for k, v in kw.items()}
    four = nlsq_tasks.fit(model, x, y, strategy="standard", workflow=capped, **std)
    two = nlsq_tasks.fit(model, x, y, strategy="standard", workflow=capped, devices=2, **std)
    out["batch"] = {
        "plan": nlsq_tasks.plan_fit(n_points=n, n_params=3, workflow=capped, strategy="standard").devices[
            "per_device_batch"],
        "execution": [four.execution, two.execution],
        "popt": [four.popt.tolist(), two.popt.tolist(), out["standard"]["sharded"]],
        "cost": [four.cost, two.cost], "pcov": [four.pcov.tolist(), two.pcov.tolist()],
        "nfev": [four.nfev, two.nfev],
    }
    # Placement: every device holds its own rows (never a whole copy on device 0).
    ex = sharded.plan_devices(n, "chunked", chunk_size=4096)
    data = sharded.lay_out_arrays(x, y, sigma, ex)
    out["shards"] = [[str(s.device), int(s.data.shape[-1])] for s in data.y.addressable_shards]
    out["rows"] = ex.rows_per_device
    # Caps: the fit keyword, and a flow request's override carried by its preset.
    out["cap_kwarg"] = two.execution["n_devices"]  # the fit above asked for devices=2
    preset = apply_overrides(load_preset("auto"), FitSettings(model="exponential_decay", overrides={"devices": 3}))
    out["cap_request"] = nlsq_tasks.plan_fit(n_points=n, n_params=3, workflow=preset, strategy="standard").devices[
        "n_devices"]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
