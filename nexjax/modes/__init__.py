"""The run modes (`--mode=...` of launch.py): each a function of (config, workdir) built from the
building blocks below; no mode imports another, and no building block imports a mode."""
