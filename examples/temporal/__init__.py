"""Seed 002: Temporal's child-workflow patterns (see README.md)."""
