"""End summaries (issue 20 items 9, 10): detect and extract print one line when they finish,
extract also when every video was reused."""

from __future__ import annotations

import re

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
