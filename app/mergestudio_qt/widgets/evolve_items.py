"""What the Evolve page's plots are drawn with: colours, the graphics items and small
helpers shared by every plot. Each plot is one reused pyqtgraph item per series, updated with
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
from mergestudio.search.dashboard import ObjectiveAxis, nice_step
from pyqtgraph import functions as fn
from PySide6.QtCore import QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPen, QPixmap, QPolygonF, QTransform
from PySide6.QtWidgets import QGraphicsItem, QWidget

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


def with_alpha(name: str, alpha: int = 255) -> QColor:
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


def polygon_of(x: np.ndarray, y: np.ndarray) -> QPolygonF:
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


def label_fill() -> QColor:
    """A label's backdrop: the plot's background, nearly opaque, so a label drawn over
    trial points stays readable (the points show faintly through)."""
    return with_alpha(str(pg.mkColor(pg.getConfigOption("background")).name()), 215)


def short_label(members: Sequence[Baseline], limit: int = 14) -> str:
    """``task_arithmetic +2`` for three baselines on one spot, elided to ``limit``."""
    first = members[0].label
    first = first if len(first) <= limit else first[: limit - 1] + "…"
    return first + (f" +{len(members) - 1}" if len(members) > 1 else "")


def set_label(item: pg.PlotItem, axis: str, text: str) -> None:
    """Set an axis label only when it changes (each set re-lays out the plot)."""
    if item.getAxis(axis).labelText != text:
        item.setLabel(axis, text)


def set_objective_label(item: pg.PlotItem, axis: str, objective: ObjectiveAxis) -> None:
    """The objective's full label ("cipher: exact-match accuracy ↑") when it fits along
    the axis, else its name and arrow ("cipher ↑"); the full label is the axis's tooltip.
    A plot a quarter of a 1024-px window high cut the full label ("…accurac")."""
    box = item.getViewBox()
    room = float(box.height() if axis in ("left", "right") else box.width())
    metrics = QFontMetrics(item.getAxis(axis).label.font())
    full = objective.label
    short = f"{objective.name} {full.rsplit(' ', 1)[-1]}"
    set_label(item, axis, full if room <= 0 or metrics.horizontalAdvance(full) <= room else short)
    item.getAxis(axis).setToolTip(full)


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
                polygon_of(
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


def ring(color: str, size: float, width: float = 2.0) -> pg.ScatterPlotItem:
    """A small scatter for highlights: open circles drawn over the cloud."""
    return pg.ScatterPlotItem(
        size=size, pen=pg.mkPen(color, width=width), brush=None, symbol="o", pxMode=True, hoverable=False
    )


