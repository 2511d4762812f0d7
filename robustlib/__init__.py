"""robustlib: the helper package behind robustlib lab.

Notebooks call it; it does the work. See README.md for the tour.
"""

from __future__ import annotations

import logging

import torch

__version__ = "0.1.0"

# Denormal floats make CPU training 5-55x slower after ~100 steps (seen on this
# project's machines); flushing them to zero costs nothing measurable in accuracy.
torch.set_flush_denormal(True)

logger = logging.getLogger("robustlib")
if not logger.handlers:
    logger.addHandler(logging.NullHandler())
