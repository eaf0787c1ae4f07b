"""A small live plot of the training loss and the validation IoU, drawn with QPainter."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(90, 170, 255)
IOU_COLOUR = QColor(255, 170, 60)


class TrainingPlot(QWidget):
    """Loss per step (smoothed, left axis) and validation IoU (0 to 1, right axis).

    Drawing costs one path of at most a few hundred points, so repainting after
    every step keeps napari's event loop free.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.losses: list[float] = []
        self.validation: list[tuple[int, float]] = []
        self.total_steps = 1
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("Blue: training loss (smoothed). Orange: validation IoU, 0 to 1.")

    def clear(self, total_steps: int) -> None:
        """Forget the curves; the x axis will span `total_steps`."""
        self.losses, self.validation, self.total_steps = [], [], max(total_steps, 1)
        self.update()

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
        area = QRectF(self.rect()).adjusted(36, 8, -36, -18)
        painter.setPen(QPen(QColor(128, 128, 128), 1))
        painter.drawRect(area)
        painter.drawText(QPointF(area.left(), area.bottom() + 14), "0")
        painter.drawText(QPointF(area.right() - 30, area.bottom() + 14), f"{self.total_steps}")
        painter.drawText(QPointF(area.center().x() - 12, area.bottom() + 14), "steps")

        def x_of(step: float) -> float:
            return area.left() + area.width() * step / self.total_steps

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
            painter.drawText(
                QPointF(area.right() - 80, area.top() + 14), f"IoU {self.validation[-1][1]:.3f}"
            )
        painter.setPen(Qt.NoPen)
        painter.end()
