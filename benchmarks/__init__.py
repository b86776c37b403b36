"""Benchmarks of resrecover against the tools a user would use instead (benchmarks/README.md).

A package so that its modules import one another plainly (``from benchmarks import harness``): run
them as modules from the repository root, ``python -m benchmarks.run_all`` or
``python -m benchmarks.bench_rl``. Not installed with resrecover (pyproject finds packages in src/).
"""
