"""Judging half of gan_core: the MNIST feature extractor, features, metrics and evaluation against held-out digits."""
