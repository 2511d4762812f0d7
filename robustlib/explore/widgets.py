"""The three explorers of ``06_explore`` as ipywidgets, one module each:
:class:`AttackExplorer` (:mod:`~robustlib.explore.attack_ui`), :class:`ResultsBrowser`
(:mod:`~robustlib.explore.browse_ui`) and :class:`WhatIfExplorer`
(:mod:`~robustlib.explore.whatif_ui`). Each is a thin layer over the tested functions of
:mod:`~robustlib.explore.session`, :mod:`~robustlib.explore.browse` and
:mod:`~robustlib.explore.whatif`: the widgets hold controls and outputs, and every update
sets only its own widgets' values (charts as inline SVG), never the cell's output. Show
one with ``display(explorer.ui)``; tests drive the same objects without a browser.
"""

from .attack_ui import POSITIONS, AttackExplorer, prompt_html
from .browse_ui import ANY, ROW_COLUMNS, ResultsBrowser
from .whatif_ui import WhatIfExplorer

__all__ = ["ANY", "POSITIONS", "ROW_COLUMNS", "AttackExplorer", "ResultsBrowser", "WhatIfExplorer", "prompt_html"]
