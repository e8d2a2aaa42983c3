"""gan_core.errors: what a user is told."""

from gan_core.errors import mask_passwords


def test_postgres_passwords_are_masked():
    assert mask_passwords("postgresql://gan:s3cret@db:5432/studies") == "postgresql://gan:***@db:5432/studies"
    assert mask_passwords("sqlite:///runs/ablations.db") == "sqlite:///runs/ablations.db"
