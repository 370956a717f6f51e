"""chunkcache.bench: the `chunkcache bench` command.

contexts  the dataset's passages re-cut into ~256-token chunks
variants  one timed column; chunkcache's modes
peers     Hugging Face generate and llama.cpp on the same token ids
runner    the measurements (TTFT sweep, quality sweep, kernels), in one run
report    machine description, bench.json, the Markdown summary
plots     the PNG figures
cli       add_bench_parser(sub), wired into `chunkcache.cli`

Nothing is imported here, so that `chunkcache --help` does not load torch. From Python:
`chunkcache.bench.runner.run_bench(BenchSpec(...))`.
"""
