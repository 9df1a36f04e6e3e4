"""Benchmarks (not tests): run with ``python -m benchmarks.run`` or ``make bench``; results go to RESULTS.md."""
