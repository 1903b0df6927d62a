"""Benchmarks that reproduce the founding measurements on this host."""
