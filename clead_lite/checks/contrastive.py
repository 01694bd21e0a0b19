"""Checks for the exercises of notebooks 04-07 (contrastive losses, C-LEAD, evaluation, embeddings)."""
