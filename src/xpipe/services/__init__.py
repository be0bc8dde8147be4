"""Clients of the catalogue services xpipe pulls from: the CSC TAP services and SIMBAD's.

`tap` holds what every TAP client shares (timeouts, bounded retries with exponential backoff,
explicit OVERFLOW handling, sync and async jobs, VOTable → Arrow); `csc` and `simbad` hold one
frozen configuration and the ADQL of one service each.
"""
