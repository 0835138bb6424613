"""sloserve.bench: the client library behind benchmark/bench_serving.py (docs/benchmarking.md).

``config.BenchConfig`` (flags), ``dataset.build_bench_workload`` (programs to send),
``runner.run_benchmark(cfg, url, rate) -> dict`` (one run), ``capacity.capacity_search``,
``compare`` (several servers or launched policies, table, plots), ``cli.main(argv)``.
Outside the pure core: it uses aiohttp, tqdm and matplotlib.
"""
