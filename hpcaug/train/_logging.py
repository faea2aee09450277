"""The package's log handler: rank 0 logs at INFO, the other ranks only warnings and errors."""
from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


def setup_logging(root: bool) -> None:
    """Give the `hpcaug` logger a stderr handler (unless the application configured logging)."""
    logger = logging.getLogger("hpcaug")
    if not logger.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    if not root:
        logger.setLevel(logging.WARNING)  # rank-0-only logging
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
