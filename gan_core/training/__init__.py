"""The training half: config, data, models, sampling, the loop and its run folder. Imports nothing from judging."""
