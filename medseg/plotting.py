"""Figures for PNG files without pyplot, so writing a plot never changes the caller's backend.

``matplotlib.use("Agg")`` would switch a notebook's inline backend off for the rest of the
session; a bare :class:`matplotlib.figure.Figure` draws with Agg on ``savefig`` and leaves the
global pyplot state alone (and needs no ``close``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_figure"]


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    """A detached figure and its axes (as ``pyplot.subplots`` returns them).

    >>> fig, ax = new_figure((4, 3))
    >>> ax.plot([0, 1], [1, 0])[0].get_xdata().tolist(), fig.get_size_inches().tolist()
    ([0, 1], [4.0, 3.0])
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)
