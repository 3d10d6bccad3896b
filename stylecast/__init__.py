"""stylecast: video style transfer engine."""
__version__ = "0.1.0"
