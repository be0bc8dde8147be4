"""The Sky and Properties pages' data, checked against the warehouse with independent queries
and against astropy (no browser): projections, layers, bins, filters, subsamples, zoom boxes
and the URL parameters."""

from __future__ import annotations

import math
from collections.abc import Iterator

import duckdb
import numpy as np
import polars as pl
import pytest
from sky_reference import galactic, inverse_hammer_aitoff, map_xy

from xpipe.core.errors import InputError
from xpipe.serve.pages.properties import property_filter
from xpipe.serve.pages.properties import query_of as property_query
from xpipe.serve.pages.sky import query_of as sky_query
from xpipe.serve.pages.sky import sky_filter
from xpipe.serve.projection import X_LIMIT, Y_LIMIT, galactic_sql, hammer_aitoff_sql
from xpipe.serve.property_queries import PropertyData, PropertyFilter
from xpipe.serve.reader import WarehouseReader
from xpipe.serve.sky_queries import FULL_SKY, SkyData, SkyFilter
from xpipe.serve.views import Box, zoomed_box


@pytest.fixture(scope="module")
def reader(serve_warehouse) -> Iterator[WarehouseReader]:
    reader = WarehouseReader(serve_warehouse)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def sky(reader) -> SkyData:
    return SkyData(reader)


@pytest.fixture(scope="module")
def props(reader) -> PropertyData:
    return PropertyData(reader)


def _count(reader: WarehouseReader, sql: str, params: list | None = None) -> int:
    return int(reader.rows(sql, params)[0][0])


def _select(columns: str, frame: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    con.register("frame", frame.to_arrow())
    return con.sql(f"SELECT {columns} FROM frame").pl()


# ---- projections ----------------------------------------------------------------------------

def test_galactic_coordinates_agree_with_astropy() -> None:
    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 360, 3000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))
    l_sql, b_sql = galactic_sql("ra", "dec")
    got = _select(f"{l_sql} AS l, {b_sql} AS b", pl.DataFrame({"ra": ra, "dec": dec}))
    lon, lat = galactic(ra, dec)
    dlon = (got["l"].to_numpy() - lon + 180) % 360 - 180
    assert np.abs(dlon * np.cos(np.radians(lat))).max() * 3600 < 0.1  # arcsec
    assert np.abs(got["b"].to_numpy() - lat).max() * 3600 < 0.1
    assert got["l"].min() >= 0 and got["l"].max() < 360


def test_hammer_aitoff_inverts_and_draws_longitude_to_the_left() -> None:
    rng = np.random.default_rng(2)
    lon, lat = rng.uniform(-180, 180, 3000), rng.uniform(-89.9, 89.9, 3000)
    x_sql, y_sql = hammer_aitoff_sql("lon", "lat")
    # any longitude range is wrapped
    got = _select(f"{x_sql} AS x, {y_sql} AS y", pl.DataFrame({"lon": lon + 360.0, "lat": lat}))
    x, y = got["x"].to_numpy(), got["y"].to_numpy()
    back_lon, back_lat = inverse_hammer_aitoff(x, y)
    assert np.abs((back_lon - lon + 180) % 360 - 180).max() < 1e-7
    assert np.abs(back_lat - lat).max() < 1e-7
    assert (x**2 / X_LIMIT**2 + y**2 / Y_LIMIT**2 <= 1 + 1e-12).all()  # inside the ellipse
    assert (x[(lon > 0) & (lon < 180)] < 0).all()  # east of the centre lies to the left


# ---- sky ------------------------------------------------------------------------------------

def test_sky_layers_hold_every_source(sky, reader) -> None:
    view = sky.view(SkyFilter(references=True, density=True), None, max_points=10**9)
    assert view.classified.total == _count(reader, "SELECT count(*) FROM results.source_class")
    assert view.references is not None and view.density is not None
    assert view.references.total == _count(
        reader, "SELECT count(*) FROM model.source_labels WHERE role = 'reference'")
    assert view.density.total == _count(
        reader, "SELECT count(DISTINCT name) FROM raw.detections")
    assert view.density.bins is not None  # the density is always counts per bin


def test_sky_positions_are_the_published_ones(sky, reader) -> None:
    points = sky.view(SkyFilter(frame="galactic"), None, 10**9).classified.points
    assert points is not None
    stored = reader.frame("SELECT name, ra, dec FROM results.source_class")
    joined = points.join(stored, on="name")
    assert joined.height == stored.height
    x, y = map_xy(joined["ra"].to_numpy(), joined["dec"].to_numpy(), "galactic")
    assert np.abs(joined["x"].to_numpy() - x).max() < 1e-5  # FLOAT storage
    assert np.abs(joined["y"].to_numpy() - y).max() < 1e-5


def test_sky_filters_select_what_the_votes_say(sky, reader) -> None:
    flt = SkyFilter(classes=("XB", "YSO"), votes="unique", min_probability=0.6,
                    min_detections=2)
    expected = _count(reader, """
        SELECT count(*) FROM results.source_class AS s
        JOIN results.source_class_probs AS p ON p.name = s.name AND p.class = s.master_class
        WHERE s.is_unique AND s.agg_master_class IN ('XB', 'YSO')
          AND p.mean_probability >= 0.6 AND s.detection_count >= 2""")
    view = sky.view(flt, None, 10**9)
    assert 0 < view.classified.total == expected
    points = view.classified.points
    assert points is not None and set(points["agg_master_class"]) <= {"XB", "YSO"}
    ambiguous = sky.view(SkyFilter(votes="ambiguous", classes=("AGN",)), None, 10**9)
    assert ambiguous.classified.total == _count(reader, """
        SELECT count(*) FROM results.source_class AS s
        JOIN model.classes AS h ON h.class = s.hard_class
        JOIN model.classes AS v ON v.class = s.soft_class
        WHERE NOT s.is_unique AND 'AGN' IN (h.agg_class, v.agg_class)""")


def test_a_crowded_view_is_binned_and_a_zoomed_one_drawn(sky) -> None:
    everything = sky.view(SkyFilter(), None, 10**9).classified
    assert everything.points is not None
    total = everything.total
    binned = sky.view(SkyFilter(), None, max_points=total - 1).classified
    assert binned.bins is not None and binned.points is None
    assert binned.bins.counts.sum() == total == binned.total
    rows, cols = binned.bins.counts.shape
    assert cols == 200 and rows == 100  # square bins on the 2:1 map
    box = Box(-0.6, 0.4, -0.3, 0.5)
    inside = everything.points.filter(pl.col("x").is_between(box.x0, box.x1)
                                      & pl.col("y").is_between(box.y0, box.y1))
    zoomed = sky.view(SkyFilter(), box, max_points=inside.height).classified
    assert zoomed.points is not None and zoomed.total == inside.height > 0
    assert sorted(zoomed.points["name"]) == sorted(inside["name"])
    rebinned = sky.view(SkyFilter(), box, max_points=inside.height - 1).classified
    assert rebinned.bins is not None and rebinned.bins.counts.sum() == inside.height
    assert rebinned.bins.box == box


def test_graticule_outlines_the_map(sky) -> None:
    lines = sky.graticule()
    assert (lines["x"].min(), lines["x"].max()) == pytest.approx((-X_LIMIT, X_LIMIT))
    assert (lines["y"].min(), lines["y"].max()) == pytest.approx((-Y_LIMIT, Y_LIMIT))
    meridian = lines.filter((pl.col("line") == "lon 60") & (pl.col("y").abs() < Y_LIMIT - 1e-9))
    lon, lat = inverse_hammer_aitoff(meridian["x"].to_numpy(), meridian["y"].to_numpy())
    assert np.allclose(lon, 60.0) and lat.min() < -85 and lat.max() > 85
    parallel = lines.filter(pl.col("line") == "lat 30")
    lon, lat = inverse_hammer_aitoff(parallel["x"].to_numpy(), parallel["y"].to_numpy())
    assert np.allclose(lat, 30.0) and lon.min() < -175 and lon.max() > 175


def test_sky_url_parameters_round_trip_and_bad_ones_are_named() -> None:
    flt = SkyFilter(frame="equatorial", classes=("AGN", "XB"), votes="ambiguous",
                    min_probability=0.25, min_detections=3, references=True, density=True)
    assert sky_filter(sky_query(flt)) == flt
    assert sky_query(SkyFilter()) == {}
    assert sky_filter({"class": "XB,AGN"}).classes == ("AGN", "XB")  # the seed's order
    for query, words in [({"min_prob": "abc"}, "min_prob='abc' is not a number"),
                         ({"min_prob": "1.5"}, "from 0 to 1"),
                         ({"min_det": "2.5"}, "not a whole number"),
                         ({"min_det": "0"}, "out of range"),
                         ({"class": "AGN,Quasar"}, "unknown value(s) 'Quasar'"),
                         ({"frame": "ecliptic"}, "not one of: galactic, equatorial"),
                         ({"votes": "both"}, "votes='both'"),
                         ({"density": "yes"}, "density='yes' is not one of: 1, 0")]:
        with pytest.raises(InputError, match=None) as err:
            sky_filter(query)
        assert words in str(err.value), (query, str(err.value))


# ---- zoom boxes -----------------------------------------------------------------------------

def test_zoom_boxes_from_relayout_events() -> None:
    prior = Box(-1, 1, -0.5, 0.5)
    assert zoomed_box({"autosize": True}, prior) == (False, prior)
    assert zoomed_box(None, None) == (False, None)
    assert zoomed_box({"xaxis.range[0]": 0.5, "xaxis.range[1]": -0.2,
                       "yaxis.range[0]": 0.1, "yaxis.range[1]": 0.3}, None) == (
        True, Box(-0.2, 0.5, 0.1, 0.3))
    assert zoomed_box({"xaxis.range": [0, 1]}, prior) == (True, Box(0, 1, -0.5, 0.5))
    assert zoomed_box({"xaxis.autorange": True, "yaxis.autorange": True}, prior) == (True, None)
    changed, box = zoomed_box({"xaxis.range[0]": -1, "xaxis.range[1]": 2}, None, log_x=True)
    assert changed and box is not None and (box.x0, box.x1) == (0.1, 100.0)
    assert math.isinf(box.y0) and math.isinf(box.y1)
    assert box.clip(FULL_SKY) == Box(0.1, FULL_SKY.x1, FULL_SKY.y0, FULL_SKY.y1)
    assert box.as_list() == [0.1, 100.0, None, None]  # JSON has no infinity
    assert Box.from_list(box.as_list()) == box and Box.from_list("junk") is None


# ---- properties -----------------------------------------------------------------------------

def test_property_rows_are_references_and_classified_targets(props, reader) -> None:
    view = props.view(PropertyFilter(), None, 10**9)
    expected = _count(reader, """
        SELECT count(*) FROM model.detection_roles AS r
        LEFT JOIN results.detection_class AS c USING (det_id)
        WHERE r.role = 'reference' OR c.pred_class IS NOT NULL""")
    assert view.selected == view.in_view == view.points.height == expected
    assert not view.sampled
    kinds = dict(view.points.group_by("kind").len().iter_rows())
    assert kinds["reference"] == _count(
        reader, "SELECT count(*) FROM model.detection_roles WHERE role = 'reference'")
    sources = props.view(PropertyFilter(level="sources", kind="target"), None, 10**9)
    assert sources.selected == _count(reader, "SELECT count(*) FROM results.source_class")


def test_a_source_is_the_mean_of_its_detections(props, reader) -> None:
    name, mean_kt, mean_p = reader.rows("""
        SELECT f.name, avg(f.bb_kt), avg(c."TTau*") FROM model.detection_features AS f
        JOIN results.detection_class AS c USING (det_id)
        WHERE c.pred_class IS NOT NULL
        GROUP BY f.name HAVING count(*) >= 2 ORDER BY f.name LIMIT 1""")[0]
    flt = PropertyFilter(level="sources", x="bb_kt", y="p_TTau*")
    points = props.view(flt, None, 10**9).points.filter(pl.col("name") == name)
    assert points.height == 1
    assert points["x"][0] == pytest.approx(mean_kt) and points["y"][0] == pytest.approx(mean_p)
    master = reader.rows("SELECT master_class FROM results.source_class WHERE name = ?",
                         [name])[0][0]
    assert points["class"][0] == master


def test_log_axes_and_missing_values_are_counted(props, reader) -> None:
    flt = PropertyFilter(x="powlaw_gamma", y="p_QSO", log_x=True, log_y=True)
    view = props.view(flt, None, 10**9)
    references = _count(reader, "SELECT count(*) FROM model.detection_roles "
                                "WHERE role = 'reference'")
    assert view.missing == references  # references have no class probabilities
    nonpositive = _count(reader, """
        SELECT count(*) FROM model.detection_features AS f
        JOIN results.detection_class AS c USING (det_id)
        WHERE c.pred_class IS NOT NULL AND (f.powlaw_gamma <= 0 OR c."QSO" <= 0)""")
    assert view.nonpositive == nonpositive > 0
    assert view.in_view == view.selected - view.missing - view.nonpositive
    assert (view.points["x"] > 0).all() and (view.points["y"] > 0).all()


def test_class_filter_and_colour_by_value(props, reader) -> None:
    flt = PropertyFilter(classes=("QSO", "HMXB"), colour="var_prob_b", kind="target")
    view = props.view(flt, None, 10**9)
    assert view.selected == _count(reader, "SELECT count(*) FROM results.detection_class "
                                           "WHERE pred_class IN ('QSO', 'HMXB')")
    assert set(view.points["class"]) == {"QSO", "HMXB"}
    assert view.points["colour"].is_between(0, 1).all()


def test_a_crowded_view_draws_a_stable_subsample(props) -> None:
    full = props.view(PropertyFilter(), None, 10**9)
    sample = props.view(PropertyFilter(), None, max_points=300)
    assert sample.sampled and sample.points.height == 300 and sample.in_view == full.in_view
    box = Box(-0.5, 0.2, -0.4, 0.3)
    zoomed = props.view(PropertyFilter(), box, max_points=300)
    inside = full.points.filter(pl.col("x").is_between(box.x0, box.x1)
                                & pl.col("y").is_between(box.y0, box.y1))
    assert zoomed.in_view == inside.height > 300
    assert zoomed.points.height == 300
    kept = sample.points.filter(pl.col("x").is_between(box.x0, box.x1)
                                & pl.col("y").is_between(box.y0, box.y1))
    # what the whole view drew inside the box stays drawn when zooming in on it
    assert set(kept["name"]) <= set(zoomed.points["name"])
    assert 0 < kept.height < zoomed.points.height


def test_property_url_parameters_round_trip_and_bad_ones_are_named() -> None:
    flt = PropertyFilter(level="sources", x="bb_kt", y="p_Orion_V*", log_x=True,
                         colour="var_ratio_b", classes=("QSO", "TTau*"), kind="reference")
    assert property_filter(property_query(flt)) == flt
    assert property_query(PropertyFilter()) == {}
    for query, words in [({"x": "flux"}, "x='flux' is not one of: hard_hm"),
                         ({"y": "p_Star"}, "y='p_Star'"),
                         ({"colour": "size"}, "colour='size'"),
                         ({"class": "Star"}, "unknown value(s) 'Star'"),
                         ({"level": "obsids"}, "level='obsids'"),
                         ({"log_x": "true"}, "log_x='true'")]:
        with pytest.raises(InputError) as err:
            property_filter(query)
        assert words in str(err.value), (query, str(err.value))
