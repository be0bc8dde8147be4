"""The Monte Carlo math (xpipe.method.montecarlo): random streams, split normals, summaries and
the per-draw votes against the warehouse's voting SQL."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from xpipe.method import montecarlo as mc
from xpipe.predict.scoring import vote_in_memory
from xpipe.warehouse.seeds import class_names


def test_streams_are_keyed_by_detection_and_seed_not_by_process() -> None:
    keys = [("2CXO J000010.0+000010", 1001, 0, 7), ("2CXO J000010.0+000010", 1001, 0, 8),
            ("2CXO J000010.0+000010", 1001, None, 7)]
    draws = mc.standard_normals(keys, 42, 20, 3)
    assert len({d.tobytes() for d in draws}) == 3  # every key its own stream
    alone = mc.standard_normals(keys[1:2], 42, 20, 3)
    assert np.array_equal(alone[0], draws[1])  # independent of the other rows
    assert not np.array_equal(mc.standard_normals(keys[:1], 43, 20, 3)[0], draws[0])
    assert np.array_equal(mc.standard_normals(keys[:1], 42, 50, 3)[0, :20], draws[0])
    # another interpreter with another hash salt draws the same numbers (no hash())
    code = ("from xpipe.method.montecarlo import standard_normals; import sys; "
            f"sys.stdout.write(standard_normals([{keys[0]!r}], 42, 20, 3).tobytes().hex())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert bytes.fromhex(other) == draws[0].tobytes()


def test_sigma_divisor_is_the_two_sided_normal_quantile() -> None:
    assert mc.sigma_divisor(0.6826894921370859) == pytest.approx(1.0, abs=1e-12)
    assert mc.sigma_divisor(0.90) == pytest.approx(1.6448536, abs=1e-6)
    with pytest.raises(ValueError):
        mc.sigma_divisor(1.0)


def test_zero_width_draws_are_the_value_itself() -> None:
    rng = np.random.default_rng(1)
    value = rng.uniform(-1, 1, 500)
    z = rng.standard_normal((500, 40)) * 3
    zero = np.zeros(500)
    out = mc.split_normal(value[:, None], zero[:, None], zero[:, None], z)
    assert np.array_equal(out, np.broadcast_to(value[:, None], out.shape))
    # one-sided: σ_lo = 0 puts every draw at or above the value
    one_sided = mc.split_normal(value[:, None], zero[:, None], np.full((500, 1), 0.1), z)
    assert (one_sided >= value[:, None]).all()


def test_split_normal_keeps_the_confidence_level_and_the_mode() -> None:
    n = 400_000
    z = np.random.default_rng(2).standard_normal(n)
    value, lower, upper = 0.3, 0.1, 0.9  # σ_lo = 0.2, σ_hi = 0.6 at 1σ limits
    low, high = mc.split_normal_sigmas(np.array([value]), np.array([lower]), np.array([upper]),
                                       mc.sigma_divisor(0.6826894921370859))
    x = mc.split_normal(value, low, high, z)
    inside = ((x >= lower) & (x <= upper)).mean()
    assert inside == pytest.approx(0.6827, abs=0.003)
    assert (x < value).mean() == pytest.approx(0.2 / 0.8, abs=0.003)
    # the density is continuous at the mode: the same height from both sides
    h = 0.01
    below, above = ((x > value - h) & (x < value)).mean(), ((x > value) & (x < value + h)).mean()
    assert below == pytest.approx(above, rel=0.05)


def test_wider_limits_move_every_draw_further_from_the_value() -> None:
    z = np.random.default_rng(3).standard_normal((200, 30))
    value = np.random.default_rng(4).uniform(-0.5, 0.5, (200, 1))
    narrow = mc.split_normal(value, np.full((200, 1), 0.05), np.full((200, 1), 0.1), z)
    wide = mc.split_normal(value, np.full((200, 1), 0.15), np.full((200, 1), 0.3), z)
    assert (np.abs(wide - value) >= np.abs(narrow - value)).all()
    assert (np.sign(wide - value) == np.sign(narrow - value)).all()


def test_clipping_keeps_held_values() -> None:
    value = np.array([[1.5], [0.5]])  # 1.5 is out of range but held fixed (zero width)
    draws = np.array([[1.5, 1.5], [1.2, -3.0]])
    clipped = mc.clip_to_range(draws, value, -1.0, 1.0)
    assert clipped.tolist() == [[1.5, 1.5], [1.0, -1.0]]


def test_summaries_over_draws_match_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    n, d, c = 30, 25, 4
    proba = rng.dirichlet(np.ones(c), (n, d))
    proba[rng.random((n, d)) < 0.1] = np.nan  # unclassified draws
    proba[0] = np.nan  # never classified
    codes = np.where(np.isnan(proba).any(axis=2), -1, np.argmax(np.nan_to_num(proba), axis=2))
    nominal = rng.dirichlet(np.ones(c), n)
    summary = mc.summarize_detections(proba, codes, nominal)
    for i in range(1, n):
        kept = proba[i][codes[i] >= 0]
        np.testing.assert_allclose(summary.mean[i], kept.mean(axis=0), rtol=1e-12)
        for name, (lo, hi) in mc.INTERVALS.items():
            np.testing.assert_array_equal(summary.quantiles[name][0][i],
                                          np.quantile(kept, lo, axis=0))
            np.testing.assert_array_equal(summary.quantiles[name][1][i],
                                          np.quantile(kept, hi, axis=0))
        assert summary.unclassified_fraction[i] == pytest.approx((codes[i] < 0).mean())
        for k in range(c):
            assert summary.pred_fraction[i, k] == pytest.approx((codes[i] == k).mean())
    assert np.isnan(summary.mean[0]).all() and summary.unclassified_fraction[0] == 1.0


def test_outcome_summary_matches_a_counter() -> None:
    rng = np.random.default_rng(6)
    n_codes = 5
    draws = rng.integers(-1, n_codes, (60, 40))
    draws[0] = 2  # every draw keeps the nominal outcome
    nominal = rng.integers(0, n_codes, 60)
    nominal[0] = 2
    summary = mc.summarize_outcomes(draws, nominal, n_codes)
    rank = {**{k: k for k in range(n_codes)}, -1: n_codes}  # -1 sorts last among ties
    for s in range(60):
        counts = collections.Counter(draws[s].tolist())
        assert summary.stability[s] == counts[nominal[s]] / 40
        others = {k: v for k, v in counts.items() if k != nominal[s]}
        if not others:
            assert summary.other[s] == mc.NO_OTHER and np.isnan(summary.other_fraction[s])
            continue
        best = min(others, key=lambda k: (-others[k], rank[k]))
        assert summary.other[s] == best
        assert summary.other_fraction[s] == others[best] / 40


def test_votes_of_every_draw_are_the_voting_sql() -> None:
    """Hard-vote ties (to the earlier detection), soft-vote ties (to the earlier class) and
    unclassified detections, against results.source_class built by the warehouse's SQL."""
    rng = np.random.default_rng(7)
    classes = list(class_names())
    c, d = len(classes), 6
    sizes = rng.integers(1, 6, 80)
    n = int(sizes.sum())
    names = np.repeat([f"S{i:03d}" for i in range(len(sizes))], sizes)
    obsid = rng.integers(1, 4, n)  # repeated obsids: the tie then goes to det_id
    det_id = rng.permutation(n) + 1
    order = np.lexsort((det_id, obsid, names))
    names, obsid, det_id = names[order], obsid[order], det_id[order]
    # coarse probabilities so that soft votes tie; some draws unclassified
    raw = rng.integers(0, 3, (n, d, c)).astype(np.float64)
    raw[..., 0] += raw.sum(axis=2) == 0
    proba = raw / raw.sum(axis=2, keepdims=True)
    proba[rng.random((n, d)) < 0.15] = np.nan
    codes = np.where(np.isnan(proba).any(axis=2), -1, np.argmax(np.nan_to_num(proba), axis=2))
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    hard, soft = mc.source_votes(proba, codes, starts)
    for draw in range(d):
        keep = codes[:, draw] >= 0
        frame = pl.DataFrame({
            "det_id": det_id[keep], "name": names[keep], "obsid": obsid[keep].astype(np.int32),
            "ra": np.zeros(keep.sum()), "dec": np.zeros(keep.sum()),
            "cluster": np.zeros(keep.sum(), np.int32),
            **{k: proba[keep, draw, i] for i, k in enumerate(classes)},
            "pred_class": np.array(classes, dtype=object)[codes[keep, draw]].tolist()})
        voted = vote_in_memory(frame)
        expected = dict(zip(voted["name"], zip(voted["hard_class"], voted["soft_class"],
                                               strict=True), strict=True))
        for s, start in enumerate(starts):
            got = (hard[s, draw], soft[s, draw])
            if names[start] not in expected:
                assert got == (-1, -1)
            else:
                assert tuple(classes[g] for g in got) == expected[names[start]], names[start]
