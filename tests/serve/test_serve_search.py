"""The search page's queries: the cone finds exactly the sources astropy puts inside it
(across RA 0 and around the poles), and a name prefix is matched literally."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord


@pytest.fixture(scope="module")
def ctx(live_server):
    from xpipe.serve.context import PageContext
    from xpipe.serve.settings import ServeSettings

    return PageContext(live_server.reader, ServeSettings(allow_sql=True,
                                                         max_cone_arcsec=20 * 3600.0))


@pytest.fixture(scope="module")
def sky(live_server):
    frame = live_server.query("SELECT name, ra, dec FROM results.source_class")
    return frame, SkyCoord(frame["ra"].to_numpy() * u.deg, frame["dec"].to_numpy() * u.deg)


@pytest.mark.parametrize(("ra", "dec", "radius_deg"), [
    (0.3, 5.0, 8.0),      # across RA 0 from above
    (359.5, -20.0, 6.0),  # across RA 360 from below
    (150.0, 86.0, 6.0),   # around the north pole
    (20.0, -88.0, 4.0),   # around the south pole
    (200.0, 60.0, 10.0),  # wide RA half-width at high dec
    (90.0, 0.0, 0.5),
])
def test_cone_is_exact(ctx, sky, ra: float, dec: float, radius_deg: float) -> None:
    from xpipe.serve.pages.search import MAX_ROWS, Cone, Search, find

    frame, coords = sky
    separation = coords.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec
    inside = set(np.asarray(frame["name"])[separation <= radius_deg * 3600.0])
    found, more = find(ctx, Search(cone=Cone(ra, dec, radius_deg * 3600.0)))
    if len(inside) > MAX_ROWS:
        assert more and found.height == MAX_ROWS and set(found["name"]) <= inside
    else:
        assert not more and set(found["name"]) == inside
    got = found["separation_arcsec"].to_numpy()
    assert (np.diff(got) >= 0).all()  # nearest first
    truth = dict(zip(frame["name"], separation, strict=True))
    assert np.allclose(got, [truth[n] for n in found["name"]], atol=1e-6)


@pytest.mark.parametrize(("ra", "dec", "radius_deg"), [
    (0.3, 5.0, 8.0), (359.5, -20.0, 6.0), (150.0, 86.0, 6.0), (200.0, 60.0, 10.0)])
def test_cone_box_holds_the_cone(ra: float, dec: float, radius_deg: float) -> None:
    """Points on the cone's rim all fall inside the box the query prunes with."""
    from xpipe.serve.pages.search import Cone, cone_bounds

    dec_lo, dec_hi, intervals = cone_bounds(Cone(ra, dec, radius_deg * 3600.0))
    rim = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        np.linspace(0, 360, 721) * u.deg, radius_deg * 0.999999 * u.deg)
    for r, d in zip(rim.ra.deg, rim.dec.deg, strict=True):
        assert dec_lo <= d <= dec_hi
        assert any(lo <= r <= hi for lo, hi in intervals), (r, intervals)


def test_name_prefix_is_literal(ctx, live_server) -> None:
    from xpipe.serve.pages.search import Search, find, like_prefix

    assert like_prefix("a_b%c\\") == "a\\_b\\%c\\\\%"
    name = live_server.query("SELECT min(name) FROM results.source_class").item()
    found, _ = find(ctx, Search(name=name[:9].lower()))  # case does not matter
    assert name in found["name"].to_list()
    assert all(n.upper().startswith(name[:9].upper()) for n in found["name"])
    assert find(ctx, Search(name="2CXO_J"))[0].is_empty()  # '_' is no wildcard
    assert find(ctx, Search(name="%"))[0].is_empty()


def test_source_adql_is_the_pull_query_for_one_name() -> None:
    """The source page's ADQL is the pull's query (same columns, tables and joins) with the
    page's box replaced by the source's name, quoted as ADQL quotes."""
    from xpipe.ingest.pull import contract_names, one_source_query
    from xpipe.services.csc import CSC_RELEASES, Box, detections_query

    config = CSC_RELEASES["csc21"]
    adql = one_source_query(config, "2CXO J0'1")
    pull = detections_query(config.schema, Box(-90.0, 90.0), contract_names())
    head = pull[:pull.index(" AND m.dec >=")]
    assert adql == head + " AND m.name = '2CXO J0''1'"
    assert "csc21.master_source" in adql
