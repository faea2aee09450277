"""SLURM fixtures (filled in by the cluster work)."""
