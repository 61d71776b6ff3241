"""Training MoCE-IR (`moce train`): degradation synthesis, the paper's objective, resumable checkpoints."""
