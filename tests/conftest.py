"""Shared pytest fixtures, one file per concern (imported here so every test sees them)."""
from _fixtures_cluster import *  # noqa: F401,F403  slurm_cluster
from _fixtures_data import *  # noqa: F401,F403  demo_data, foolbox_images, imagenet_tree
