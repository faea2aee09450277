"""hpcaug: augmentation policy search and training on SLURM with DALI and Horovod."""
__version__ = "0.1.0"
