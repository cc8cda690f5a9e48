"""Shipped pretrained bodies, PRESET-KEY.npz and PRESET-KEY.json (package data; see
nexjax/train/shipped_body.py), and `python -m nexjax.bodies.pack`, which writes them."""
