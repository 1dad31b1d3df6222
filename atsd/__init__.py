"""atsd: a lab resource reservation daemon."""

__version__ = "0.1.0"
