"""Clients of the catalogue services xpipe pulls from: the CSC TAP services and SIMBAD's.

`tap` holds what every TAP client shares (`TapServiceConfig`: URL, timeouts, row limit and
retry policy; bounded retries with exponential backoff, explicit OVERFLOW handling, sync and
async jobs); `votable` the one astropy ↔ Arrow conversion; `csc` and `simbad` extend the
configuration for one service each and hold its ADQL.
"""
