"""Benchmarks behind ``make bench-*``: each prints ratios measured side by side and ends with one JSON line."""
