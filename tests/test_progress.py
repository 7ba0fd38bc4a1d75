"""pipeline.progress: in a log (not a TTY) a bar draws after LOG_INTERVAL s, then at most
every LOG_INTERVAL s, and keeps its final state; on a terminal it is tqdm's bar."""

from __future__ import annotations

import io

from pipeline import progress as progress_mod
from pipeline.progress import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, n: int = 2000, **kw) -> str:
    bar = progress(total=n, desc="work", file=stream, mininterval=0, miniters=1, **kw)
    for i in range(n):
        bar.update(1)
        bar.set_postfix(loss=i)          # tqdm redraws on a postfix (train's loss per step)
        bar.set_postfix_str(f"v{i}")
    bar.close()
    return stream.getvalue()


def test_log_gets_the_start_and_the_final_state_only():
    log = _run(io.StringIO(), leave=False)
    frames = [f for f in log.replace("\n", "\r").split("\r") if f.strip()]
    assert len(frames) == 1, frames           # the final state only (a bar under 30 s)
    assert "2000/2000" in frames[-1] and log.endswith("\n")   # kept although leave=False
    assert "v1999" in frames[-1]                               # with the last postfix


def test_terminal_bar_is_tqdms(monkeypatch):
    tty = _run(_Tty(), leave=True)
    assert tty.count("\r") > 100              # every update redrawn (mininterval 0)
    monkeypatch.setattr(progress_mod, "LOG_INTERVAL", 0.0)
    assert _run(io.StringIO()).count("\r") > 100   # the interval is what quiets a log


def test_default_stream_is_stderr(capsys):
    bar = progress(range(3), desc="x")
    assert bar.mininterval == progress_mod.LOG_INTERVAL   # pytest's stderr is no TTY
    list(bar)
    assert "3/3" in capsys.readouterr().err
