"""Benchmarks: each prints numbers and writes JSON (``python -m bench`` runs the suite)."""
