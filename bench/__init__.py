"""The benchmark (bench/run.py, `make bench`): its harness, load, phases and
report, the Django-side fixture, and the micro-benchmarks beside them
(code_sandbox, fast_path_calls, json_body)."""
