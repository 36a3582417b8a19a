"""The layout of an encoder's (B, N, C) feature grid: one rule for every room that needs it."""

from __future__ import annotations

import math


def grid_shape(cells: int) -> tuple[int, int]:
    """(rows, cols) of a grid of ``cells`` cells: square when it can be, else one row."""
    side = round(cells**0.5)
    return (side, cells // side) if side and side * (cells // side) == cells else (1, cells)


def square_side(cells: int) -> int:
    """The side of a square grid of ``cells`` cells; ValueError when it is not square."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"expected a square grid of cells, got N={cells}")
    return side
