"""The shipped models, installed with the package as `worldsim.checkpoints` (data files, no code)."""
