"""Checks for the exercises of notebooks 01-03 (attacks, adversarial training)."""
