"""Recipes shipped with the package, so `anomalyr1 train` runs the tiny one from anywhere."""
