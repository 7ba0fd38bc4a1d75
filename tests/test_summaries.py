"""End summaries (issue 20 items 9, 10): detect and extract print one line when they finish,
extract also when every video was reused."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import zarr

from pipeline import detect, extract
from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.features import FeatureStore


def test_detect_and_extract_print_a_summary_also_when_all_is_reused(synth_world, tmp_path,
                                                                     capsys):
    dets = tmp_path / "det.parquet"
    gt = [synth_world / "train.csv", synth_world / "val.csv"]
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", dets, gt)
    ann = pd.concat([read_annotations(p) for p in gt])
    boxes = ann[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    n_videos, n_kf = ann["video_id"].nunique(), len(ann[["video_id", "timestamp"]]
                                                    .drop_duplicates())
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"detect (gt): {n_videos} videos, {n_kf} keyframes, {len(boxes)} boxes, 0 failed "
        f"({dets})")
    cfg = extract.ExtractConfig(backbone="mc3_18", random_init=True, clip_frames=4,
                                clip_stride=2, clip_fps=8, short_side=16, batch_size=2,
                                num_workers=0)
    url = str(tmp_path / "f.zarr")
    pattern = (rf"extract: {n_videos} videos \((\d+) reused\), {n_kf} keyframes, "
               rf"([\d.]+) MB, 0 failed \({re.escape(url)}\)")
    for reused in (0, n_videos):
        assert extract.run(cfg, synth_world / "videos", dets, url) == []
        m = re.fullmatch(pattern, capsys.readouterr().out.splitlines()[-1])
        assert m and int(m.group(1)) == reused
    store = FeatureStore(url)
    stored = sum(int(a.nbytes_stored()) for v in store.videos()
                 for _, a in store.group(v).members(max_depth=None) if isinstance(a, zarr.Array))
    assert float(m.group(2)) == round(stored / 1e6, 1) and stored > 0


def test_detect_bar_names_the_video_being_detected(synth_world, monkeypatch):
    """Each redraw of the frames bar names the video of the frames just detected (it
    named the previous video when the name was set after the update)."""
    from pipeline import progress as progress_mod

    shown: list[tuple[str, str]] = []        # (video of the chunk, name on the bar)
    current = {"video": ""}

    class Bar(progress_mod.tqdm):
        def update(self, n=1):
            if self.desc == "frames":
                shown.append((current["video"], self.postfix or ""))
            return super().update(n)

    monkeypatch.setattr(detect, "progress", lambda *a, **kw: Bar(*a, **kw))

    class Fake:
        meta: dict = {}

        def __call__(self, frames):
            return [np.zeros((0, 5), np.float32) for _ in frames]

    real = detect._KeyframeSource._chunks

    def chunks(self, video_id, path, stamps):
        for c in real(self, video_id, path, stamps):
            current["video"] = video_id
            yield c

    monkeypatch.setattr(detect._KeyframeSource, "_chunks", chunks)
    cfg = detect.DetectConfig(source="yolo", batch_size=2, num_workers=0)
    _, failures, _ = detect.detect_videos(cfg, synth_world / "videos", detector=Fake())
    assert failures == []
    assert len({v for v, _ in shown}) == 3 and all(v == name for v, name in shown), shown
