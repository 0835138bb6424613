"""Synthetic length distributions: shapes, the copula, fitting, and the built-in parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.datadir import data_dir
from sloserve.workloads import LENGTH_MODELS, LengthDist, PairLengthModel, fit_pair_model, get_length_model


def test_lognormal_median_sigma_and_clip():
    d = LengthDist.lognormal(500, 0.5, lo=10, hi=5000)
    x = d.sample(100_000, np.random.default_rng(0))
    assert x.dtype == np.int64
    assert np.median(x) == pytest.approx(500, rel=0.02)
    assert np.log(x).std() == pytest.approx(0.5, rel=0.03)
    clipped = LengthDist.lognormal(500, 2.0, lo=100, hi=1000).sample(10_000, np.random.default_rng(0))
    assert clipped.min() == 100 and clipped.max() == 1000


def test_length_dist_validation():
    with pytest.raises(ValueError):
        LengthDist((0.0,), (1.0,))
    with pytest.raises(ValueError):
        LengthDist((1.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError):
        LengthDist((0.0, 1.0), (1.0, 2.0), lo=0)
    with pytest.raises(ValueError):
        PairLengthModel("x", LengthDist.lognormal(5, 1), LengthDist.lognormal(5, 1), rho=1.0)


def test_fit_recovers_a_known_bimodal_shape_and_correlation():
    rng = np.random.default_rng(5)
    n = 40_000
    # bimodal prompts (short chat turns and long documents), outputs correlated with prompts
    long = rng.random(n) < 0.3
    prompt = np.where(long, rng.lognormal(7.5, 0.3, n), rng.lognormal(4.5, 0.5, n)).round().clip(1, None)
    output = (np.exp(0.6 * np.log(prompt) + rng.normal(0, 0.4, n))).round().clip(1, None)
    model = fit_pair_model(prompt, output, "toy")
    sp, so = model.sample(n, np.random.default_rng(6))
    for q in (0.05, 0.25, 0.5, 0.85, 0.9, 0.99):  # not at the gap between modes
        assert np.quantile(sp, q) == pytest.approx(np.quantile(prompt, q), rel=0.08)
        assert np.quantile(so, q) == pytest.approx(np.quantile(output, q), rel=0.08)
    assert model.rho > 0.8
    rank_corr = np.corrcoef(np.argsort(np.argsort(sp)), np.argsort(np.argsort(so)))[0, 1]
    data_corr = np.corrcoef(np.argsort(np.argsort(prompt)), np.argsort(np.argsort(output)))[0, 1]
    assert rank_corr == pytest.approx(data_corr, abs=0.03)
    with pytest.raises(ValueError):
        fit_pair_model(prompt, output[:-1], "bad")


def test_builtin_models_match_published_statistics():
    # Medians/means of the source files (docs/workloads.md); the synthetic draw must land near them.
    expected = {  # name: (prompt median, prompt mean, output median, output mean)
        "sharegpt": (1730, 2340, 415, 439),
        "arxiv-summarization": (2730, 2588, 167, 291),
        "azure-code": (1469, 2048, 13, 28),
        "azure-conv": (1020, 1155, 129, 211),
    }
    assert set(expected) == set(LENGTH_MODELS)
    for name, (pm, pmean, om, omean) in expected.items():
        p, o = get_length_model(name).sample(60_000, np.random.default_rng(1))
        assert np.median(p) == pytest.approx(pm, rel=0.06), name
        assert p.mean() == pytest.approx(pmean, rel=0.06), name
        assert np.median(o) == pytest.approx(om, rel=0.08), name
        assert o.mean() == pytest.approx(omean, rel=0.1), name
    with pytest.raises(KeyError, match="choices"):
        get_length_model("nope")


FILES = {
    "sharegpt": ("sharegpt_8k_lengths_llama2.csv", (0, 1)),
    "arxiv-summarization": ("arxiv_summarization_lengths_llama2.csv", (0, 1)),
    "azure-code": ("AzureLLMInferenceTrace_code.csv", (1, 2)),
    "azure-conv": ("AzureLLMInferenceTrace_conv.csv", (1, 2)),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_builtin_parameters_refit_from_the_public_files(name):
    root = data_dir()
    fname, cols = FILES[name]
    path = root / "traces" / fname if root else None
    if path is None or not path.exists():
        pytest.skip("shared data not available")
    data = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=cols)
    refit = fit_pair_model(data[:, 0], data[:, 1], name)
    built = get_length_model(name)
    np.testing.assert_allclose(refit.prompt.log_knots, built.prompt.log_knots, atol=2e-3)
    np.testing.assert_allclose(refit.output.log_knots, built.output.log_knots, atol=2e-3)
    assert (refit.prompt.lo, refit.prompt.hi) == (built.prompt.lo, built.prompt.hi)
    assert refit.rho == pytest.approx(built.rho, abs=2e-3)
