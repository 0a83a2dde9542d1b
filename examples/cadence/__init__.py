"""Seed 001: the Cadence child-workflow patterns (see README.md)."""
