"""Benchmarks of `stream run` on the local stack, each beside a baseline from the same run.

`python -m bench` runs every scenario (about 15 minutes), `python -m bench pipeline
latency` some of them, `python -m bench --smoke` all of them with tiny counts (CI). See
bench/cli.py for the options and bench/scenarios/ for what each scenario measures and how.
Machines here are noisy: figures are medians over repeats with min-max, ratios are taken
pair by pair within the run, and no absolute time is asserted.
"""
