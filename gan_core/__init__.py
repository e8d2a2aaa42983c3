"""mnist-gan-bench library: config, data, models, training loop, metrics."""
