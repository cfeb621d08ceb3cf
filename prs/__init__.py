"""Reproducible companion to Progressive Reparameterization Scheduling (Lee et al., 2022)."""

__version__ = "0.1.0"
