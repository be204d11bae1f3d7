"""Reusable numerical and I/O building blocks of soxspipe, one job per module."""
