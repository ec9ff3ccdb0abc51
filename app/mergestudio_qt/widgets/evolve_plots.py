"""The Evolve page's plots: fitness vs evaluations, the Pareto front of two objectives,
parallel coordinates over all objectives, hypervolume vs evaluations, and a trial's
genome as a heatmap. Each is one reused pyqtgraph item per series, updated with
``setData`` from a ``TrialHistory``; a selection is drawn by a second small item.

Thousands of trial points are drawn by ``PointCloud``, not ``ScatterPlotItem``: the
scatter item computes a symbol-atlas key per point in Python on every ``setData``
(about 3 µs a point, so 15–30 ms for 5,000), which alone would spend the redraw
budget. ``PointCloud`` keeps one prebuilt sprite per colour (a disc without border, the
"prebuilt brush") and stamps them with one ``drawPixmapFragments`` call; small sets (the
selection, the newest trials, baselines) still use ``ScatterPlotItem``. Long series use
thin pens and step curves keep only their steps: wide antialiased pens over thousands of
vertices cost more to paint than everything else in a plot.

A redraw after one more trial paints only what changed. The views follow the data in
steps (``axis_range``), so axes keep their ticks for many trials; axes, labels and
reference lines keep their last rendering (``keep_rendering``); and the trials off the
Pareto front, which only ever grow in number, stay drawn in an image that each new one
is added to (``SettledLayer``). Whatever changes the scale (a step of an axis, a resize,
another objective chosen) draws everything afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from mergestudio.search.baselines import Baseline
from mergestudio.search.dashboard import (
    GenomeLayout,
    TrialHistory,
    axis_range,
    best_so_far,
    front_2d,
    front_2d_grown,
    generation_bands,
    nice_step,
    parallel_scale,
    scale_axes,
    step_line,
)
from pyqtgraph import functions as fn
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QCursor, QImage, QPainter, QPen, QPixmap, QPolygonF, QTransform
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

ACCENT = "#2563eb"
SELECTED = "#dc2626"
NEWEST = "#f59e0b"
PARENT = "#0f766e"
MERGE = "#7c3aed"
FADED_ALPHA = 70
EVALUATION_BINS = 32  # colours of the 'evaluation #' map: prebuilt pens, one per bin
PICK_RADIUS_PX = 8.0
LABEL_ROOM = 1.05  # axis units right of the last parallel axis, for baseline labels
HOVER_RATE_HZ = 30

Describe = Callable[[int], str]  # trial number -> tooltip text


def _color(name: str, alpha: int = 255) -> QColor:
    color = QColor(name)
    color.setAlpha(alpha)
    return color


def evaluation_colormap() -> pg.ColorMap:
    return pg.colormap.get("viridis")


def colour_scale_top(count: int) -> int:
    """The top of the 'evaluation #' colour bar for ``count`` trials: ``count`` rounded up
    to a 1-2-5 step of about a 50th of it, so the bar (and every point's colour) changes
    every few generations, not with every trial."""
    step = max(1, round(nice_step(max(count, 2) / 50)))
    return max(2, -(-count // step) * step)


def step_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A step function through (x, y) with vertices only where y changes: a best-so-far
    or hypervolume curve of 5,000 trials has a few hundred steps, and painting a wide
    pen over 10,000 vertices costs more than the rest of the plot."""
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    same = np.concatenate([[False], (y[1:] == y[:-1]) | (np.isnan(y[1:]) & np.isnan(y[:-1]))])
    keep = np.flatnonzero(~same)
    kx, ky = x[keep], y[keep]
    xs = np.append(np.repeat(kx, 2)[1:], x[-1])
    ys = np.append(np.repeat(ky, 2)[:-1], ky[-1])
    return xs, ys


def _polygon(x: np.ndarray, y: np.ndarray) -> QPolygonF:
    if x.size == 0:
        return QPolygonF()  # pyqtgraph's empty buffer is read-only
    polygon = fn.create_qpolygonf(x.size)
    view = fn.ndarray_from_qpolygonf(polygon)
    view[:, 0] = x
    view[:, 1] = y
    return polygon


def keep_rendering(item: QGraphicsItem) -> None:
    """Let Qt keep the last rendering of ``item`` and of everything in it (a label's text,
    an axis's title) and reuse it until the item changes: pyqtgraph calls ``update()`` on
    every change, and a zoom renders it afresh. Axes, labels and reference lines look the
    same from one trial to the next, and drawing their text and grid lines again costs
    more than the thousands of points that did change."""
    item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    for child in item.childItems():
        keep_rendering(child)


def keep_axes_rendering(item: pg.PlotItem) -> None:
    """Axes keep their rendering (``keep_rendering``) and their size: they widen for
    wider tick labels but never narrow again (an empty plot's "0" and "1" would narrow
    them, the first trials' "0.125" widen them back), since every change of size
    re-lays out the plot and renders it afresh."""
    for name in ("left", "bottom", "top", "right"):
        axis = item.getAxis(name)
        axis.setStyle(autoReduceTextSpace=False)
        keep_rendering(axis)


def short_label(members: Sequence[Baseline], limit: int = 14) -> str:
    """``task_arithmetic +2`` for three baselines on one spot, elided to ``limit``."""
    first = members[0].label
    first = first if len(first) <= limit else first[: limit - 1] + "…"
    return first + (f" +{len(members) - 1}" if len(members) > 1 else "")


def set_label(item: pg.PlotItem, axis: str, text: str) -> None:
    """Set an axis label only when it changes (each set re-lays out the plot)."""
    if item.getAxis(axis).labelText != text:
        item.setLabel(axis, text)


def legend_html(entries: Sequence[tuple[str, str, str]]) -> str:
    """A one-line legend: (symbol, colour, text) per entry. Drawn above the plot, not in
    it, so it never hides a point."""
    return "&nbsp;&nbsp; ".join(
        f"<span style='color:{color}'>{symbol}</span>&nbsp;{text}" for symbol, color, text in entries
    )


def group_baselines(
    baselines: Sequence[Baseline], key: Callable[[Baseline], tuple[float, ...]]
) -> list[tuple[str, str, tuple[float, ...], list[Baseline]]]:
    """Baselines that land on the same spot drawn once, their labels joined: the default
    merges of an untrained search often tie (all zero), and stacked labels are unreadable.
    Returns (label, kind of the first, position, members); merges before parents."""
    groups: dict[tuple[float, ...], list[Baseline]] = {}
    for baseline in baselines:
        groups.setdefault(tuple(round(v, 9) for v in key(baseline)), []).append(baseline)
    out = []
    for position, members in groups.items():
        members = sorted(members, key=lambda b: b.kind != "merge")
        out.append((", ".join(b.label for b in members), members[0].kind, position, members))
    return out


# ---- a fast point item --------------------------------------------------------------------


class SettledLayer:
    """An image of marks that only accumulate, kept between paints: the trials off the
    Pareto front. A trial off the front stays off it (a dominated trial is dominated
    for good), so in a live run this set only grows, and drawing the few new marks
    into the image costs microseconds where drawing thousands again costs milliseconds
    (Qt pays per pixel of every mark). The image is drawn afresh whenever anything
    else changes: the owner's ``key`` (under which a settled mark must not move or
    change colour), the view's transform or size, or a mark leaving the set."""

    def __init__(self) -> None:
        self._image: QImage | None = None
        self._image_key: tuple[Any, ...] = ()
        self._held = np.zeros(0, dtype=bool)
        self.full_renders = 0  # how often the image was drawn from scratch (for tests)

    def clear(self) -> None:
        """Forget the image: the next paint draws every mark."""
        self._image = None

    def paint(
        self,
        painter: QPainter,
        widget: QWidget | None,
        view: QRectF,
        key: tuple[Any, ...],
        settled: np.ndarray,
        draw: Callable[[QPainter, np.ndarray], None],
    ) -> None:
        """Bring the image up to ``settled`` (a mask over the owner's marks) with
        ``draw(painter, mask)``, which draws the marks of a mask with ``painter`` in the
        owner's coordinates, then draw the image. The image covers ``view`` (the visible
        part of the plot, in the owner's coordinates), not the marks' bounds: those grow
        with the trials. Leaves ``painter`` in device coordinates."""
        transform = painter.transform()
        device = painter.device()
        area = transform.mapRect(view).toAlignedRect()
        area = area.intersected(QRect(0, 0, device.width(), device.height()))
        if area.isEmpty():
            return
        dpr = widget.devicePixelRatioF() if widget is not None else device.devicePixelRatioF()
        image_key = (
            key,
            transform.m11(),
            transform.m12(),
            transform.m21(),
            transform.m22(),
            transform.dx(),
            transform.dy(),
            area.x(),
            area.y(),
            area.width(),
            area.height(),
            dpr,
        )
        held = np.zeros(settled.size, dtype=bool)
        count = min(settled.size, self._held.size)
        held[:count] = self._held[:count]
        if (
            self._image is None
            or image_key != self._image_key
            or self._held.size > settled.size
            or (held & ~settled).any()
        ):
            self._image = QImage(
                round(area.width() * dpr),
                round(area.height() * dpr),
                QImage.Format.Format_ARGB32_Premultiplied,
            )
            self._image.setDevicePixelRatio(dpr)
            self._image.fill(Qt.GlobalColor.transparent)
            self._image_key = image_key
            held[:] = False
            self.full_renders += 1
        new = settled & ~held
        if new.any():
            layer = QPainter(self._image)
            # A clip keeps Qt's line stroker on its fast path (without one it is ~30x slower).
            layer.setClipRect(QRect(0, 0, area.width(), area.height()))
            layer.setTransform(transform * QTransform.fromTranslate(-area.x(), -area.y()))
            draw(layer, new)
            layer.end()
        self._held = settled.copy()
        painter.resetTransform()
        painter.drawImage(area.topLeft(), self._image)


class PointCloud(pg.GraphicsObject):
    """Round points of one size in a few colours. ``codes[i]`` picks point i's colour
    from the palette. Points with NaN coordinates are not drawn (and never picked).

    Painting stamps one prebuilt sprite per colour (an antialiased disc, no border) at
    every point with a single ``drawPixmapFragments`` call, the way pyqtgraph's own
    scatter paints, but without its per-point style bookkeeping on every ``setData``.
    Points marked ``settled`` (off the front) are kept in a ``SettledLayer`` and drawn
    below the others."""

    def __init__(self, size: float = 7.0) -> None:
        super().__init__()
        self.size = size
        self._colors: list[QColor] = []
        self._sprites: QPixmap | None = None
        self._sprite_dpr = 0.0
        self._fragments = pg.Qt.internals.PrimitiveArray(QPainter.PixmapFragment, 10)
        self._x = np.zeros(0)
        self._y = np.zeros(0)
        self._codes = np.zeros(0, dtype=np.int64)
        self._drawn = np.zeros(0, dtype=bool)
        self._settled = np.zeros(0, dtype=bool)
        self._key: tuple[Any, ...] = ()
        self._bounds: tuple[float, float, float, float] | None = None
        self.layer = SettledLayer()

    def set_palette(self, colors: Sequence[QColor]) -> None:
        self._colors = [QColor(c) for c in colors]
        self._sprites = None

    def _sprite_sheet(self, dpr: float) -> QPixmap:
        """One row of discs, one per colour, each ``cell`` device pixels square."""
        if self._sprites is not None and self._sprite_dpr == dpr:
            return self._sprites
        cell = self._cell(dpr)
        sheet = QPixmap(cell * max(1, len(self._colors)), cell)
        sheet.fill(Qt.GlobalColor.transparent)
        painter = QPainter(sheet)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(Qt.PenStyle.NoPen)
        diameter = self.size * dpr
        for i, color in enumerate(self._colors):
            painter.setBrush(color)
            painter.drawEllipse(
                QRectF(i * cell + (cell - diameter) / 2, (cell - diameter) / 2, diameter, diameter)
            )
        painter.end()
        self._sprites, self._sprite_dpr = sheet, dpr
        return sheet

    def _cell(self, dpr: float) -> int:
        return int(np.ceil(self.size * dpr)) + 2

    def set_points(
        self,
        x: np.ndarray,
        y: np.ndarray,
        codes: np.ndarray | None = None,
        settled: np.ndarray | None = None,
        key: tuple[Any, ...] = (),
    ) -> None:
        """Points (x[i], y[i]) in colours ``codes``; under one ``key``, a point that is
        ``settled`` keeps its place and colour and stays settled (points may be
        appended)."""
        self.prepareGeometryChange()
        self._x = np.asarray(x, dtype=np.float64)
        self._y = np.asarray(y, dtype=np.float64)
        n = self._x.size
        self._codes = np.zeros(n, dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
        self._drawn = np.isfinite(self._x) & np.isfinite(self._y)
        self._settled = self._drawn & (
            np.zeros(n, dtype=bool) if settled is None else np.asarray(settled, dtype=bool)
        )
        self._key = key
        if self._drawn.any():
            xs, ys = self._x[self._drawn], self._y[self._drawn]
            self._bounds = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
        else:
            self._bounds = None
        self.informViewBoundsChanged()
        self.update()

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What is drawn: x, y and colour codes (as given, NaN rows included)."""
        return self._x, self._y, self._codes

    def nearest(
        self, x: float, y: float, pixel: tuple[float, float], radius_px: float = PICK_RADIUS_PX
    ) -> int | None:
        """Index of the point nearest (x, y) in screen distance, if within ``radius_px``."""
        if self._x.size == 0 or pixel[0] <= 0 or pixel[1] <= 0:
            return None
        with np.errstate(invalid="ignore"):
            distance = np.hypot((self._x - x) / pixel[0], (self._y - y) / pixel[1])
        distance = np.where(np.isnan(distance), np.inf, distance)
        best = int(np.argmin(distance))
        return best if distance[best] <= radius_px else None

    # pyqtgraph's hooks for auto-range and painting

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: Any = None
    ) -> tuple[float | None, float | None]:
        if self._bounds is None:
            return None, None
        return (self._bounds[0], self._bounds[1]) if ax == 0 else (self._bounds[2], self._bounds[3])

    def pixelPadding(self) -> float:
        return self.size / 2 + 1

    def boundingRect(self) -> QRectF:
        if self._bounds is None:
            return QRectF()
        x0, x1, y0, y1 = self._bounds
        px = py = 0.0
        vectors = self.pixelVectors()
        if vectors is not None and vectors[0] is not None:
            px = vectors[0].length() * self.pixelPadding()
            py = vectors[1].length() * self.pixelPadding()
        return QRectF(x0 - px, y0 - py, (x1 - x0) + 2 * px, (y1 - y0) + 2 * py)

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()

    def paint(self, painter: QPainter, _option: Any = None, widget: QWidget | None = None) -> None:
        if self._bounds is None or not self._colors:
            return
        dpr = widget.devicePixelRatioF() if widget is not None else painter.device().devicePixelRatioF()
        transform = painter.transform()
        if self._settled.any():
            self.layer.paint(
                painter,
                widget,
                self.viewRect(),
                self._key,
                self._settled,
                lambda layer, rows: self._stamp(layer, rows, dpr),
            )
            painter.setTransform(transform)
        live = self._drawn & ~self._settled
        if live.any():
            self._stamp(painter, live, dpr)

    def _stamp(self, painter: QPainter, rows: np.ndarray, dpr: float) -> None:
        """Stamp the points of ``rows`` (a mask); leaves ``painter`` in device coordinates."""
        sheet = self._sprite_sheet(dpr)
        cell = self._cell(dpr)
        points = fn.transformCoordinates(painter.transform(), np.vstack([self._x[rows], self._y[rows]]))
        points = fn.clip_array(points, -(2**30), 2**30)
        codes = np.clip(self._codes[rows], 0, len(self._colors) - 1)
        painter.resetTransform()
        self._fragments.resize(points.shape[1])
        fragments = self._fragments.ndarray()
        fragments[:, 0:2] = points.T  # centre of each stamp, in device pixels
        fragments[:, 2] = codes * cell
        fragments[:, 3] = 0.0
        fragments[:, 4:6] = cell
        fragments[:, 6:10] = [1 / dpr, 1 / dpr, 0.0, 1.0]
        painter.drawPixmapFragments(*self._fragments.drawargs(), sheet)


class BandItem(pg.GraphicsObject):
    """The filled area between two piecewise-linear curves over ``x`` (the generation
    mean ± std), painted as an image of one filled span per device pixel column, from
    the curves' values at the column's centre. Qt's polygon fill takes milliseconds for
    the few hundred jagged vertices of a long run's band; the image, a few hundred
    microseconds. The pixels are those of the polygon filled without antialiasing."""

    def __init__(self, color: QColor) -> None:
        super().__init__()
        alpha = color.alpha()
        premultiplied = [round(c * alpha / 255) for c in (color.red(), color.green(), color.blue())]
        self._pixel = np.uint32(
            (alpha << 24) | (premultiplied[0] << 16) | (premultiplied[1] << 8) | premultiplied[2]
        )
        self._x = np.zeros(0)
        self._lower = np.zeros(0)
        self._upper = np.zeros(0)

    def set_band(self, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        keep = np.isfinite(x) & np.isfinite(lower) & np.isfinite(upper)
        order = np.argsort(x[keep], kind="stable")
        self.prepareGeometryChange()
        self._x, self._lower, self._upper = x[keep][order], lower[keep][order], upper[keep][order]
        self.informViewBoundsChanged()
        self.update()

    def band(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What is drawn: x, lower and upper (the finite rows, by x)."""
        return self._x, self._lower, self._upper

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: Any = None
    ) -> tuple[float | None, float | None]:
        if self._x.size == 0:
            return None, None
        if ax == 0:
            return float(self._x[0]), float(self._x[-1])
        return float(self._lower.min()), float(self._upper.max())

    def boundingRect(self) -> QRectF:
        if self._x.size == 0:
            return QRectF()
        low, high = float(self._lower.min()), float(self._upper.max())
        return QRectF(float(self._x[0]), low, float(self._x[-1] - self._x[0]), high - low)

    def paint(self, painter: QPainter, _option: Any = None, _widget: QWidget | None = None) -> None:
        if self._x.size < 2:
            return
        transform = painter.transform()
        if transform.m12() != 0 or transform.m21() != 0 or transform.m11() == 0:  # never in a plot
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pg.mkBrush(QColor.fromRgba(int(self._pixel))))
            painter.drawPolygon(
                _polygon(
                    np.concatenate([self._x, self._x[::-1]]), np.concatenate([self._upper, self._lower[::-1]])
                )
            )
            return
        sx, dx, sy, dy = transform.m11(), transform.dx(), transform.m22(), transform.dy()
        left, right = sorted((self._x[0] * sx + dx, self._x[-1] * sx + dx))
        device = painter.device()  # zoomed in, the band is far larger than the view
        left, right = max(left, 0.0), min(right, float(device.width()))
        columns = np.arange(np.floor(left), np.ceil(right))
        at = (columns + 0.5 - dx) / sx  # each column's centre, in data units
        inside = (at >= self._x[0]) & (at <= self._x[-1])
        if not inside.any():
            return
        columns, at = columns[inside], at[inside]
        y0 = np.rint(np.interp(at, self._x, self._lower) * sy + dy)
        y1 = np.rint(np.interp(at, self._x, self._upper) * sy + dy)
        top = np.clip(np.minimum(y0, y1), 0, device.height())
        bottom = np.clip(np.maximum(y0, y1), 0, device.height())
        first = int(top.min())
        rows = np.arange(first, int(bottom.max()))[:, None]
        if rows.size == 0:
            return
        pixels = np.where((rows >= top) & (rows < bottom), self._pixel, np.uint32(0))
        image = QImage(
            pixels.data,
            pixels.shape[1],
            pixels.shape[0],
            pixels.strides[0],
            QImage.Format.Format_ARGB32_Premultiplied,
        )
        painter.resetTransform()
        painter.drawImage(QPointF(float(columns[0]), float(first)), image)


class GrowingLines(pg.GraphicsObject):
    """Polylines over the ticks x = 0 … k-1, one per row of ``ys`` where ``drawn``, in
    one thin pen without antialiasing: the parallel coordinates of the trials off the
    Pareto front, kept in a ``SettledLayer``."""

    def __init__(self, pen: QPen) -> None:
        super().__init__()
        self.pen = QPen(pen)
        self.pen.setCosmetic(True)
        self._ys = np.zeros((0, 0))
        self._drawn = np.zeros(0, dtype=bool)
        self._key: tuple[Any, ...] = ()
        self._bounds = QRectF()
        self.layer = SettledLayer()

    def set_lines(self, ys: np.ndarray, drawn: np.ndarray, key: tuple[Any, ...]) -> None:
        """``ys[i]`` is row i's polyline; rows may be appended, but under one ``key`` a
        drawn row's values must not change and it must stay drawn."""
        self.prepareGeometryChange()
        self._ys = ys
        self._drawn = np.asarray(drawn, dtype=bool)
        self._key = key
        shown = ys[self._drawn]
        finite = shown[np.isfinite(shown)]
        k = ys.shape[1] if ys.ndim == 2 else 0
        if finite.size and k:
            low, high = float(finite.min()), float(finite.max())
            self._bounds = QRectF(0.0, low, float(k - 1), high - low)
        else:
            self._bounds = QRectF()
        self.informViewBoundsChanged()
        self.update()

    def lines(self) -> tuple[np.ndarray, np.ndarray]:
        """What is drawn: every row's values and which rows are drawn."""
        return self._ys, self._drawn

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: Any = None
    ) -> tuple[float | None, float | None]:
        if self._bounds.isNull():
            return None, None
        if ax == 0:
            return self._bounds.left(), self._bounds.right()
        return self._bounds.top(), self._bounds.bottom()

    def boundingRect(self) -> QRectF:
        return QRectF(self._bounds)

    def paint(self, painter: QPainter, _option: Any = None, widget: QWidget | None = None) -> None:
        if self._bounds.isNull() or not self._drawn.any():
            return
        self.layer.paint(painter, widget, self.viewRect(), self._key, self._drawn, self._stroke)

    def _stroke(self, painter: QPainter, rows: np.ndarray) -> None:
        ys = self._ys[rows]
        n, k = ys.shape
        xs = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), n)
        path = fn.arrayToQPath(xs, np.hstack([ys, np.full((n, 1), np.nan)]).ravel(), connect="finite")
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(self.pen)
        painter.drawPath(path)


def set_curve(item: pg.PlotCurveItem, x: np.ndarray, y: np.ndarray) -> None:
    """``item.setData(x, y)`` unless it draws these points already: Qt then reuses the
    item's last rendering (``keep_rendering``)."""
    shown_x, shown_y = item.getData()
    if shown_x is None or not (np.array_equal(shown_x, x) and np.array_equal(shown_y, y, equal_nan=True)):
        item.setData(x, y)


def set_scatter(item: pg.ScatterPlotItem, x: Sequence[float], y: Sequence[float]) -> None:
    """``item.setData(x, y)`` unless it shows these points already (a selection stays put
    while trials come in, and every setData re-styles the item and repaints it)."""
    shown_x, shown_y = item.getData()
    if not (np.array_equal(shown_x, x) and np.array_equal(shown_y, y)):
        item.setData(x, y)


def _ring(color: str, size: float, width: float = 2.0) -> pg.ScatterPlotItem:
    """A small scatter for highlights: open circles drawn over the cloud."""
    return pg.ScatterPlotItem(
        size=size, pen=pg.mkPen(color, width=width), brush=None, symbol="o", pxMode=True, hoverable=False
    )


# ---- the common frame ---------------------------------------------------------------------


class TrialPlot(QWidget):
    """A titled plot with optional choosers in its header; hovering a trial shows its
    values, clicking it emits ``trial_clicked``."""

    trial_clicked = Signal(int)

    def __init__(
        self, title: str, parent: QWidget | None = None, grid: tuple[bool, bool] = (False, True)
    ) -> None:
        super().__init__(parent)
        self.describe: Describe = lambda number: f"trial {number}"
        self.history: TrialHistory | None = None
        self.baselines: list[Baseline] = []
        self.selected: int | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.header = QHBoxLayout()
        self.header.setContentsMargins(4, 0, 4, 0)
        self.header.setSpacing(6)
        self.title = QLabel(title, self)
        self.title.setObjectName("sectionTitle")
        self.header.addWidget(self.title)
        self.header.addStretch(1)
        layout.addLayout(self.header)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setMinimumHeight(160)
        self.plot_item: pg.PlotItem = self.plot.getPlotItem()
        # Grid lines cost a few ms of every repaint each: only where they help reading.
        self.plot_item.showGrid(x=grid[0], y=grid[1], alpha=0.15)
        for name in ("left", "bottom"):
            # Values are fractions or perplexities: '(x0.001)' scale prefixes only confuse.
            self.plot_item.getAxis(name).enableAutoSIPrefix(False)
        keep_axes_rendering(self.plot_item)
        # The view follows the data in steps (``fit``), not by pyqtgraph's auto-range: that
        # re-fits to every new extreme, and each re-fit re-lays out the axes and renders
        # everything in the plot at a new scale. Panning or zooming an axis stops it
        # following; the plot's "A" button makes both follow again.
        self.following = [True, True]
        self._fitted: list[tuple[float, float] | None] = [None, None]
        box = self.plot_item.getViewBox()
        box.disableAutoRange()
        box.sigRangeChangedManually.connect(self._stop_following)
        self.plot_item.autoBtn.clicked.connect(self._follow_again)
        self.legend = QLabel(self)
        self.legend.setObjectName("hint")
        self.legend.setStyleSheet("font-size: 9pt")
        self.legend.setWordWrap(True)
        self.legend.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        self._hover = pg.SignalProxy(
            self.plot.scene().sigMouseMoved, rateLimit=HOVER_RATE_HZ, slot=self._hovered
        )
        self.plot.scene().sigMouseClicked.connect(self._clicked)

    def add_chooser(self, label: str, tip: str) -> QComboBox:
        text = QLabel(label, self)
        combo = QComboBox(self)
        combo.setToolTip(tip)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.header.addWidget(text)
        self.header.addWidget(combo)
        return combo

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        """Redraw every series from ``history`` (subclasses)."""
        self.history, self.baselines = history, baselines

    # subclasses: which trial is at a view position
    def pick(self, x: float, y: float) -> int | None:
        return None

    def tooltip_at(self, x: float, y: float) -> str:
        number = self.pick(x, y)
        return "" if number is None else self.describe(number)

    def _pixel(self) -> tuple[float, float]:
        width, height = self.plot_item.getViewBox().viewPixelSize()
        return float(width), float(height)

    def _view_pos(self, scene_pos: QPointF) -> QPointF | None:
        box = self.plot_item.getViewBox()
        if not box.sceneBoundingRect().contains(scene_pos):
            return None
        return box.mapSceneToView(scene_pos)

    def _hovered(self, args: tuple[Any, ...]) -> None:
        pos = self._view_pos(args[0])
        text = "" if pos is None else self.tooltip_at(pos.x(), pos.y())
        if text:
            QToolTip.showText(QCursor.pos(), text, self.plot)
        else:
            QToolTip.hideText()

    def _clicked(self, event: Any) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = self._view_pos(event.scenePos())
        number = None if pos is None else self.pick(pos.x(), pos.y())
        if number is not None:
            self.trial_clicked.emit(number)

    def fit(self, x: tuple[float, float] | None = None, y: tuple[float, float] | None = None) -> None:
        """Show the view ranges ``x`` and ``y`` (None: leave that axis) on the axes that
        follow the data; the view changes only when a range does."""
        box = self.plot_item.getViewBox()
        for axis, wanted in enumerate((x, y)):
            if wanted is None:
                continue
            self._fitted[axis] = wanted
            if self.following[axis] and tuple(box.viewRange()[axis]) != wanted:
                box.setRange(
                    xRange=wanted if axis == 0 else None, yRange=wanted if axis == 1 else None, padding=0
                )

    def fit_evaluations(self, count: int) -> None:
        """The x axis (evaluations) grows in steps of half a power of ten, not with every
        trial."""
        step = max(1.0, 10 ** np.floor(np.log10(max(count, 1))) / 2)
        high = max(step, np.ceil(max(count, 1) / step) * step)
        self.fit(x=(0.0, float(high) + 0.5))

    def _stop_following(self, mask: Sequence[bool]) -> None:
        self.following = [follow and not moved for follow, moved in zip(self.following, mask, strict=False)]

    def _follow_again(self) -> None:
        self.following = [True, True]
        self.plot_item.getViewBox().disableAutoRange()  # the button turned pyqtgraph's on
        self.fit(*self._fitted)

    def set_selected(self, number: int | None) -> None:
        self.selected = number
        self.draw_selection()

    def draw_selection(self) -> None:  # subclasses
        return None


def _objective_items(combo: QComboBox, history: TrialHistory, keep: int) -> None:
    """Fill ``combo`` with the objectives (keeping index ``keep`` when it exists)."""
    names = [o.name for o in history.objectives]
    if [combo.itemData(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    for objective in history.objectives:
        combo.addItem(objective.name, objective.name)
        combo.setItemData(combo.count() - 1, objective.label, Qt.ItemDataRole.ToolTipRole)
    combo.setCurrentIndex(min(keep, combo.count() - 1))
    combo.blockSignals(False)


# ---- fitness vs evaluations ---------------------------------------------------------------


class FitnessPlot(TrialPlot):
    """One objective against evaluations: every trial a point (front members solid),
    the best so far as a step line, each generation's mean ± std as a band, and the
    baselines as labelled dashed lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Fitness", parent)
        self.objective = self.add_chooser("Objective", "Which objective to plot against evaluations")
        self.objective.currentIndexChanged.connect(self._objective_chosen)
        item = self.plot_item
        item.setLabel("bottom", "evaluations")
        # Not FillBetweenItem: it rebuilds its path from two curves' paths, ~20 ms for a
        # few hundred generations.
        self.band = BandItem(_color(ACCENT, 40))
        item.addItem(self.band)
        # Solid and thin: dash patterns and wide pens are what a 5,000-trial repaint pays for.
        # Plain curves, not PlotDataItem: a point per generation or per step is few enough
        # to draw whole, and PlotDataItem's bookkeeping costs ~0.3 ms a setData.
        self.mean = pg.PlotCurveItem(pen=pg.mkPen("#1e3a8a", width=1))
        self.cloud = PointCloud(6.0)
        self.cloud.set_palette([_color(ACCENT, FADED_ALPHA), _color(ACCENT)])
        item.addItem(self.cloud)
        # Steps are horizontal and vertical: antialiasing would only blur them.
        self.best = pg.PlotCurveItem(pen=pg.mkPen(SELECTED, width=2), antialias=False)
        for line in (self.mean, self.best):
            item.addItem(line)
        self.ring = _ring(SELECTED, 15)
        keep_rendering(self.ring)
        item.addItem(self.ring)
        self.legend.setText(
            legend_html(
                [
                    ("●", "#9db5ea", "trial"),
                    ("●", ACCENT, "on the front"),
                    ("━", SELECTED, "best so far"),
                    ("━", "#1e3a8a", "generation mean ± std"),
                    ("┄", MERGE, "baselines"),
                ]
            )
        )
        self.baseline_lines: list[pg.InfiniteLine] = []
        self._baseline_key: tuple[Any, ...] = ()

    def _objective_chosen(self, _index: int) -> None:
        if self.history is not None:
            self.redraw(self.history, self.baselines)

    def objective_index(self) -> int:
        return max(0, self.objective.currentIndex())

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        _objective_items(self.objective, history, self.objective_index())
        if not history.objectives:
            return
        index = self.objective_index()
        axis = history.objectives[index]
        values = history.values[:, index]
        x = history.evaluations.astype(np.float64)
        set_label(self.plot_item, "left", axis.label)
        front = history.front_mask()
        self.cloud.set_points(x, values, front.astype(np.int64), ~front, (history, index))
        self.best.setData(*step_points(x, best_so_far(values, axis.maximize)))
        bands = generation_bands(history.generations, values)
        self.mean.setData(bands.x, bands.mean)
        self.band.set_band(bands.x, bands.mean - bands.std, bands.mean + bands.std)
        shown = self._draw_baselines(axis.name, axis.maximize)
        self.fit_evaluations(len(history))
        self.fit(y=axis_range(values, bands.mean - bands.std, bands.mean + bands.std, shown))
        self.draw_selection()

    def _draw_baselines(self, name: str, maximize: bool) -> list[float]:
        """The default merges and the best parent on this objective (more would pile
        up); returns their values."""
        chosen = [b for b in self.baselines if b.kind == "merge" and name in b.objectives]
        parents = [b for b in self.baselines if b.kind == "parent" and name in b.objectives]
        if parents:
            pick = max if maximize else min
            chosen.append(pick(parents, key=lambda b: b.objectives[name]))
        values = [b.objectives[name] for b in chosen]
        key = (name, tuple((b.label, b.objectives[name]) for b in chosen))
        if key == self._baseline_key:
            return values
        self._baseline_key = key
        for line in self.baseline_lines:
            self.plot_item.removeItem(line)
        self.baseline_lines = []
        for i, (label, kind, (value,), members) in enumerate(
            group_baselines(chosen, lambda b: (b.objectives[name],))
        ):
            color = MERGE if kind == "merge" else PARENT
            line = pg.InfiniteLine(
                pos=value,
                angle=0,
                movable=False,
                pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine),
                label=label,
                labelOpts={"position": 0.97 - 0.12 * (i % 3), "color": color, "anchors": [(1, 1), (1, 1)]},
            )
            line.setToolTip(f"{label}: {value:.4g} ({members[0].estimator})")
            keep_rendering(line)
            self.plot_item.addItem(line)
            self.baseline_lines.append(line)
        return values

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None:
            set_scatter(self.ring, [], [])
            return
        set_scatter(self.ring, [row + 1.0], [history.values[row, self.objective_index()]])

    def pick(self, x: float, y: float) -> int | None:
        index = self.cloud.nearest(x, y, self._pixel())
        return None if index is None or self.history is None else int(self.history.numbers[index])


# ---- the Pareto front of two objectives ---------------------------------------------------


class ParetoPlot(TrialPlot):
    """Two chosen objectives: every trial coloured by when it was evaluated (colour bar),
    trials off the study's Pareto front faded, the front of these two objectives as a
    step line, the newest generation ringed, baselines as labelled markers."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Pareto front", parent, grid=(True, True))
        self.x_choice = self.add_chooser("x", "Objective on the horizontal axis")
        self.y_choice = self.add_chooser("y", "Objective on the vertical axis")
        self.x_choice.currentIndexChanged.connect(self._axes_chosen)
        self.y_choice.currentIndexChanged.connect(self._axes_chosen)
        item = self.plot_item
        lut = evaluation_colormap().getLookupTable(nPts=EVALUATION_BINS, alpha=False)
        solid = [QColor(int(r), int(g), int(b)) for r, g, b in lut]
        faded = [_color(c.name(), FADED_ALPHA) for c in solid]
        self.cloud = PointCloud(7.0)
        self.cloud.set_palette(faded + solid)  # code = bin (+ bins when on the front)
        item.addItem(self.cloud)
        self.step = pg.PlotCurveItem(pen=pg.mkPen(ACCENT, width=2), antialias=False)  # steps: crisp
        keep_rendering(self.step)  # the front of two objectives changes now and then
        item.addItem(self.step)
        self.newest = _ring(NEWEST, 12, 1.5)
        item.addItem(self.newest)
        self.parents = pg.ScatterPlotItem(symbol="t", size=11, pen=None, brush=pg.mkBrush(PARENT))
        self.merges = pg.ScatterPlotItem(symbol="d", size=11, pen=None, brush=pg.mkBrush(MERGE))
        keep_rendering(self.parents)
        keep_rendering(self.merges)
        item.addItem(self.parents)
        item.addItem(self.merges)
        self.labels: list[pg.TextItem] = []
        self.ring = _ring(SELECTED, 17, 2.5)
        keep_rendering(self.ring)
        item.addItem(self.ring)
        self.colorbar = pg.ColorBarItem(
            values=(1, 2), colorMap=evaluation_colormap(), interactive=False, width=12, label="evaluation #"
        )
        keep_axes_rendering(self.colorbar)
        item.layout.addItem(self.colorbar, 2, 5)
        self.legend.setText(
            legend_html(
                [
                    ("●", "#3b528b", "trial (colour: evaluation #; faded: off the front)"),
                    ("━", ACCENT, "front of x, y"),
                    ("○", NEWEST, "newest"),
                    ("▼", PARENT, "parents"),
                    ("◆", MERGE, "default merges"),
                ]
            )
        )
        self.front_indices = np.zeros(0, dtype=np.int64)  # rows on the step line, for tests
        self._front_of: tuple[Any, ...] = ()  # (history, x, y, rows) front_indices is of
        self._baseline_key: tuple[Any, ...] = ()

    def _axes_chosen(self, _index: int) -> None:
        if self.history is not None:
            self.redraw(self.history, self.baselines)

    def axes(self) -> tuple[int, int]:
        return max(0, self.x_choice.currentIndex()), max(0, self.y_choice.currentIndex())

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        _objective_items(self.x_choice, history, self.x_choice.currentIndex() if self.x_choice.count() else 0)
        _objective_items(self.y_choice, history, self.y_choice.currentIndex() if self.y_choice.count() else 1)
        if not history.objectives:
            return
        xi, yi = self.axes()
        ax, ay = history.objectives[xi], history.objectives[yi]
        set_label(self.plot_item, "bottom", ax.label)
        set_label(self.plot_item, "left", ay.label)
        x, y = history.values[:, xi], history.values[:, yi]
        n = len(history)
        top = colour_scale_top(n)
        bins = np.minimum((np.arange(n) * EVALUATION_BINS) // top, EVALUATION_BINS - 1)
        front = history.front_mask()
        self.cloud.set_points(x, y, bins + EVALUATION_BINS * front, ~front, (history, xi, yi, top))
        if tuple(self.colorbar.levels()) != (1, top):
            self.colorbar.setLevels(low=1, high=top)
        known = self._front_of[:3] == (history, xi, yi) and self._front_of[3] <= n
        if known:  # trials were added: the front of the old front and the new trials
            self.front_indices = front_2d_grown(
                x, y, ax.maximize, ay.maximize, self.front_indices, self._front_of[3]
            )
        else:
            self.front_indices = front_2d(x, y, ax.maximize, ay.maximize)
        self._front_of = (history, xi, yi, n)
        sx, sy = step_line(x[self.front_indices], y[self.front_indices], ax.maximize, ay.maximize)
        set_curve(self.step, sx, sy)
        newest = slice(max(0, n - history.population_size), n)
        self.newest.setData(x[newest], y[newest])
        self._draw_baselines(ax.name, ay.name)
        usable = [b for b in baselines if ax.name in b.objectives and ay.name in b.objectives]
        self.fit(
            axis_range(x, [b.objectives[ax.name] for b in usable]),
            axis_range(y, [b.objectives[ay.name] for b in usable]),
        )
        self.draw_selection()

    def _draw_baselines(self, x_name: str, y_name: str) -> None:
        usable = [b for b in self.baselines if x_name in b.objectives and y_name in b.objectives]
        key = (x_name, y_name, tuple((b.label, b.objectives[x_name], b.objectives[y_name]) for b in usable))
        if key == self._baseline_key:
            return
        self._baseline_key = key
        for label in self.labels:
            self.plot_item.removeItem(label)
        self.labels = []
        for item, kind in ((self.parents, "parent"), (self.merges, "merge")):
            chosen = [b for b in usable if b.kind == kind]
            item.setData([b.objectives[x_name] for b in chosen], [b.objectives[y_name] for b in chosen])
        xs = [b.objectives[x_name] for b in usable] + list(
            self.history.column(x_name) if self.history else []
        )
        middle = (min(xs) + max(xs)) / 2 if xs else 0.0
        for label, kind, (x, y), members in group_baselines(
            usable, lambda b: (b.objectives[x_name], b.objectives[y_name])
        ):
            # Labels point inwards, so one at the right edge is not cut off.
            anchor = (-0.1, 0.5) if x <= middle else (1.1, 0.5)
            text = pg.TextItem(
                short_label(members, 10), color=PARENT if kind == "parent" else MERGE, anchor=anchor
            )
            text.setPos(x, y)
            text.setToolTip(f"{label}: scored on the run's estimator ({members[0].estimator})")
            keep_rendering(text)
            self.plot_item.addItem(text)
            self.labels.append(text)

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None:
            set_scatter(self.ring, [], [])
            return
        xi, yi = self.axes()
        set_scatter(self.ring, [history.values[row, xi]], [history.values[row, yi]])

    def pick(self, x: float, y: float) -> int | None:
        index = self.cloud.nearest(x, y, self._pixel())
        return None if index is None or self.history is None else int(self.history.numbers[index])


# ---- parallel coordinates -----------------------------------------------------------------


class ParallelPlot(TrialPlot):
    """Every trial a polyline over all objectives, each axis scaled so the better end is
    up; front members in colour, the rest faded, baselines dashed, the selection red.
    Linked: clicking near a line's vertex selects that trial everywhere."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Parallel coordinates", parent, grid=(False, False))
        item = self.plot_item
        item.setMouseEnabled(x=False, y=False)
        item.setLabel("left", "worse → better")
        item.getAxis("left").setToolTip("each axis scaled to its range over the run, better end up")
        item.hideButtons()
        # The faded background of thousands of lines: no antialiasing (2-3x faster to paint).
        self.all_lines = GrowingLines(pg.mkPen(_color("#7f8896", 45), width=1))
        # Width 1: Qt strokes wider pens on long multi-line paths many times slower.
        self.front_lines = pg.PlotCurveItem(
            pen=pg.mkPen(_color(ACCENT, 200), width=1), connect="finite", antialias=False
        )
        self.baseline_lines = pg.PlotCurveItem(
            pen=pg.mkPen(MERGE, width=1.5, style=Qt.PenStyle.DashLine), connect="finite"
        )
        keep_rendering(self.baseline_lines)  # dashes are slow to stroke; baselines rarely change
        self.selected_line = pg.PlotCurveItem(pen=pg.mkPen(SELECTED, width=2.5))
        keep_rendering(self.selected_line)
        for line in (self.all_lines, self.front_lines, self.baseline_lines, self.selected_line):
            item.addItem(line)
        self.legend.setText(
            legend_html(
                [
                    ("━", ACCENT, "on the Pareto front"),
                    ("━", "#b8bcc6", "other trials"),
                    ("┄", MERGE, "baselines"),
                    ("━", SELECTED, "selected"),
                ]
            )
        )
        # The objectives' axes as one item of vertical segments: a vertical InfiniteLine
        # is a rotated item, which Qt will not keep a rendering of (and each paints in Python).
        self.axis_lines = pg.PlotCurveItem(pen=pg.mkPen(_color("#9aa0a8", 160)), connect="pairs")
        keep_rendering(self.axis_lines)
        item.addItem(self.axis_lines)
        self.value_labels: list[pg.TextItem] = []
        self.baseline_labels: list[pg.TextItem] = []
        self.scaled = np.zeros((0, 0))
        self._baseline_key: tuple[Any, ...] = ()
        self.low = np.zeros(0)
        self.high = np.zeros(0)
        self._axis_key: tuple[Any, ...] = ()

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        names = [o.name for o in history.objectives]
        k = len(names)
        if k == 0:
            return
        maximize = [o.maximize for o in history.objectives]
        usable = [b for b in baselines if all(n in b.objectives for n in names)]
        extra = np.array([[b.objectives[n] for n in names] for b in usable]) if usable else None
        self.scaled, self.low, self.high = parallel_scale(history.values, maximize, extra)
        # Each trial once: front members in colour, the others faded below them.
        front = history.front_mask()
        self.all_lines.set_lines(self.scaled, ~front, (history, tuple(self.low), tuple(self.high)))
        count = int(front.sum())
        ys = np.hstack([self.scaled[front], np.full((count, 1), np.nan)]).ravel()
        xs = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), count)
        self.front_lines.setData(xs, ys, connect="finite")
        self._draw_axes(names, history)
        self._draw_baselines(usable, names, extra)
        self.draw_selection()

    def _draw_axes(self, names: list[str], history: TrialHistory) -> None:
        key = (tuple(names), tuple(np.round(self.low, 6)), tuple(np.round(self.high, 6)))
        if key == self._axis_key:
            return
        self._axis_key = key
        k = len(names)
        self.plot_item.getAxis("bottom").setTicks([list(enumerate(names))])
        self.plot_item.setXRange(-0.45, k - 1 + LABEL_ROOM, padding=0)  # room for baseline labels
        self.plot_item.setYRange(-0.12, 1.12, padding=0)
        for label in self.value_labels:
            self.plot_item.removeItem(label)
        self.value_labels = []
        self.axis_lines.setData(np.repeat(np.arange(k, dtype=np.float64), 2), np.tile([-0.12, 1.12], k))
        foreground = pg.getConfigOption("foreground")
        for i in range(k):
            for value, level, anchor in ((self.high[i], 1.0, (0.5, 1.0)), (self.low[i], 0.0, (0.5, 0.0))):
                label = pg.TextItem(f"{value:.3g}", color=foreground, anchor=anchor)
                label.setPos(i, level)
                keep_rendering(label)
                self.plot_item.addItem(label)
                self.value_labels.append(label)

    def _draw_baselines(self, usable: list[Baseline], names: list[str], extra: np.ndarray | None) -> None:
        key = (self._axis_key, tuple((b.label, tuple(b.objectives.values())) for b in usable))
        if key == self._baseline_key:
            return
        self._baseline_key = key
        for label in self.baseline_labels:
            self.plot_item.removeItem(label)
        self.baseline_labels = []
        if extra is None:
            self.baseline_lines.setData([], [])
            return
        scaled = scale_axes(extra, self.low, self.high)
        k = len(names)
        ys = np.hstack([scaled, np.full((len(usable), 1), np.nan)]).ravel()
        xs = np.tile(np.append(np.arange(k, dtype=np.float64), np.nan), len(usable))
        self.baseline_lines.setData(xs, ys, connect="finite")
        ends = {id(b): float(row[-1]) for b, row in zip(usable, scaled, strict=True)}
        for text, kind, (y,), members in group_baselines(usable, lambda b: (ends[id(b)],)):
            label = pg.TextItem(
                short_label(members, 10), color=MERGE if kind == "merge" else PARENT, anchor=(0.0, 0.5)
            )
            label.setToolTip(text)
            label.setPos(k - 1 + 0.04, y)
            keep_rendering(label)
            self.plot_item.addItem(label)
            self.baseline_labels.append(label)

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        if history is None or row is None or row >= self.scaled.shape[0]:
            set_curve(self.selected_line, np.zeros(0), np.zeros(0))
            return
        set_curve(self.selected_line, np.arange(self.scaled.shape[1], dtype=np.float64), self.scaled[row])

    def tooltip_at(self, x: float, y: float) -> str:
        """The trial near the pointer, else the objective whose axis it is on."""
        text = super().tooltip_at(x, y)
        axis = round(x)
        if text or self.history is None or not 0 <= axis < len(self.history.objectives):
            return text
        width, _ = self._pixel()
        return self.history.objectives[axis].label if abs(x - axis) <= PICK_RADIUS_PX * width else ""

    def pick(self, x: float, y: float) -> int | None:
        if self.history is None or self.scaled.size == 0:
            return None
        axis = round(x)
        if not 0 <= axis < self.scaled.shape[1] or abs(x - axis) > 0.25:
            return None
        _, height = self._pixel()
        distance = np.abs(self.scaled[:, axis] - y) / max(height, 1e-12)
        distance = np.where(np.isnan(distance), np.inf, distance)
        best = int(np.argmin(distance))
        return int(self.history.numbers[best]) if distance[best] <= PICK_RADIUS_PX else None


# ---- hypervolume --------------------------------------------------------------------------


class HypervolumePlot(TrialPlot):
    """Hypervolume of the study's front after every evaluation (the engine's reference:
    the spec's, or the worst value seen so far on each axis)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Hypervolume", parent)
        item = self.plot_item
        item.setLabel("bottom", "evaluations")
        item.setLabel("left", "hypervolume")
        # The steps only (a few hundred), crisp: antialiasing would only blur them.
        self.curve = pg.PlotCurveItem(pen=pg.mkPen(ACCENT, width=1), antialias=False)
        item.addItem(self.curve)
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECTED, width=1))
        self.marker.setVisible(False)
        item.addItem(self.marker)
        self.note = QLabel("", self)
        self.note.setObjectName("hint")
        self.header.addWidget(self.note)
        self.legend.setText("of the Pareto front, up to the worst value seen on each objective")
        self.zero_note = pg.TextItem(
            "0 so far: no trial beats the\nreference on every objective", color="#6b7280", anchor=(0, 1.2)
        )
        self.zero_note.setVisible(False)
        keep_rendering(self.zero_note)
        item.addItem(self.zero_note)

    def redraw(self, history: TrialHistory, baselines: list[Baseline]) -> None:
        self.history, self.baselines = history, baselines
        x = history.evaluations.astype(np.float64)
        hv = history.hypervolume
        self.fit_evaluations(len(history))
        self.curve.setData(*step_points(x, hv))
        units = (
            " × ".join(o.unit for o in history.objectives) if len(history.study_directions) > 1 else "score"
        )
        self.plot_item.getAxis("left").setToolTip(f"volume in objective units ({units})")
        self.note.setText(f"{hv[-1]:.4g}" if hv.size else "")
        flat_zero = bool(hv.size) and not np.any(hv > 0)
        self.zero_note.setVisible(flat_zero)
        if flat_zero:
            self.fit(y=(-0.05, 1.05))
            self.zero_note.setPos(float(x[0]), 0.0)
        else:
            self.fit(y=axis_range(hv))
        self.draw_selection()

    def draw_selection(self) -> None:
        history = self.history
        row = None if history is None or self.selected is None else history.row_of(self.selected)
        self.marker.setVisible(row is not None)
        if row is not None:
            self.marker.setValue(row + 1)

    def pick(self, x: float, y: float) -> int | None:
        if self.history is None or not len(self.history):
            return None
        row = round(x) - 1
        return int(self.history.numbers[row]) if 0 <= row < len(self.history) else None


# ---- the genome heatmap -------------------------------------------------------------------


class GenomeHeatmap(QWidget):
    """A trial's genes on the (model/parameter × lane/layer group) grid, coloured by
    value with a colour bar over the genes' bounds, each cell labelled."""

    MAX_LABELLED_CELLS = 96
    COLORMAP = pg.colormap.get("cividis")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.title = QLabel("Genome", self)
        self.title.setObjectName("sectionTitle")
        # Wrapped, so a long title never widens the inspector: that moved the splitter and
        # re-laid out (and repainted) the whole dashboard when the first genome came in.
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot_item: pg.PlotItem = self.plot.getPlotItem()
        self.plot_item.hideButtons()
        self.plot_item.invertY(True)  # first row on top, like a table
        self.plot_item.setLabel("bottom", "lane / layer group")
        for name in ("left", "bottom"):  # named ticks: a '(x0.001)' scale prefix means nothing
            self.plot_item.getAxis(name).enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        keep_rendering(self.image)
        self.plot_item.addItem(self.image)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=self.COLORMAP, interactive=False, width=12, label="value"
        )
        self.colorbar.axis.enableAutoSIPrefix(False)
        self.colorbar.setImageItem(self.image, insert_in=self.plot_item)
        keep_axes_rendering(self.plot_item)
        keep_axes_rendering(self.colorbar)
        self.cell_labels: list[pg.TextItem] = []
        self.values = np.zeros((0, 0))
        self._shown: tuple[Any, ...] = ()
        layout.addWidget(self.plot, 1)

    def show_genome(
        self,
        layout: GenomeLayout,
        genes: np.ndarray,
        bounds: list[tuple[float, float]],
        title: str,
        param: str,
    ) -> None:
        # The page shows the best trial's genome on every redraw while nothing is
        # selected: the same genome again costs nothing (its labels are dozens of items).
        shown = (layout, tuple(np.asarray(genes, dtype=np.float64).tolist()), tuple(bounds), title, param)
        if shown == self._shown:
            return
        self._shown = shown
        self.title.setText(title)
        self.values = layout.grid(list(genes))
        lows = {low for low, _ in bounds}
        highs = {high for _, high in bounds}
        if len(lows) == 1 and len(highs) == 1:
            low, high = lows.pop(), highs.pop()
            label, shown = f"{param} (bounds {low:g} – {high:g})", self.values
        else:  # different bounds per gene: compare positions within the bounds
            low, high, label = 0.0, 1.0, "position within the gene's bounds"
            spans = layout.grid([(v - lo) / (hi - lo) for v, (lo, hi) in zip(genes, bounds, strict=True)])
            shown = spans
        self.colorbar.setLevels(low=low, high=high)
        self.colorbar.getAxis("left").setLabel(label)
        middle = (low + high) / 2
        self.image.setImage(np.where(np.isnan(shown), middle, shown), levels=(low, high))
        rows, columns = self.values.shape
        self.image.setRect(-0.5, -0.5, columns, rows)
        self.plot_item.getAxis("left").setTicks([list(enumerate(layout.rows))])
        self.plot_item.getAxis("bottom").setTicks([list(enumerate(layout.columns))])
        for text in self.cell_labels:
            self.plot_item.removeItem(text)
        self.cell_labels = []
        if rows * columns <= self.MAX_LABELLED_CELLS:
            for (row, column), value in np.ndenumerate(self.values):
                if np.isnan(value):
                    continue
                fraction = (shown[row, column] - low) / (high - low) if high > low else 0.5
                light = self.COLORMAP.mapToQColor(float(np.clip(fraction, 0, 1))).lightness() > 140
                text = pg.TextItem(f"{value:.2f}", color="k" if light else "w", anchor=(0.5, 0.5))
                text.setPos(column, row)
                keep_rendering(text)
                self.plot_item.addItem(text)
                self.cell_labels.append(text)

    def clear_genome(self, text: str) -> None:
        self._shown = ()
        self.title.setText(text)
        self.values = np.zeros((0, 0))
        self.image.clear()
        for label in self.cell_labels:
            self.plot_item.removeItem(label)
        self.cell_labels = []
