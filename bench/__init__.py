"""Cinema's load harness: ``python -m bench run SCENARIO`` and ``python -m bench suite``.

Modules, from the bottom up: :mod:`bench.stats` (histograms, pure), :mod:`bench.target`
(loopback only), :mod:`bench.clients` (gRPC and HTTP/1.1 wire clients),
:mod:`bench.loadgen` (closed and open loop over several processes), :mod:`bench.scenarios`
(what one call of each scenario is), :mod:`bench.stub` (the echo ceiling),
:mod:`bench.processes` (what a run starts), :mod:`bench.seed` and :mod:`bench.fixtures`
(data and tokens), :mod:`bench.procfs` and :mod:`bench.profile` (CPU and py-spy),
:mod:`bench.report` and :mod:`bench.suite` (tables and ``docs/benchmarks.md``).
"""
