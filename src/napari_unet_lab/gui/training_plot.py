"""A small live plot of the training loss, the validation IoU and the step kept, with QPainter."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(90, 170, 255)
IOU_COLOUR = QColor(255, 170, 60)
KEPT_COLOUR = QColor(80, 210, 110)
AXIS_COLOUR = QColor(128, 128, 128)
STEPS_TITLE = "training step"


class TrainingPlot(QWidget):
    """Loss per step (smoothed, left axis) and validation IoU (0 to 1, right axis).

    Validation at step 0 is the network before training. After training, a
    line marks the step whose weights the network keeps (early stopping keeps
    the best validated one). Drawing costs one path of at most a few hundred
    points, so repainting after every step keeps napari's event loop free.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.losses: list[float] = []
        self.validation: list[tuple[int, float]] = []
        self.total_steps = 1
        self.kept_step: int | None = None
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip(
            "Blue: training loss (smoothed). Orange: validation IoU, 0 to 1 (at step 0: before "
            "training). Green: the step whose weights the network keeps."
        )

    def clear(self, total_steps: int) -> None:
        """Forget the curves; the x axis will span `total_steps`."""
        self.losses, self.validation, self.total_steps = [], [], max(total_steps, 1)
        self.kept_step = None
        self.update()

    def mark_kept(self, step: int | None) -> None:
        """Mark the step whose weights the network keeps; None: no mark."""
        self.kept_step = step
        self.update()

    def legend(self) -> list[tuple[str, QColor]]:
        """Return what the plot shows, in words and colours, as its legend draws it."""
        iou = (
            f"validation IoU {self.validation[-1][1]:.3f}" if self.validation else "validation IoU"
        )
        entries = [("loss (smoothed)", LOSS_COLOUR), (iou, IOU_COLOUR)]
        if self.kept_step is not None:
            entries.append((f"kept: step {self.kept_step}", KEPT_COLOUR))
        return entries

    def plot_area(self) -> QRectF:
        """Return the rectangle the curves are drawn in: room for legend and axes around it."""
        return QRectF(self.rect()).adjusted(36, 22, -36, -30)

    def x_of(self, step: float) -> float:
        """Return the horizontal pixel of `step` in the plot area."""
        area = self.plot_area()
        return area.left() + area.width() * step / self.total_steps

    def add(self, step: int, loss: float, validation_iou: float | None = None) -> None:
        """Add one step's loss and, if measured, the validation IoU."""
        if math.isfinite(loss):
            # exponential smoothing: single batches are noisy
            last = self.losses[-1] if self.losses else loss
            self.losses.append(0.9 * last + 0.1 * loss if self.losses else loss)
        if validation_iou is not None:
            self.validation.append((step, validation_iou))
        self.update()

    def _points(self) -> list[tuple[int, float]]:
        # at most ~300 points: every n-th step
        stride = max(1, len(self.losses) // 300)
        last = len(self.losses) - 1
        return [(i + 1, v) for i, v in enumerate(self.losses) if i % stride == 0 or i == last]

    def paintEvent(self, _event) -> None:  # noqa: D102, N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        area = self.plot_area()
        self._draw_axes(painter, area)
        x_of = self.x_of
        if self.losses:
            top = max(self.losses) or 1.0
            painter.setPen(QPen(LOSS_COLOUR, 1))
            painter.drawText(QPointF(2, area.top() + 10), f"{top:.2g}")
            painter.drawText(QPointF(2, area.bottom()), "0")
            path = QPainterPath()
            for index, (step, value) in enumerate(self._points()):
                point = QPointF(x_of(step), area.bottom() - area.height() * value / top)
                path.moveTo(point) if index == 0 else path.lineTo(point)
            painter.setPen(QPen(LOSS_COLOUR, 2))
            painter.drawPath(path)
        if self.validation:
            painter.setPen(QPen(IOU_COLOUR, 1))
            painter.drawText(QPointF(area.right() + 4, area.top() + 10), "1")
            painter.drawText(QPointF(area.right() + 4, area.bottom()), "0")
            painter.setPen(QPen(IOU_COLOUR, 2))
            painter.setBrush(IOU_COLOUR)
            previous = None
            for step, iou in self.validation:
                point = QPointF(x_of(step), area.bottom() - area.height() * iou)
                if previous is not None:
                    painter.drawLine(previous, point)
                painter.drawEllipse(point, 3, 3)
                previous = point
        if self.kept_step is not None:
            x = x_of(self.kept_step)
            painter.setPen(QPen(KEPT_COLOUR, 2, Qt.DashLine))
            painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        self._draw_legend(painter, area)
        painter.setPen(Qt.NoPen)
        painter.end()

    def _draw_axes(self, painter: QPainter, area: QRectF) -> None:
        painter.setPen(QPen(AXIS_COLOUR, 1))
        painter.drawRect(area)
        below = area.bottom() + 13
        painter.drawText(QPointF(area.left(), below), "0")
        painter.drawText(QPointF(area.right() - 30, below), f"{self.total_steps}")
        painter.drawText(QPointF(area.center().x() - 36, below + 13), STEPS_TITLE)
        painter.setPen(QPen(LOSS_COLOUR, 1))
        painter.drawText(QPointF(2, area.center().y() + 4), "loss")
        painter.setPen(QPen(IOU_COLOUR, 1))
        painter.drawText(QPointF(area.right() + 4, area.center().y() + 4), "IoU")

    def _draw_legend(self, painter: QPainter, area: QRectF) -> None:
        x = area.left()
        for text, colour in self.legend():
            painter.setPen(QPen(colour, 3))
            painter.drawLine(QPointF(x, 9), QPointF(x + 14, 9))
            painter.drawText(QPointF(x + 18, 13), text)
            x += 26 + painter.fontMetrics().horizontalAdvance(text)
