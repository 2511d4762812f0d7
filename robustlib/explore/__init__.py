"""Interactive exploration (``notebooks/06_explore.ipynb``): the logic behind the
explorers, in plain functions, and the ipywidgets that drive them.

* :mod:`~robustlib.explore.session`: one attack on one example, stepped by hand
  (:class:`AttackSession`);
* :mod:`~robustlib.explore.browse`: a study's (or the paper's) tables filtered by
  linked controls, and the chart of each view;
* :mod:`~robustlib.explore.whatif`: offense/defense fits read off both ways;
* :mod:`~robustlib.explore.widgets`: the three explorers (imports ipywidgets), one
  module each: ``attack_ui``, ``browse_ui``, ``whatif_ui``, sharing ``ui``.

Nothing heavy is imported here: ``from robustlib.explore import widgets`` when needed.
"""
