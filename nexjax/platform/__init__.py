"""What every layer stands on: the device mesh, XLA:CPU settings, lazy imports, progress
lines, the plotting backend."""
