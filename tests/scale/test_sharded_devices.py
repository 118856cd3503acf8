"""Sharded passes over forced CPU devices (a subprocess: the device count is fixed when
JAX starts) match the one-device fit; with one device nothing sharded is compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq_tasks
from nlsq_tasks.engine import sharded

WORKER = Path(__file__).with_name("forced_devices_worker.py")


@pytest.fixture(scope="module")
def four_devices() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("strategy", ["standard", "chunked"])
def test_four_devices_match_one_device(four_devices, strategy):
    r = four_devices[strategy]
    assert four_devices["n_devices_visible"] == 4
    ex, ex1 = r["execution"], r["execution_one"]
    assert ex["sharded"] and ex["n_devices"] == 4 and ex["n_processes"] == 1 and ex["backend"] == "cpu"
    assert not ex1["sharded"] and ex1["n_devices"] == 1
    assert ex["rows_per_device"] * 4 >= 40_003
    popt, popt1 = np.array(r["sharded"]), np.array(r["one"])
    np.testing.assert_allclose(popt, popt1, rtol=1e-12, atol=0)
    assert r["status"][0] == r["status"][1] and r["status"][0] != "MAX_NFEV"
    assert r["active"][1] == 1  # b sits on its upper bound: bounds took part
    np.testing.assert_allclose(r["chi2"][0], r["chi2"][1], rtol=1e-12)
    assert r["summary_execution"] == ex
    assert "4 cpu device(s)" in r["report"] and "rows per device" in r["report"]


def test_an_ill_conditioned_fit_switches_to_the_qr_pass_on_four_devices(four_devices):
    """As on one device: the normal equations until they are too ill-conditioned, then the
    TSQR factor of J (each device's tiles, the device factors folded in device order)."""
    r = four_devices["ill_conditioned"]
    assert r["n_devices"] == 4
    assert r["gram_sharded"] and r["qr_sharded"] and r["qr_one"]
    assert r["status"][0] == r["status"][1] and r["status"][0] != "MAX_NFEV"
    assert r["nfev"][0] == r["nfev"][1]
    # the QR factors are folded in another grouping than one device's tiles: equal to
    # roundoff, which cond(J) ~ 1.4e6 amplifies in popt (measured 1e-9 relative), not in the cost
    np.testing.assert_allclose(r["cost"][0], r["cost"][1], rtol=1e-12)
    np.testing.assert_allclose(r["sharded"], r["one"], rtol=1e-8)


def test_the_per_device_batch_is_capped_by_a_request_and_the_device_count_changes_no_bit(four_devices):
    b = four_devices["batch"]
    assert b["plan"] == 2048  # the request's overrides.per_device_batch, through its preset, in the plan
    four, two = b["execution"]
    assert (four["n_devices"], two["n_devices"]) == (4, 2)
    assert four["per_device_batch"] == two["per_device_batch"] == 2048
    assert "capped to 2,048 by per_device_batch=2048" in four["reason"]
    assert four["rows_per_device"] % 2048 == 0 and two["rows_per_device"] % 2048 == 0  # whole tiles
    # the same tiles folded in the same order: bit-identical on 2 and 4 devices
    assert b["popt"][0] == b["popt"][1] and b["cost"][0] == b["cost"][1] and b["pcov"][0] == b["pcov"][1]
    assert b["nfev"][0] == b["nfev"][1]
    np.testing.assert_allclose(b["popt"][0], b["popt"][2], rtol=1e-12)  # and the uncapped batch's fit
    # without a cap (CPU devices, no MultiGPUConfig): the strategy's tile, whatever the count
    assert four_devices["standard"]["execution"]["per_device_batch"] == 8192
    assert four_devices["chunked"]["execution"]["per_device_batch"] == 4096


def test_each_device_holds_only_its_rows(four_devices):
    shards = four_devices["shards"]
    assert len({d for d, _ in shards}) == 4
    assert all(rows == four_devices["rows"] for _, rows in shards)
    assert four_devices["rows"] < 40_003  # a share, not a copy of the whole data


def _model(x, a, b):
    return a * jnp.exp(-b * x)


def test_one_device_compiles_nothing_sharded():
    import jax

    if len(jax.devices()) != 1:
        pytest.skip("this check needs a one-device process")
    x = np.linspace(0, 4, 20_000)
    y = 3.0 * np.exp(-0.7 * x)
    before = len(sharded._compiled)
    res = nlsq_tasks.fit(_model, x, y, p0=[1.0, 1.0])
    assert res.execution["n_devices"] == 1 and not res.execution["sharded"]
    assert "1 cpu device(s) visible" in res.execution["reason"]
    assert len(sharded._compiled) == before


def test_devices_must_be_a_positive_count():
    x = np.linspace(0, 4, 100)
    from nlsq_tasks.api import FitInputError

    with pytest.raises(FitInputError) as err:
        nlsq_tasks.fit(_model, x, np.exp(-x), p0=[1.0, 1.0], devices=0)
    assert err.value.field == "devices"



def test_caps_from_the_fit_call_and_from_a_request(four_devices):
    assert four_devices["cap_kwarg"] == 2  # devices=2 on a 4-device process
    assert four_devices["cap_request"] == 3  # a flow request's overrides.devices, through its preset


def _sum6(x, a0, a1, a2, a3, a4, a5):
    return sum(a * jnp.exp(-0.1 * i * x) for i, a in enumerate((a0, a1, a2, a3, a4, a5)))


def test_a_checkpointed_sharded_fit_resumes_on_the_qr_pass_to_the_same_bits():
    """The multi-process driver's checkpointed loop (here on a one-device mesh): a fit that
    switched to the TSQR pass and was killed resumes on that pass, bit-identically."""
    from nlsq_tasks.engine.checkpoint import MemoryCheckpointSink
    from nlsq_tasks.engine.options import SolverOptions

    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 5.0, 4096)
    y = _sum6(x, *rng.uniform(0.5, 2.0, 6)) + 0.01 * rng.standard_normal(x.size)
    ex = sharded.Execution("cpu", "cpu", 1, 1, 4096, 1024, True, "a one-device mesh, for the checkpointed loop")
    data = sharded.lay_out_arrays(x, y, None, ex)
    args = (_sum6, data, np.ones(6), np.full(6, -np.inf), np.full(6, np.inf), SolverOptions(), list("abcdef"))

    class Recording(MemoryCheckpointSink):
        def __init__(self, crash_after=None):
            super().__init__(keep_last=100)
            self.passes, self.crash_after = [], crash_after

        def save(self, state, *, fingerprint):
            if self.crash_after is not None and len(self.passes) >= self.crash_after:
                raise RuntimeError("killed")
            self.passes.append(state["factor_pass"])
            super().save(state, fingerprint=fingerprint)

    whole = Recording()
    ref = sharded.run_sharded(*args, strategy="standard", execution=ex, checkpoint=whole, fingerprint="sum6")
    # the first pass (normal equations) found them ill-conditioned: every save is on the QR pass
    assert whole.passes and set(whole.passes) == {sharded.QR}
    switched = whole.passes.index(sharded.QR)
    for crash_after in (switched + 1, switched + 2):  # killed right at the switch, and one QR pass later
        sink = Recording(crash_after)
        with pytest.raises(RuntimeError, match="killed"):
            sharded.run_sharded(*args, strategy="standard", execution=ex, checkpoint=sink, fingerprint="sum6")
        sink.crash_after = None
        res = sharded.run_sharded(*args, strategy="standard", execution=ex, checkpoint=sink, fingerprint="sum6")
        assert res.checkpoints["resumed"]
        np.testing.assert_array_equal(res.popt, ref.popt)
        assert (res.nfev, res.cost, res.status) == (ref.nfev, ref.cost, ref.status)
