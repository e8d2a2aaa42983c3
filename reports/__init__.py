"""The HTML report builder."""
