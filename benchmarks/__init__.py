"""embedline's benchmarks: ``python -m benchmarks.run`` (``make bench``) runs them all.

Each benchmark is a module ``benchmarks.bench_<name>`` that runs standalone too and writes
``benchmarks/results/<name>.json``; :mod:`benchmarks.run` runs them one by one in their own processes
and writes ``summary.json`` and the markdown table ``README.md`` beside them (:mod:`benchmarks.report`).
Nothing here is imported by the pipeline or asserted by the test suite.
"""
