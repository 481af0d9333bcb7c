"""What a run shows while it works, on standard error.

On a terminal: progress bars (estimates drawn, training steps, reference draws) and, under
them, the latest status line of each kind (the last epoch's curves, the last gradient
measurement), replaced as training goes on, so a 50-epoch run does not scroll 50 lines away.
Elsewhere (a pipe, a log file, CI): no bars, and each status line printed once, as a plain line.

The measuring code and training tasks see only ``add_task`` / ``advance`` / ``remove_task``
(the subset of :class:`rich.progress.Progress` they use) and ``status``; the training
session (:class:`gradbench.training.TrainingSession`) writes the status lines, so a task
reports progress by logging its curves and measuring, and prints nothing itself.
"""

from __future__ import annotations

from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text


class _Bars(Progress):
    """rich's Progress with status lines under its bars."""

    def __init__(self, *columns, **kwargs):
        self.lines: dict[str, str] = {}  # before Progress.__init__, which renders once
        super().__init__(*columns, **kwargs)

    def get_renderable(self):
        shown = [Text(line, overflow="fold", no_wrap=False) for line in self.lines.values()]
        return Group(*self.get_renderables(), *shown)


class RunProgress:
    """Bars and status lines on ``console`` (a rich Console on stderr); plain lines when it is not a terminal."""

    def __init__(self, console):
        self.console = console
        self.live = bool(console is not None and console.is_terminal)
        self._bars = _Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           console=console, transient=True) if self.live else None

    def __enter__(self) -> RunProgress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add_task(self, description: str, total: int):
        return self._bars.add_task(description, total=total) if self._bars is not None else None

    def advance(self, task_id, k: int = 1) -> None:
        if self._bars is not None:
            self._bars.advance(task_id, k)

    def remove_task(self, task_id) -> None:
        if self._bars is not None:
            self._bars.remove_task(task_id)

    def status(self, message: str, kind: str = "") -> None:
        """The latest line of its ``kind`` under the bars (terminal), or the line printed (elsewhere)."""
        if self._bars is not None:
            self._bars.lines[kind] = message
            self._bars.refresh()
        elif self.console is not None:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)
