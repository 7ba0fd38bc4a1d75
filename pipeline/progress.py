"""Progress bars for every stage: tqdm, quieter when the output is a log.

On a terminal a bar behaves as tqdm's does.  When its stream (stderr unless ``file=``
says otherwise) is not a TTY (``2>log``, a DVC stage, a batch job), each bar redraws at
most every :data:`LOG_INTERVAL` seconds and keeps its final state as a line of the log
(``leave=True``), so a log holds a bar's start, a line every half minute and its end
instead of one redraw per update (issue 20 item 9: the full default DAG wrote a 2.96 MB
log).
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


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; on a non-TTY stream, at most one redraw every
    :data:`LOG_INTERVAL` s (``mininterval``/``maxinterval``) and the final state kept."""
    if not is_tty(kwargs.get("file") or sys.stderr):
        kwargs.update(mininterval=max(kwargs.get("mininterval", 0.0), LOG_INTERVAL),
                      maxinterval=max(kwargs.get("maxinterval", 0.0), LOG_INTERVAL),
                      leave=True, dynamic_ncols=False)
    return tqdm(iterable, **kwargs)
