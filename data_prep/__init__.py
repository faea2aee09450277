"""Preparers: real datasets -> the on-disk layout hpcaug's loaders read (docs/data_prep.md).

`python -m data_prep.fashion_mnist --out DIR` (demo data), `python -m data_prep.imagenet --root IMAGENET --out DIR`.
"""
