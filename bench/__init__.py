"""Benchmarks: Metronome against raw procrastinate, side by side on the same database.

Scripts, not tests: run one with ``bench/run.sh NAME`` (or ``.venv/bin/python -m bench.NAME``);
``tests/test_bench_smoke.py`` runs each at tiny sizes so that they keep working.
"""
