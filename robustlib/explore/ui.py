"""What the explorers' widgets share: the label style and how a chart is drawn into a
widget (inline SVG in an HTML value, with its alt text)."""

from __future__ import annotations

import html

import ipywidgets as w

#: Labels as wide as their text.
STYLE = {"description_width": "initial"}


def draw_chart(target: w.HTML, chart) -> None:
    """Draw ``chart`` into ``target`` as inline SVG (vl-convert), with its alt text.
    A widget value, not an Output area: updates arrive in order however fast they come,
    and the chart's text (title, axes) is in the page for a reader or a test."""
    import vl_convert as vlc

    from .. import plots

    spec = chart.to_dict()
    svg = vlc.vegalite_to_svg(spec)
    label = html.escape(plots.describe(spec), quote=True)
    target.value = f'<div class="rl-chart" role="img" aria-label="{label}">{svg}</div>'
