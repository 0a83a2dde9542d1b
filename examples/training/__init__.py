"""Seed 004: the training session's fan-out/fan-in patterns (see README.md)."""
