"""Progress bars for every stage: tqdm, quieter when the output is a log.

On a terminal a bar behaves as tqdm's does.  When its stream (stderr unless ``file=``
says otherwise) is not a TTY (``2>log``, a DVC stage, a batch job), each bar first draws
after :data:`LOG_INTERVAL` seconds, then at most every :data:`LOG_INTERVAL` seconds, and
keeps its final state as a line of the log (``leave=True``), so a log holds a line every
half minute of a long bar and the final state of every bar, instead of one redraw per
update (issue 20 item 9: the full default DAG wrote a 2.96 MB log).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0   # seconds between redraws of a bar whose stream is not a TTY


def is_tty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


class _LogBar(tqdm):
    """A bar for a log: a new postfix or description waits for the next timed redraw
    (tqdm redraws at once on ``set_postfix``, e.g. train's loss at every step)."""

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)

    def close(self) -> None:
        self.delay = 0      # a bar shorter than its delay still writes its final state
        super().close()


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; on a non-TTY stream, at most one redraw every
    :data:`LOG_INTERVAL` s (``mininterval``/``maxinterval``; postfix and description
    changes wait for it) and the final state kept."""
    if is_tty(kwargs.get("file") or sys.stderr):
        return tqdm(iterable, **kwargs)
    kwargs.update(mininterval=max(kwargs.get("mininterval", 0.0), LOG_INTERVAL),
                  maxinterval=max(kwargs.get("maxinterval", 0.0), LOG_INTERVAL),
                  delay=LOG_INTERVAL, leave=True, dynamic_ncols=False)
    return _LogBar(iterable, **kwargs)
