"""robustlib: the helper package behind robustlib lab.

Notebooks call it; it does the work. See README.md for the tour. Importing the package
has no side effects: modules that need torch import it themselves, and process-wide
settings (flushing denormal floats on the CPU, thread counts) are made by the
functions that need them, which say so in their docstrings.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logger = logging.getLogger("robustlib")
if not logger.handlers:
    logger.addHandler(logging.NullHandler())
