"""Optuna studies over the blog's knobs."""
