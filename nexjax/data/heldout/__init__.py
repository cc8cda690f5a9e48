"""The held-out world: a second renderer of SMD inspection images, written independently of the
synthetic generator, that is never used for pretraining or for any choice; it only measures."""
