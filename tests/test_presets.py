"""extract.preset: the papers' settings in one word (pipeline/backbones/presets.py).

Precedence: dataclass defaults < preset < the params file's keys < flags; a preset given
as ``--preset`` sits with the flags (above the file's keys, below the other flags).
"""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import extract
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.features import FeatureStore
from pipeline.backbones import BACKBONES, presets
from pipeline.config import RULES, load_config
from tests.test_cli import run_acar

FIELDS = ("backbone", "clip_frames", "clip_stride", "clip_fps", "short_side", "scales")


def load(tmp_path, text: str | None = None, **flags) -> extract.ExtractConfig:
    params = tmp_path / "stages.yaml"
    params.write_text(text or "")
    return load_config(extract.ExtractConfig, "extract", params, flags)


@pytest.fixture
def registered(monkeypatch):
    """Every preset's backbone registered (SlowFast may not be in this checkout): a stand-in
    entry with the preset's normalisation where the real one is missing."""
    for p in presets.PRESETS.values():
        if p.backbone not in BACKBONES:
            stub = dataclasses.replace(BACKBONES["i3d"], norm=p.norm)
            monkeypatch.setitem(BACKBONES, p.backbone, stub)


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_each_preset_resolves_to_its_values(tmp_path, registered, name):
    p = presets.PRESETS[name]
    cfg = load(tmp_path, f"extract: {{preset: {name}}}\n")
    assert cfg.preset == name
    assert [getattr(cfg, f) for f in FIELDS] == [p.backbone, p.clip_frames, p.clip_stride,
                                                 p.clip_fps, p.short_side, list(p.scales)]


def test_the_registered_backbones_normalise_as_their_presets_say():
    checked = 0
    for name, p in presets.PRESETS.items():
        if p.backbone in BACKBONES:
            presets.check_backbone(name)             # raises on a mismatch
            checked += 1
    assert checked >= 2                              # i3d and hoghof at least


def test_the_toy_preset_is_the_toy_world_of_stages_yaml():
    import yaml

    from tests.conftest import ROOT

    toy = yaml.safe_load((ROOT / "stages.yaml").read_text())["extract"]
    p = presets.PRESETS["hoghof-toy"].values()
    assert {k: toy.get(k, []) for k in FIELDS} == p


def test_the_params_files_keys_override_the_preset(tmp_path):
    cfg = load(tmp_path, "extract: {preset: i3d-kinetics400, short_side: 192}\n")
    assert (cfg.backbone, cfg.clip_frames, cfg.short_side) == ("i3d", 64, 192)


def test_a_flag_overrides_the_preset(tmp_path):
    cfg = load(tmp_path, "extract: {preset: i3d-kinetics400}\n", clip_frames=16, scales=[320])
    assert (cfg.backbone, cfg.clip_frames, cfg.scales, cfg.short_side) == ("i3d", 16, [320], 256)


def test_a_preset_flag_overrides_the_files_keys_and_other_flags_override_it(tmp_path):
    text = "extract: {backbone: hoghof, clip_frames: 8, short_side: 160, batch_size: 3}\n"
    cfg = load(tmp_path, text, preset="i3d-kinetics400", short_side=128)
    assert (cfg.backbone, cfg.clip_frames, cfg.short_side) == ("i3d", 64, 128)
    assert cfg.batch_size == 3                       # a key the preset does not set stays
    cfg = load(tmp_path, "extract: {preset: hoghof-toy}\n", preset="i3d-kinetics400")
    assert (cfg.preset, cfg.backbone) == ("i3d-kinetics400", "i3d")


def test_no_preset_leaves_the_defaults(tmp_path):
    assert load(tmp_path) == extract.ExtractConfig()


def test_an_unknown_preset_is_a_one_line_error(tmp_path):
    with pytest.raises(ArtifactError) as err:
        load(tmp_path, "extract: {preset: acar-net-r18}\n")
    msg = str(err.value)
    assert "stages.yaml" in msg and "extract.preset" in msg and "acar-net-r50" in msg
    assert "\n" not in msg
    with pytest.raises(ArtifactError, match="^--preset: .*acar-net-r18"):
        load(tmp_path, None, preset="acar-net-r18")


def test_an_unknown_preset_flag_is_a_one_line_cli_error(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "d.parquet").write_bytes(b"")
    res = run_acar("extract", "--videos", tmp_path / "v", "--detections", tmp_path / "d.parquet",
                   "--out", tmp_path / "f", "--preset", "nope", cwd=tmp_path)
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "--preset" in lines[0] and "nope" in lines[0], lines


def test_a_preset_without_its_backbone_names_both(tmp_path, monkeypatch):
    monkeypatch.delitem(BACKBONES, "i3d")
    with pytest.raises(ArtifactError) as err:
        load(tmp_path, "extract: {preset: i3d-kinetics400}\n")
    msg = str(err.value)
    assert "'i3d-kinetics400'" in msg and "'i3d'" in msg and "not registered" in msg
    assert "\n" not in msg
    # the same preset with another backbone chosen does not need it
    cfg = load(tmp_path, "extract: {preset: i3d-kinetics400, backbone: hoghof}\n")
    assert (cfg.backbone, cfg.clip_frames) == ("hoghof", 64)


def test_a_backbone_with_another_normalisation_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKBONES, "i3d", dataclasses.replace(
        BACKBONES["i3d"], norm=((0.45,) * 3, (0.225,) * 3)))
    with pytest.raises(ArtifactError, match="i3d-kinetics400.*normalised.*0.5.*0.45"):
        load(tmp_path, "extract: {preset: i3d-kinetics400}\n")


def test_the_params_rule_lists_every_preset():
    assert RULES["extract"]["preset"].choices == tuple(presets.PRESETS)


def test_the_store_records_the_resolved_values(wide_clip, tmp_path):
    videos, dets = wide_clip
    params = tmp_path / "stages.yaml"
    params.write_text("extract: {preset: hoghof-toy, short_side: 72, num_workers: 0}\n")
    cfg = load_config(extract.ExtractConfig, "extract", params, {"scales": [80]})
    url = str(tmp_path / "f.zarr")
    assert extract.run(cfg, videos, dets, url) == []
    spec = FeatureStore(url).spec("wide")
    p = presets.PRESETS["hoghof-toy"]
    assert (spec.backbone, spec.clip_frames, spec.clip_stride) == ("hoghof", 8, 2)
    assert spec.short_side == 72 and spec.views == ("s72", "s80")
    assert spec.extra["clip_fps"] is None and spec.extra["preset"] == "hoghof-toy"
    assert spec.extra["norm"] == [list(p.norm[0]), list(p.norm[1])]
    # without a preset the spec has neither key (stores made before are unchanged)
    cfg = extract.ExtractConfig(**{**cfg.__dict__, "preset": None})
    assert "preset" not in extract.make_spec(cfg, "non-learned")[0].extra
