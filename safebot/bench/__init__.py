"""Benchmarks: envelope expansion and the projection kernels."""
