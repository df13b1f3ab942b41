"""fastgp benchmarks (pytest-benchmark suites, the report). Not installed with the package."""
