"""Benchmarks (not tests): `nox -s bench` or `python -m bench`."""
