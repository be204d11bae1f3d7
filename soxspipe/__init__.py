"""soxspipe: the data-reduction pipeline for SOXS, the Son Of X-Shooter spectrograph."""

__version__ = "0.1.0"
