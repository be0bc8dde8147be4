"""The method as pure math: the Gaussian mixture, the Mahalanobis/softmin kernel, anomaly scores.

Nothing here imports from xpipe, so the numbers can be checked (and reused) on plain arrays."""
