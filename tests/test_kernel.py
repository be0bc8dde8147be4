"""The batched kernel against a plain per-row implementation of METHOD §6."""

from __future__ import annotations

import numpy as np
import pytest

from xpipe.method.kernel import BLOCK_ROWS, MahalanobisSoftmin, RunningMoments, softmin

N_FEATURES = 12
N_CLASSES = 10


def plain_probabilities(x_ref, y_ref, c_ref, x, c, n_clusters, min_refs=12):
    """Per row and class: pinv of the sample covariance, explicit quadratic form, softmin."""
    out = np.zeros((len(x), N_CLASSES))
    for i in range(len(x)):
        d = np.full(N_CLASSES, np.inf)
        for k in range(N_CLASSES):
            refs = x_ref[(y_ref == k) & (c_ref == c[i])]
            if len(refs) < min_refs:
                continue
            mu = refs.mean(axis=0)
            sigma_plus = np.linalg.pinv(np.cov(refs, rowvar=False, ddof=1))
            diff = x[i] - mu
            d[k] = diff @ sigma_plus @ diff
        if np.isinf(d).all():
            out[i] = np.nan
            continue
        w = np.exp(-(d - d.min()))
        out[i] = w / w.sum()
    return out


@pytest.fixture
def random_problem():
    rng = np.random.default_rng(7)
    n_clusters = 3
    # cluster 2 has no references at all; in cluster 0 class 3 has only 11 (< 12) references
    counts = {(0, k): 40 + 5 * k for k in range(N_CLASSES)}
    counts[(0, 3)] = 11
    counts.update({(1, k): 12 + k for k in range(N_CLASSES)})  # 12: rank-deficient covariance
    xs, ys, cs = [], [], []
    for (c, k), n in counts.items():
        centre = rng.uniform(0, 1, N_FEATURES)
        scale = rng.uniform(0.02, 0.2, N_FEATURES)
        xs.append(centre + scale * rng.standard_normal((n, N_FEATURES)))
        ys.append(np.full(n, k))
        cs.append(np.full(n, c))
    x_ref, y_ref, c_ref = np.vstack(xs), np.concatenate(ys), np.concatenate(cs)
    x = rng.uniform(0, 1, (300, N_FEATURES))
    c = rng.integers(0, n_clusters, 300)
    return n_clusters, x_ref, y_ref, c_ref, x, c


def test_kernel_matches_plain_loop(random_problem):
    n_clusters, x_ref, y_ref, c_ref, x, c = random_problem
    model = MahalanobisSoftmin().fit(x_ref, y_ref, c_ref, n_clusters=n_clusters,
                                         n_classes=N_CLASSES)
    got = model.predict_proba(x, c)
    want = plain_probabilities(x_ref, y_ref, c_ref, x, c, n_clusters)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=1e-12)
    # class 3 of cluster 0 has 11 references: probability exactly 0 there
    assert np.all(got[c == 0][:, 3] == 0)
    # cluster 2 has no references: every row unclassifiable, flagged by predict as -1
    assert np.isnan(got[c == 2]).all()
    assert np.all(model.predict(x, c)[c == 2] == -1)
    assert np.all(model.predict(x, c)[c != 2] >= 0)


def test_kernel_distances_match_direct_quadratic_form(random_problem):
    n_clusters, x_ref, y_ref, c_ref, x, c = random_problem
    model = MahalanobisSoftmin().fit(x_ref, y_ref, c_ref, n_clusters=n_clusters,
                                         n_classes=N_CLASSES)
    d = model.distances(x, c)
    for i in np.flatnonzero(c == 1)[:20]:
        for k in range(N_CLASSES):
            diff = x[i] - model.means_[1, k]
            direct = diff @ model.pinv_[1, k] @ diff
            assert d[i, k] == pytest.approx(direct, rel=1e-9)


def test_streaming_fit_equals_one_shot(random_problem):
    n_clusters, x_ref, y_ref, c_ref, _, _ = random_problem
    one = MahalanobisSoftmin().fit(x_ref, y_ref, c_ref, n_clusters=n_clusters,
                                         n_classes=N_CLASSES)
    chunked = MahalanobisSoftmin()
    perm = np.random.default_rng(1).permutation(len(x_ref))
    for part in np.array_split(perm, 7):
        chunked.partial_fit(x_ref[part], y_ref[part], c_ref[part], n_clusters=n_clusters,
                            n_classes=N_CLASSES)
    np.testing.assert_array_equal(one.counts_, chunked.counts_)
    np.testing.assert_allclose(chunked.means_, one.means_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(chunked.pinv_, one.pinv_, rtol=1e-8, atol=1e-8)


def test_shapes_are_learned_or_named_by_the_first_partial_fit(random_problem):
    n_clusters, x_ref, y_ref, c_ref, _, _ = random_problem
    model = MahalanobisSoftmin(min_references=5)
    with pytest.raises(ValueError, match="n_clusters= and n_classes="):
        model.partial_fit(x_ref, y_ref, c_ref)
    model.partial_fit(x_ref[:10], y_ref[:10], c_ref[:10], n_clusters=n_clusters,
                      n_classes=N_CLASSES)
    model.partial_fit(x_ref[10:], y_ref[10:], c_ref[10:])  # later chunks need not repeat them
    assert (model.n_clusters_, model.n_classes_, model.n_features_in_) == (
        n_clusters, N_CLASSES, N_FEATURES)
    assert model.counts_.sum() == len(x_ref)


def test_running_moments_covariance_is_numpy_cov():
    x = np.random.default_rng(3).normal(size=(50, 4))
    m = RunningMoments.empty(4)
    m.update(x[:13])
    m.update(x[13:])
    np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=1e-12)


def test_softmin_is_stable_for_huge_distances():
    p = softmin(np.array([[1e6, 1e6 + 1, np.inf]]))
    np.testing.assert_allclose(p, [[1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_rows_result_does_not_depend_on_its_batch(random_problem, dtype):
    """Bit for bit: alone, in a shuffled batch spanning several blocks, at a block's edge, on
    one thread or several."""
    n_clusters, x_ref, y_ref, c_ref, _, _ = random_problem
    model = MahalanobisSoftmin(dtype=dtype, n_jobs=2).fit(
        x_ref, y_ref, c_ref, n_clusters=n_clusters, n_classes=N_CLASSES)
    rng = np.random.default_rng(5)
    n = 2 * BLOCK_ROWS + 77
    x = rng.uniform(0, 1, (n, N_FEATURES))
    c = rng.integers(0, 2, n)
    whole = model.distances(x, c)
    perm = rng.permutation(n)
    np.testing.assert_array_equal(model.distances(x[perm], c[perm]), whole[perm])
    model.n_jobs = 1
    np.testing.assert_array_equal(model.distances(x, c), whole)
    model.n_jobs = 3
    for i in [0, BLOCK_ROWS - 1, BLOCK_ROWS, n - 1, *rng.integers(0, n, 20)]:
        np.testing.assert_array_equal(model.distances(x[i:i + 1], c[i:i + 1])[0], whole[i])
