"""Fitting the head model to landmarks (and, later, pixels)."""
