"""Extract presets: the papers' feature settings in one word (``extract.preset``).

A preset sets the backbone, its clip (frames, stride, rate), the test scales, the short
side and names the input normalisation that goes with the backbone's weights:

===================  ==============  =========================  =====  ======  =====================
preset               backbone        clip (frames x stride)     fps    short   normalisation (RGB in
                                                                       side    [0, 1]: mean / std)
===================  ==============  =========================  =====  ======  =====================
``acar-net-r50``     slowfast_r50    32 x 2 (a 64-frame span)   30     256     0.45 / 0.225
``acar-net-r101``    slowfast_r101   32 x 2 (a 64-frame span)   30     256     (110.64, 103.16,
                                                                               96.29) / (38.76,
                                                                               37.88, 40.03), / 255
``i3d-kinetics400``  i3d             64 x 1                     video  256     0.5 / 0.5 ([-1, 1])
``hoghof-toy``       hoghof          8 x 2                      video  160     0.5 / 0.5 ([-1, 1])
===================  ==============  =========================  =====  ======  =====================

Sources.  ``acar-net-*``: ACAR-Net's AVA configs (``configs/AVA/SLOWFAST_R50_ACAR_HR2O.yaml``
and ``SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml``, train and eval alike): frames extracted at
30 fps, the short side scaled to 256, a temporal centre crop of 64 frames taken every 2nd
(32 frames in, the slow pathway every 4th of them), one test scale and no flip; the R-50
(Kinetics-400 weights) normalises with mean 0.45 / std 0.225, the R-101 (Kinetics-700
weights) with the per-channel values above on 0-255 pixels.  ``i3d-kinetics400``: the
clip I3D was trained on (64 consecutive frames, RGB in [-1, 1]) and the short side of its
test preprocessing (256), at the video's own rate, as ``acar classify`` uses it.
``hoghof-toy``: the toy world's settings of ``stages.yaml`` (8 frames every 2nd of the
8-fps video: a 2-s window, 160 px).

The canvas.  No preset sets ``pad_multiple``: extract's default runs i3d and SlowFast on
the resized frame itself, unpadded, as the official ACAR-Net and PySlowFast code does (their
maps have ceil(side / stride) cells whatever the size:
:data:`pipeline.backbones.UNPADDED`); the other backbones
get each side padded (right and bottom, zeros after normalising) up to a multiple of the
output stride, less than one cell.  A 16:9 frame at short side 256 is 456 x 256:
``acar-net-*`` (stride 16) store a 16 x 29 map and ``i3d-kinetics400`` (stride 32) an 8 x 15
one, on the unpadded frame; ``hoghof-toy``'s 160 x 160 toy frames need no padding (stride
20, an 8 x 8 map).  Before features.LAYOUT 3 the canvas was a square (480 x 480 for that
frame); ``bench/canvas.py`` measures what each canvas changes.

The normalisation is a property of the backbone's weights (its :data:`BACKBONES` entry,
which ``extract`` applies); a preset names the one it expects and resolving it checks that
the registered backbone has it, so a preset never runs with another normalisation than
the one its paper used.  The store records the preset's name and that normalisation in
its spec (``extra``), beside the clip, short side and views it already records.

Precedence (lowest first): the dataclass defaults < the preset < the params file's own
``extract:`` keys < the flags.  A preset named by ``--preset`` sits with the flags: above
the file's keys, below the other flags.  So ``extract: {preset: acar-net-r50, short_side:
320}`` is the R-50 setting at 320 px, and ``acar extract --preset i3d-kinetics400
--clip-frames 32`` is I3D with 32-frame clips whatever the file says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..artifacts import ArtifactError

Norm = tuple[tuple[float, float, float], tuple[float, float, float]]

_SIGNED: Norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_SLOWFAST_K400: Norm = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
_ACAR_R101: Norm = (tuple(v / 255 for v in (110.63666788, 103.16065604, 96.29023126)),
                    tuple(v / 255 for v in (38.7568578, 37.88248729, 40.02898126)))


@dataclass(frozen=True)
class Preset:
    backbone: str
    clip_frames: int
    clip_stride: int
    clip_fps: float | None            # None: the stride counts the video's own frames
    short_side: int
    scales: tuple[int, ...]           # extra test-time scales
    norm: Norm                        # (mean, std) of RGB in [0, 1]: the backbone's own

    def values(self) -> dict[str, Any]:
        """The ExtractConfig fields it sets (the normalisation is the backbone's)."""
        return {"backbone": self.backbone, "clip_frames": self.clip_frames,
                "clip_stride": self.clip_stride, "clip_fps": self.clip_fps,
                "short_side": self.short_side, "scales": list(self.scales)}


PRESETS: dict[str, Preset] = {
    "acar-net-r50": Preset("slowfast_r50", 32, 2, 30.0, 256, (), _SLOWFAST_K400),
    "acar-net-r101": Preset("slowfast_r101", 32, 2, 30.0, 256, (), _ACAR_R101),
    "i3d-kinetics400": Preset("i3d", 64, 1, None, 256, (), _SIGNED),
    "hoghof-toy": Preset("hoghof", 8, 2, None, 160, (), _SIGNED),
}


def get_preset(name: str, where: object = "extract.preset") -> Preset:
    """The preset ``name``, else a one-line ``ArtifactError`` at ``where``."""
    if name not in PRESETS:
        raise ArtifactError(where, f"unknown extract.preset {name!r}; known: "
                                   f"{', '.join(PRESETS)}")
    return PRESETS[name]


def check_backbone(name: str, where: object = "extract.preset") -> None:
    """The preset's backbone is registered and normalises as the preset says, else a
    one-line ``ArtifactError`` naming the preset and the backbone."""
    from . import BACKBONES

    preset = get_preset(name, where)
    bb = BACKBONES.get(preset.backbone)
    if bb is None:
        raise ArtifactError(where, f"preset {name!r} needs backbone {preset.backbone!r}, "
                                   f"which is not registered; known: {', '.join(BACKBONES)}")
    have = (tuple(bb.mean), tuple(bb.std))
    if not all(math.isclose(a, b, rel_tol=1e-6) for x, y in zip(have, preset.norm, strict=True)
               for a, b in zip(x, y, strict=True)):
        raise ArtifactError(where, f"preset {name!r} expects {preset.backbone} normalised "
                                   f"with mean/std {_fmt(preset.norm)}, but the registered "
                                   f"backbone uses {_fmt(have)}")


def _fmt(norm: Norm) -> str:
    return " / ".join("(" + ", ".join(f"{v:.4g}" for v in part) + ")" for part in norm)


def expand(file_values: dict[str, Any], flags: dict[str, Any],
           where: object = "stages.yaml", flag: Callable[[str], str] | None = None
           ) -> dict[str, Any]:
    """The values of an ``extract`` config: defaults < file preset < file keys < flag
    preset < other flags (``flags``: only those given).  ``where``: the params file (named
    in an error about its preset); ``flag``: field -> the flag's name."""
    values: dict[str, Any] = {}
    named = []
    for layer, name_of in ((file_values, where), (flags, (flag or _flag)("preset"))):
        name = layer.get("preset")
        if name is not None:
            values.update(get_preset(name, name_of).values())
            named.append((name, name_of))
        values.update(layer)
    for name, name_of in named:          # the preset whose backbone is the one that runs
        if values.get("backbone") == PRESETS[name].backbone:
            check_backbone(name, name_of)
    return values


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def preset_fields() -> list[str]:
    """The ExtractConfig fields a preset sets."""
    return list(next(iter(PRESETS.values())).values())
