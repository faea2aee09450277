"""Data: the dataset index (file lists) and the loaders that read it."""
