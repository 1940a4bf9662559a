"""Benchmarks and the ``fairmtl`` command line (``fairmtl toy``: FairGrad's Figure 1 toy)."""
