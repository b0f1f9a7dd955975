"""Benchmarks behind `worldsim bench`: each module has `run(args) -> exit code`."""
