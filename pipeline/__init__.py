"""pipeline: search, track and ship convolutional networks that read handwritten digits."""

__version__ = "0.1.0"
