"""Data: where labelled and unlabelled images come from, decoded and cached once, the input
pipeline, on-device augmentation and TTA views, and the synthetic and held-out generators."""
