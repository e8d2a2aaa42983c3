"""pytest-benchmark suites: ``pytest benchmarks/ --benchmark-only`` (see README.md)."""
