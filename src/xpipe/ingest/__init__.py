"""Bringing catalogues in: files checked against their contracts, the resumable CSC TAP pull,
the SIMBAD cross-match, and the page manifest that makes both resumable."""
