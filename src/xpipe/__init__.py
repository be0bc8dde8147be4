"""xpipe: unsupervised probabilistic classification of X-ray catalogue detections."""

__version__ = "0.1.0"
