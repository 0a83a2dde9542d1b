"""Seed 000: the iWF parent-child design pattern (see README.md)."""
