"""Our curve_fit against the behaviours SciPy's own curve_fit tests check
(``scipy/optimize/tests/test_minpack.py::TestCurveFit``), written in SciPy's style.

Models are written with NumPy, as SciPy users write them: they run on the host with
finite-difference derivatives (see nlsq_tasks._host_model). Expected values are SciPy's,
computed live by ``scipy.optimize.curve_fit`` on the same problem, never copied numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

scipy_optimize = pytest.importorskip("scipy.optimize")

from nlsq_tasks import OptimizeWarning, curve_fit  # noqa: E402


def scipy_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy_optimize.OptimizeWarning)
        return scipy_optimize.curve_fit(*args, **kwargs)


class TestCurveFit:
    def setup_method(self):
        self.y = np.array([1.0, 3.2, 9.5, 13.7])
        self.x = np.array([1.0, 2.0, 3.0, 4.0])

    def test_one_argument(self):
        def func(x, a):
            return x**a

        popt, pcov = curve_fit(func, self.x, self.y)
        ref_popt, ref_pcov = scipy_fit(func, self.x, self.y)
        assert len(popt) == 1 and pcov.shape == (1, 1)
        assert_allclose(popt, ref_popt, rtol=1e-6)
        assert_allclose(pcov, ref_pcov, rtol=1e-4)
        popt2, pcov2, infodict, errmsg, ier = curve_fit(func, self.x, self.y, full_output=1, check_finite=False)
        assert_allclose(popt2, popt, rtol=1e-12)

    def test_two_argument(self):
        def func(x, a, b):
            return b * x**a

        popt, pcov = curve_fit(func, self.x, self.y)
        ref_popt, ref_pcov = scipy_fit(func, self.x, self.y)
        assert_allclose(popt, ref_popt, rtol=1e-5)
        assert_allclose(pcov, ref_pcov, rtol=1e-3)

    def test_func_is_classmethod(self):
        class Holder:
            def func(self, x, a, b):
                return b * x**a

        popt, pcov = curve_fit(Holder().func, self.x, self.y)
        ref_popt, _ = scipy_fit(Holder().func, self.x, self.y)
        assert pcov.shape == (2, 2)
        assert_allclose(popt, ref_popt, rtol=1e-5)

    def test_double_gaussian_needs_small_fd_steps(self):
        # gh-2639: a narrow double peak far from zero. SciPy's own TRF ends in another basin
        # (cost 540x); the first Gauss-Newton trial raises the cost 2400x, and only shrinking
        # the radius to 0.1 of such a step (MINPACK's rule, which 'lm' follows) finds the peaks
        x = 574.14 + 0.0115 * np.arange(10)
        y = np.array([859.0, 997.0, 1699.0, 2604.0, 2013.0, 1964.0, 2435.0, 1550.0, 949.0, 841.0])
        guess = [574.186, 574.216, 1302.0, 1302.0, 0.0035, 859.0]

        def f(x, x0, x1, A0, A1, sigma, c):
            return A0 * np.exp(-((x - x0) ** 2) / (2 * sigma**2)) + A1 * np.exp(-((x - x1) ** 2) / (2 * sigma**2)) + c

        popt, _ = curve_fit(f, x, y, guess, maxfev=10000)
        ref, _ = scipy_fit(f, x, y, guess, maxfev=10000)
        assert_allclose(popt, ref, rtol=1e-5)

    @pytest.mark.parametrize("method", ["lm", "trf", "dogbox"])
    def test_pcov(self, method):
        xdata = np.array([0, 1, 2, 3, 4, 5])
        ydata = np.array([1, 1, 5, 7, 8, 12])
        sigma = np.array([1, 2, 1, 2, 1, 2])

        def f(x, a, b):
            return a * x + b

        for s, absolute in ((sigma, False), (3 * sigma, False), (sigma, True), (3 * sigma, True)):
            _, pcov = curve_fit(f, xdata, ydata, p0=[2, 0], sigma=s, absolute_sigma=absolute, method=method)
            _, ref = scipy_fit(f, xdata, ydata, p0=[2, 0], sigma=s, absolute_sigma=absolute, method=method)
            assert_allclose(np.sqrt(np.diag(pcov)), np.sqrt(np.diag(ref)), rtol=1e-6)
        # relative sigma: scaling sigma does not change pcov
        _, p1 = curve_fit(f, xdata, ydata, p0=[2, 0], sigma=sigma, method=method)
        _, p3 = curve_fit(f, xdata, ydata, p0=[2, 0], sigma=3 * sigma, method=method)
        assert_allclose(p1, p3, rtol=1e-8)

    def test_pcov_inf_when_as_many_points_as_parameters(self):
        def f(x, a, b):
            return a * x + b

        with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not be estimated"):
            _, pcov = curve_fit(f, np.array([0.0, 1.0]), np.array([1.0, 1.0]), p0=[2, 0])
        assert_array_equal(pcov, np.full((2, 2), np.inf))

    def test_pcov_inf_for_a_parameter_without_effect(self):
        # SciPy sets the whole pcov to inf; we mark only what the data do not determine
        # (issue 11: "inf for the affected variances") and name it in the warning.
        def f_flat(x, a, b):
            return a * x

        xdata, ydata, sigma = np.arange(6.0), np.array([1, 1, 5, 7, 8, 12.0]), np.array([1, 2, 1, 2, 1, 2.0])
        with pytest.warns(OptimizeWarning, match=r"\['b'\] are not determined"):
            _, pcov = curve_fit(f_flat, xdata, ydata, p0=[2, 0], sigma=sigma)
        assert np.isinf(pcov[1, 1]) and np.all(np.isinf(pcov[0, 1])) and np.isinf(pcov[1, 0])
        assert np.isfinite(pcov[0, 0]) and pcov[0, 0] > 0

    def test_indeterminate_covariance_warns(self):
        xdata = np.array([1, 2, 3, 4, 5, 6])
        ydata = np.array([1, 2, 3, 4, 5.5, 6])
        with pytest.warns(scipy_optimize.OptimizeWarning):
            curve_fit(lambda x, a, b: a * x, xdata, ydata)

    def test_optimize_warning_is_scipys(self):
        assert issubclass(OptimizeWarning, scipy_optimize.OptimizeWarning)
        with warnings.catch_warnings():  # a SciPy-style filter silences ours
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", category=scipy_optimize.OptimizeWarning)
            curve_fit(lambda x, a, b: a * x + b, np.array([0.0, 1.0]), np.array([1.0, 2.0]))

    def test_array_like(self):
        def f_linear(x, a, b):
            return a * x + b

        assert_allclose(curve_fit(f_linear, [1, 2, 3, 4], [3, 5, 7, 9])[0], [2, 1], atol=1e-10)

    def test_NaN_handling(self):
        xdata = np.array([1, np.nan, 3])
        ydata = np.array([1, 2, 3])
        with pytest.raises(ValueError):
            curve_fit(lambda x, a, b: a * x + b, xdata, ydata)
        with pytest.raises(ValueError):
            curve_fit(lambda x, a, b: a * x + b, ydata, xdata)
        with pytest.raises(ValueError):
            curve_fit(lambda x, a, b: a * x + b, xdata, ydata, check_finite=True)

    @staticmethod
    def _check_nan_policy(f, x_nan, x_clean, y_nan, y_clean, method):
        kwargs = {"f": f, "xdata": x_nan, "ydata": y_nan, "method": method, "check_finite": False}
        with pytest.raises(ValueError, match="`nan_policy='propagate'` is not supported by this function."):
            curve_fit(**kwargs, nan_policy="propagate", maxfev=2000)
        with pytest.raises(ValueError, match="The input contains nan"):
            curve_fit(**kwargs, nan_policy="raise")
        with_nan, _ = curve_fit(**kwargs, nan_policy="omit")
        without, _ = curve_fit(**{**kwargs, "xdata": x_clean, "ydata": y_clean})
        assert_allclose(with_nan, without, rtol=1e-12)
        with pytest.raises(ValueError, match=r"nan_policy must be one of \{None, 'raise', 'omit'\}"):
            curve_fit(**kwargs, nan_policy="hi")

    @pytest.mark.parametrize("method", ["lm", "trf", "dogbox"])
    def test_nan_policy_1d(self, method):
        def f(x, a, b):
            return a * x + b

        self._check_nan_policy(f, np.array([2, 3, np.nan, 4, 4, np.nan]), np.array([2, 3, 4]),
                               np.array([1, 2, 5, 3, np.nan, 7]), np.array([1, 2, 3]), method)

    @pytest.mark.parametrize("method", ["lm", "trf", "dogbox"])
    def test_nan_policy_2d(self, method):
        def f(x, a, b):
            return a * x[0, :] + b + x[1, :]

        x_nan = np.array([[2, 3, np.nan, 4, 4, np.nan, 5], [2, 3, np.nan, np.nan, 4, np.nan, 7]])
        self._check_nan_policy(f, x_nan, np.array([[2, 3, 5], [2, 3, 7]]),
                               np.array([1, 2, 5, 3, np.nan, 7, 10]), np.array([1, 2, 10]), method)

    @pytest.mark.parametrize("method", ["lm", "trf", "dogbox"])
    def test_nan_policy_3d(self, method):
        # x of shape (1, 2, n): passed to f as it is, all points at once
        def f(x, a, b):
            return a * x[..., 0, :].squeeze() + b + x[..., 1, :].squeeze()

        x_nan = np.array([[[2, 3, np.nan, 4, 4, np.nan, 5], [2, 3, np.nan, np.nan, 4, np.nan, 7]]])
        self._check_nan_policy(f, x_nan, np.array([[[2, 3, 5], [2, 3, 7]]]),
                               np.array([1, 2, 5, 3, np.nan, 7, 10]), np.array([1, 2, 10]), method)

    def test_empty_inputs(self):
        for args, kw in ((([], []), {}), (([], []), {"bounds": (1, 2)}), (([1], []), {}), (([2], []), {"bounds": (1, 2)})):
            with pytest.raises(ValueError):
                curve_fit(lambda x, a: a * x, *args, **kw)

    def test_function_zero_params(self):
        with pytest.raises(ValueError):
            curve_fit(lambda x: x, [1, 2], [3, 4])

    def test_None_x(self):
        popt, _ = curve_fit(lambda _, a: a * np.arange(10), None, 2 * np.arange(10))
        assert_allclose(popt, [2.0])

    def test_object_x_is_passed_unchanged(self):
        class Grid:  # not an array: f receives it as it is, as in SciPy
            n = 12

        popt, _ = curve_fit(lambda g, a, b: a * np.arange(g.n) + b, Grid(), 3.0 * np.arange(12) - 1.0)
        assert_allclose(popt, [3.0, -1.0], atol=1e-8)

    def test_method_argument(self):
        def f(x, a, b):
            return a * np.exp(-b * x)

        xdata = np.linspace(0, 1, 11)
        ydata = f(xdata, 2.0, 2.0)
        for method in ["trf", "dogbox", "lm", None]:
            popt, _ = curve_fit(f, xdata, ydata, method=method)
            assert_allclose(popt, [2.0, 2.0], rtol=1e-6)
        with pytest.raises(ValueError):
            curve_fit(f, xdata, ydata, method="unknown")

    def test_dogbox_says_how_it_ran(self):
        def f(x, a, b):
            return a * np.exp(-b * x)

        xdata = np.linspace(0, 1, 11)
        res = curve_fit(f, xdata, f(xdata, 2.0, 2.0), method="dogbox", bounds=(0, 5))
        assert any("dogbox" in w and "trf" in w for w in res.result.warnings)

    def test_full_output(self):
        def f(x, a, b):
            return a * np.exp(-b * x)

        xdata = np.linspace(0, 1, 11)
        ydata = f(xdata, 2.0, 2.0)
        for method in ["trf", "dogbox", "lm", None]:
            popt, pcov, infodict, errmsg, ier = curve_fit(f, xdata, ydata, method=method, full_output=True)
            assert_allclose(popt, [2.0, 2.0], rtol=1e-6)
            assert {"nfev", "fvec", "fjac", "ipvt", "qtf"} <= set(infodict)
            assert isinstance(errmsg, str)
            assert ier in (1, 2, 3, 4)

    def test_full_output_fjac_ipvt_qtf_are_leastsqs(self):
        # the covariance leastsq builds from fjac and ipvt, and qtf up to signs, agree with SciPy's 'lm'
        rng = np.random.default_rng(3)

        def f(x, a, b, c):
            return a * np.exp(-b * x) + c

        xdata = np.linspace(0, 4, 40)
        ydata = f(xdata, 2.5, 1.3, 0.5) + 0.05 * rng.standard_normal(40)
        sigma = np.full(40, 0.05)
        *_, info, _, _ = curve_fit(f, xdata, ydata, sigma=sigma, full_output=True, method="lm")
        *_, ref, _, _ = scipy_fit(f, xdata, ydata, sigma=sigma, full_output=True, method="lm")

        def cov(i):  # as leastsq builds cov_x from them
            perm = i["ipvt"]
            n = len(perm)
            invR = np.linalg.inv(np.triu(np.transpose(i["fjac"])[:n, :]))
            invR[perm] = invR.copy()
            return invR @ invR.T

        assert info["fjac"].shape == ref["fjac"].shape
        assert_array_equal(info["ipvt"], ref["ipvt"])
        assert_allclose(cov(info), cov(ref), rtol=1e-4)
        # qtf = (Q^T fvec)[:p] is R times the (permuted) gradient: ~0 at the optimum, as SciPy's
        assert info["qtf"].shape == ref["qtf"].shape
        assert np.linalg.norm(info["qtf"]) <= 1e-3 * np.linalg.norm(info["fvec"])
        assert_allclose(info["fvec"], ref["fvec"], rtol=1e-5, atol=1e-6)

    def test_bounds(self):
        def f(x, a, b):
            return a * np.exp(-b * x)

        xdata = np.linspace(0, 1, 11)
        ydata = f(xdata, 2.0, 2.0)
        lb, ub = [1.0, 0], [1.5, 3.0]
        for method in [None, "trf", "dogbox"]:
            popt, _ = curve_fit(f, xdata, ydata, bounds=(lb, ub), method=method)
            assert_allclose(popt[0], 1.5)
            popt_class, _ = curve_fit(f, xdata, ydata, bounds=scipy_optimize.Bounds(lb, ub), method=method)
            assert_allclose(popt_class, popt, rtol=1e-10)
        popt, _ = curve_fit(f, xdata, ydata, method="trf", bounds=([0.0, 0], [0.6, np.inf]))
        assert_allclose(popt[0], 0.6)
        with pytest.raises(ValueError):
            curve_fit(f, xdata, ydata, bounds=(lb, ub), method="lm")

    def test_bounds_p0(self):
        # gh-5719: the start is honoured with bounds
        def f(x, a):
            return np.sin(x + a)

        xdata = np.linspace(-2 * np.pi, 2 * np.pi, 40)
        ydata = np.sin(xdata)
        for method in ["trf", "dogbox"]:
            popt_1, _ = curve_fit(f, xdata, ydata, p0=2.1 * np.pi)
            popt_2, _ = curve_fit(f, xdata, ydata, p0=2.1 * np.pi, bounds=(-3 * np.pi, 3 * np.pi), method=method)
            assert_allclose(popt_1, popt_2, rtol=1e-8)

    def test_jac(self):
        def f(x, a, b):
            return a * np.exp(-b * x)

        def jac(x, a, b):
            e = np.exp(-b * x)
            return np.vstack((e, -a * x * e)).T

        xdata = np.linspace(0, 1, 11)
        ydata = f(xdata, 2.0, 2.0)
        for method in ["trf", "dogbox"]:
            for scheme in ["2-point", "3-point", "cs"]:
                popt, _ = curve_fit(f, xdata, ydata, jac=scheme, method=method)
                assert_allclose(popt, [2, 2], rtol=1e-6)
        for method in ["lm", "trf", "dogbox"]:
            popt, _ = curve_fit(f, xdata, ydata, method=method, jac=jac)
            assert_allclose(popt, [2, 2], rtol=1e-6)
        ydata[5] = 100  # an outlier, down-weighted by its sigma
        sigma = np.ones(xdata.shape[0])
        sigma[5] = 200
        for method in ["lm", "trf", "dogbox"]:
            popt, _ = curve_fit(f, xdata, ydata, sigma=sigma, method=method, jac=jac)
            assert_allclose(popt, [2, 2], rtol=1e-3)

    def test_maxfev_and_bounds(self):
        x = np.arange(0, 10)
        y = 2 * x
        popt1, _ = curve_fit(lambda x, p: p * x, x, y, bounds=(0, 3), maxfev=100)
        popt2, _ = curve_fit(lambda x, p: p * x, x, y, bounds=(0, 3), max_nfev=100)
        assert_allclose(popt1, 2, atol=1e-12)
        assert_allclose(popt2, 2, atol=1e-12)

    @pytest.mark.parametrize("sigma_dim", [0, 1, 2])
    def test_curvefit_omitnan(self, sigma_dim):
        def exponential(x, a, b):
            return b * np.exp(a * x)

        rng = np.random.default_rng(5782)
        N = 100
        x = np.linspace(1, 10, N)
        y = exponential(x, 0.2, 0.5)
        if sigma_dim == 0:
            sigma = 0.05
            y += rng.normal(0, sigma, N)
        elif sigma_dim == 1:
            sigma = x * 0.05
            y += rng.normal(0, sigma, N)
        else:
            a = rng.normal(0, 2, (N, N))
            sigma = a @ a.T
            y += rng.multivariate_normal(np.zeros_like(x), sigma)
        p0 = [0.1, 1.0]
        i_x, i_y = rng.integers(N, size=5), rng.integers(N, size=5)
        x[i_x] = np.nan
        y[i_y] = np.nan
        res_opt, res_cov = curve_fit(exponential, x, y, p0=p0, sigma=sigma, nan_policy="omit")
        drop = np.unique(np.concatenate((i_x, i_y)))
        x, y = np.delete(x, drop), np.delete(y, drop)
        s = np.asarray(sigma)
        if s.ndim == 1:
            s = np.delete(s, drop)
        elif s.ndim == 2:
            s = np.delete(np.delete(s, drop, axis=0), drop, axis=1)
        ref_opt, ref_cov = curve_fit(exponential, x, y, p0=p0, sigma=s)
        assert_allclose(res_opt, ref_opt, rtol=1e-12)
        assert_allclose(res_cov, ref_cov, rtol=1e-10)

    def test_curvefit_simplecovariance(self):
        def func(x, a, b):
            return a * np.exp(-b * x)

        def jac(x, a, b):
            e = np.exp(-b * x)
            return np.vstack((e, -a * x * e)).T

        rng = np.random.default_rng(123)
        xdata = np.linspace(0, 4, 50)
        ydata = func(xdata, 2.5, 1.3) + 0.2 * rng.standard_normal(size=len(xdata))
        sigma = np.zeros(len(xdata)) + 0.2
        covar = np.diag(sigma**2)
        for j, absolute_sigma in ((jac, False), (None, True)):
            popt1, pcov1 = curve_fit(func, xdata, ydata, sigma=sigma, jac=j, absolute_sigma=absolute_sigma)
            popt2, pcov2 = curve_fit(func, xdata, ydata, sigma=covar, jac=j, absolute_sigma=absolute_sigma)
            assert_allclose(popt1, popt2, rtol=1e-8)
            assert_allclose(pcov1, pcov2, rtol=1e-6)

    def test_curvefit_covariance_with_a_point_mixing_model(self):
        # f mixes the points (a rotation): it must be evaluated on all of x at once
        rotn = np.array([[1 / np.sqrt(2), -1 / np.sqrt(2), 0], [1 / np.sqrt(2), 1 / np.sqrt(2), 0], [0, 0, 1.0]])

        def funcp(x, a, b):
            return rotn.dot(a * np.exp(-b * x))

        def func(x, a, b):
            return a * np.exp(-b * x)

        rng = np.random.default_rng(1234)
        xdata = np.arange(1, 4)
        ydata = func(xdata, 2.5, 1.0) + 0.2 * rng.standard_normal(size=len(xdata))
        sigma = np.zeros(len(xdata)) + 0.2
        covar = np.diag(sigma**2)
        ydatap = rotn.dot(ydata)
        covarp = rotn.dot(covar).dot(rotn.T)
        for absolute_sigma in (False, True):
            popt1, pcov1 = curve_fit(func, xdata, ydata, sigma=sigma, absolute_sigma=absolute_sigma)
            popt2, pcov2 = curve_fit(funcp, xdata, ydatap, sigma=covarp, absolute_sigma=absolute_sigma)
            assert_allclose(popt1, popt2, rtol=1e-7)
            assert_allclose(pcov1, pcov2, rtol=1e-5)

    @pytest.mark.parametrize("absolute_sigma", [False, True])
    def test_curvefit_scalar_sigma(self, absolute_sigma):
        def func(x, a, b):
            return a * x + b

        _, pcov1 = curve_fit(func, self.x, self.y, sigma=2, absolute_sigma=absolute_sigma)
        _, pcov2 = curve_fit(func, self.x, self.y, sigma=np.full_like(self.y, 2), absolute_sigma=absolute_sigma)
        assert np.all(pcov1 == pcov2)

    def test_dtypes(self):
        x = np.arange(-3, 5)
        y = 1.5 * x + 3.0 + 0.5 * np.sin(x)

        def func(x, a, b):
            return a * x + b

        for method in ["lm", "trf", "dogbox"]:
            for dtx in (np.float32, np.float64):
                for dty in (np.float32, np.float64):
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", OptimizeWarning)
                        p, cov = curve_fit(func, x.astype(dtx), y.astype(dty), method=method)
                    assert np.isfinite(cov).all()
                    assert not np.allclose(p, 1)

    def test_dtypes2(self):
        def hyperbola(x, s_1, s_2, o_x, o_y, c):
            b_2 = (s_1 + s_2) / 2
            b_1 = (s_2 - s_1) / 2
            return o_y + b_1 * (x - o_x) + b_2 * np.sqrt((x - o_x) ** 2 + c**2 / 4)

        lo, hi = np.array([-3.0, 0.0, -2.0, -10.0, 0.0]), np.array([0.0, 3.0, 3.0, 0.0, 10.0])
        guess = np.array([-2.5 / 3.0, 4 / 3.0, 1.0, -4.0, 0.5])
        params = [-2, 0.4, -1, -5, 9.5]
        xdata = np.array([-32, -16, -8, 4, 4, 8, 16, 32])
        popt_64, _ = curve_fit(f=hyperbola, xdata=xdata, ydata=hyperbola(xdata, *params), p0=guess, bounds=(lo, hi))
        x32 = xdata.astype(np.float32)
        popt_32, _ = curve_fit(f=hyperbola, xdata=x32, ydata=hyperbola(x32, *params), p0=guess, bounds=(lo, hi))
        assert_allclose(popt_32, popt_64, atol=2e-5)

    def test_broadcast_y(self):
        # a scalar ydata is broadcast, and the model closes over a full-length array
        xdata = np.arange(10)
        rng = np.random.default_rng(123)
        target = 4.7 * xdata**2 + 3.5 * xdata + rng.random(size=len(xdata))

        def fit_func(x, a, b):
            return a * x**2 + b * x - target

        for method in ["lm", "trf", "dogbox"]:
            popt0, pcov0 = curve_fit(fit_func, xdata=xdata, ydata=np.zeros_like(xdata), method=method)
            popt1, pcov1 = curve_fit(fit_func, xdata=xdata, ydata=0, method=method)
            assert_allclose(pcov0, pcov1)
            ref, _ = scipy_fit(fit_func, xdata, np.zeros_like(xdata), method=method)
            assert_allclose(popt1, ref, rtol=1e-6)

    def test_args_in_kwargs(self):
        def func(x, a, b):
            return a * x + b

        with pytest.raises(ValueError, match="'args' is not a supported keyword argument"):
            curve_fit(func, xdata=[1, 2, 3, 4], ydata=[5, 9, 13, 17], p0=[1], args=(1,))

    def test_data_point_number_validation(self):
        def func(x, a, b, c, d, e):
            return a * np.exp(-b * x) + c + d + e

        with pytest.raises(TypeError, match="The number of func parameters="):
            curve_fit(func, xdata=[1, 2, 3, 4], ydata=[5, 9, 13, 17])

    def test_gh4555(self):
        # the covariance is symmetric with a positive diagonal
        def f(x, a, b, c, d, e):
            return a * np.log(x + 1 + b) + c * np.log(x + 1 + d) + e

        rng = np.random.default_rng(408113519974467917)
        n = 100
        x = np.arange(n)
        y = np.linspace(2, 7, n) + rng.random(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _, cov = curve_fit(f, x, y, maxfev=100000)
        assert np.all(np.diag(cov) > 0)
        assert np.all(np.linalg.eigvalsh(cov) > -1e-2)
        assert_allclose(cov, cov.T)

    def test_gh4555b(self):
        rng = np.random.default_rng(408113519974467917)

        def func(x, a, b, c):
            return a * np.exp(-b * x) + c

        xdata = np.linspace(0, 4, 50)
        ydata = func(xdata, 2.5, 1.3, 0.5) + 0.2 * rng.normal(size=xdata.size)
        _, res = curve_fit(func, xdata, ydata)
        _, ref = scipy_fit(func, xdata, ydata)
        assert_allclose(res, ref, rtol=1e-4)

    @pytest.mark.parametrize("with_jac", [False, True])
    def test_gh13670_the_solver_never_repeats_a_call(self, with_jac):
        # SciPy (gh-13670): the model and jac are never called twice in a row at the same
        # parameters. Ours: the solver never does; the front door, on a NumPy model's first
        # fit, evaluates it at p0 on the whole data, on 8 points (is it pointwise?) and the
        # solver's first pass is at p0 again, so repeats happen at p0 only.
        rng = np.random.default_rng(8250058582555444926)
        x = np.linspace(0, 3, 101)
        y = 2 * x + 1 + rng.normal(size=101) * 0.5
        p0 = (1.0, 5.0)
        calls = {"f": [], "jac": []}

        def line(x, *p):  # NumPy only (float() of each parameter): a host model
            calls["f"].append(tuple(float(v) for v in p))
            return np.asarray(x) * p[0] + p[1]

        def jac(x, *p):
            calls["jac"].append(tuple(float(v) for v in p))
            return np.array([x, np.ones_like(x)]).T

        popt, _ = curve_fit(line, x, y, np.array(p0), method="lm", **({"jac": jac} if with_jac else {}))
        assert_allclose(popt, np.polyfit(x, y, 1), rtol=1e-7)
        for name, seen in calls.items():
            repeats = [a for a, b in zip(seen, seen[1:]) if a == b]
            assert set(repeats) <= {p0}, (name, repeats)
            assert len(seen) > 2 or (name == "jac" and not with_jac)

    @pytest.mark.parametrize("method", ["trf", "dogbox"])
    def test_gh20155_error_mentions_p0(self, method):
        with pytest.raises(ValueError, match="Initial guess is outside of provided bounds"):
            curve_fit(lambda x, a: x**a, self.x, self.y, p0=[1], bounds=(1000, 1001), method=method)


class TestResultTuple:
    """The returned tuple unpacks as SciPy's and has the fit's details as attributes."""

    def test_tuple_with_attributes(self):
        x = np.linspace(0, 4, 30)
        out = curve_fit(lambda x, a, b: a * np.exp(-b * x), x, 2.0 * np.exp(-1.5 * x))
        popt, pcov = out
        assert isinstance(out, tuple) and len(out) == 2
        assert out.popt is popt and out.pcov is pcov and out.x is popt
        assert out.success and out.nfev == out.result.nfev >= 1
        assert out.result.param_names == ["a", "b"]
        assert "[[Variables]]" in out.report()
        full = curve_fit(lambda x, a, b: a * np.exp(-b * x), x, 2.0 * np.exp(-1.5 * x), full_output=True)
        assert len(full) == 5 and full.infodict is full[2] and full.ier == full[4] and full.mesg == full[3]

    def test_result_keeps_the_data(self):
        x = np.linspace(0, 4, 30)
        y = 2.0 * np.exp(-1.5 * x)
        out = curve_fit(lambda x, a, b: a * np.exp(-b * x), x, y)
        assert_array_equal(out.result.xdata, x)
        assert_array_equal(out.result.ydata, y)
