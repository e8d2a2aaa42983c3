"""mnist-gan-bench library, in two halves.

- ``gan_core.training``: the frozen RunConfig, data sources, the model family, sampling, the training
  loop and its run folder.
- ``gan_core.judging``: the shipped MNIST feature extractor, features, metrics (torch-fidelity) and
  evaluation against held-out digits; ``gan_core.judging.scoring.score`` scores any generator's samples (a folder,
  an array, a callable) under the same protocol. Judging imports training, never the reverse.

Beside them: shared plumbing (errors, atomic files, devices, the CLI helper, storage URLs) and the thin
CLIs ``python -m gan_core.train``, ``gan_core.evaluate`` and ``gan_core.train_extractor``.
"""
