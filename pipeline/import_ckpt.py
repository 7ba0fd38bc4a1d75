"""``acar import``: an ACAR-Net model-zoo checkpoint -> an acar head checkpoint.

An ACAR-Net checkpoint (``AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar`` ...) holds the whole
network as one state dict (``module.backbone.module.*``, ``module.head.module.*``; bare or
under ``"state_dict"``, as its ``main.py`` saves it).  Its backbone part is read by
``acar extract --backbone slowfast_r50 --weights CKPT`` (:mod:`pipeline.backbones.slowfast`);
this module turns its head into an acar head (:mod:`pipeline.models.acar` or ``linear``)
and writes a checkpoint (:mod:`pipeline.artifacts.checkpoint`) whose ``feature_spec`` is
what that extract run records, so ``acar eval --model OUT/head.pt`` accepts exactly those
features.

The mapping (ACAR-Net ``models/heads/acar.py`` -> acar ``ACARHead``)::

    conv_reduce (D, C, 1, 1)          -> reduce
    conv1 (d, 2D, 1, 1) over [context; actor]
                                      -> conv1_context = conv1[:, :D], conv1_actor = conv1[:, D:]
    conv2 (d, d, 3, 3)                -> conv2
    hr2o.i.conv_q / conv_k / conv_v   -> hr2o.blocks.i.message.q / k / v
    hr2o.i.norm (GroupNorm(1, d))     -> hr2o.blocks.i.norm
    hr2o.i.conv (3x3, or 1x1: mlp_1x1) -> hr2o.blocks.i.conv (``mlp_1x1`` from its shape)
    fc1 (d, D), fc2 (K, 2d) [+ bias]  -> fc1, fc2 (``bias`` from the file)

and ``linear.py``'s ``fc`` (K, C) [+ bias] -> ``fc`` (a zero bias when it has none).  Read
from the shapes: C, D, d, depth, kernel_size, mlp_1x1, bias, K.  Not in the file, so set
to ACAR-Net's (every config of its model zoo): ``downsample`` max2x2, RoIAlign 7x7 with
torchvision's ``aligned=False`` (``roi_aligned`` false), dropout at evaluation none.
The outputs: ACAR-Net's 60 logits are in the order of its label map
(``ava_action_list_v2.2_for_activitynet_2019.pbtxt``), a softmax over the first 13 (the
pose classes) and a sigmoid for the rest: the label map given must have 60 classes with
the 13 pose classes first, which acar's scoring then treats the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .artifacts import ArtifactError
from .artifacts.atomic import atomic_path
from .artifacts.checkpoint import save_checkpoint
from .artifacts.features import CANVAS, FeatureSpec
from .artifacts.labelmap import read_labelmap
from .backbones import default_pad_multiple, get_backbone, slowfast
from .backbones.weights import read_tensors
from .models import build_head, head_config

BACKBONE_OF = {50: "slowfast_r50", 101: "slowfast_r101"}


def read_model_zoo(path: Path) -> dict[str, torch.Tensor]:
    """The file's state dict, ``module.`` dropped (``backbone.module.*``, ``head.*``...)."""
    state = read_tensors(path, noun="checkpoint", wrappers=("state_dict",), tensors_only=False)
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in state.items()}


def _take(state: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in state:
        raise ArtifactError(path, f"the head lacks {key}")
    return state.pop(key)


def convert_head(head: dict[str, torch.Tensor], path: Path
                 ) -> tuple[str, dict, int, int, dict[str, torch.Tensor]]:
    """ACAR-Net head tensors (``head.`` dropped) -> ``(acar head name, hparams,
    in_channels, num_classes, state_dict)``; a tensor left over is an error."""
    todo = dict(head)
    out: dict[str, torch.Tensor] = {}
    if "conv_reduce.weight" in todo:
        reduce = _take(todo, "conv_reduce.weight", path)                 # (D, C, 1, 1)
        d_red, width = int(reduce.shape[0]), int(reduce.shape[1])
        conv1 = _take(todo, "conv1.weight", path)                         # (d, 2D, 1, 1)
        hidden = int(conv1.shape[0])
        out["reduce.weight"] = reduce
        out["conv1_context.weight"] = conv1[:, :d_red].clone()
        out["conv1_actor.weight"] = conv1[:, d_red:, 0, 0].clone()
        out["conv2.weight"] = _take(todo, "conv2.weight", path)
        depth = 0
        while f"hr2o.{depth}.conv_q.weight" in todo:
            i = depth
            for src, dst in (("conv_q", "message.q"), ("conv_k", "message.k"),
                             ("conv_v", "message.v"), ("conv", "conv")):
                out[f"hr2o.blocks.{i}.{dst}.weight"] = _take(todo, f"hr2o.{i}.{src}.weight", path)
            for leaf in ("weight", "bias"):
                out[f"hr2o.blocks.{i}.norm.{leaf}"] = _take(todo, f"hr2o.{i}.norm.{leaf}", path)
            depth += 1
        if depth == 0:
            raise ArtifactError(path, "the head lacks hr2o.0.conv_q.weight")
        kernel = int(out["hr2o.blocks.0.message.q.weight"].shape[-1])
        mlp_1x1 = int(out["hr2o.blocks.0.conv.weight"].shape[-1]) == 1 and kernel != 1
        out["fc1.weight"] = _take(todo, "fc1.weight", path)
        out["fc2.weight"] = _take(todo, "fc2.weight", path)
        bias = "fc2.bias" in todo
        if bias:
            out["fc2.bias"] = todo.pop("fc2.bias")
        num_classes = int(out["fc2.weight"].shape[0])
        hparams = dict(reduce_dim=d_red, hidden_dim=hidden, downsample="max2x2", hr2o="nl",
                       depth=depth, kernel_size=kernel, hr2o_dropout=0.2, dropout=0.0,
                       bias=bias, roi_size=7, mlp_1x1=mlp_1x1, roi_aligned=False)
        name = "acar"
    elif "fc.weight" in todo:
        fc = _take(todo, "fc.weight", path)                               # (K, C)
        width, num_classes = int(fc.shape[1]), int(fc.shape[0])
        out["fc.weight"] = fc
        out["fc.bias"] = todo.pop("fc.bias", torch.zeros(num_classes, dtype=fc.dtype))
        hparams = dict(dropout=0.0, roi_size=7, roi_aligned=False)
        name = "linear"
    else:
        raise ArtifactError(path, "neither ACAR-Net's acar head (head.conv_reduce.weight) "
                            f"nor its linear head (head.fc.weight); head keys: {sorted(head)[:4]}")
    if todo:
        raise ArtifactError(path, f"unexpected head tensors: {sorted(todo)[:4]}")
    return name, hparams, width, num_classes, out


def import_checkpoint(ckpt: str | os.PathLike, out_dir: str | os.PathLike,
                      labelmap: str | os.PathLike, backbone: str | None = None,
                      short_side: int = 256, time_offset: float = 0.0,
                      pad_multiple: int | None = None) -> dict:
    """Write ``OUT/head.pt`` (+ ``OUT/import.json``: the mapping and the extract command
    whose features it takes); returns the import record."""
    path = Path(ckpt)
    state = read_model_zoo(path)
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    head = {(k[len("module."):] if k.startswith("module.") else k): v   # AVA_head.module
            for k, v in head.items()}
    if not head:
        raise ArtifactError(path, "no head.* tensors: a backbone-only file (pass it to "
                            "`acar extract --weights`), not an ACAR-Net model")
    # the backbone: its depth from the file (R101 has 23 res4 blocks)
    bstate, fmt = slowfast.read_state(path)
    depth = 101 if "slow_res3.22.conv1.weight" in bstate else 50
    backbone = backbone or BACKBONE_OF[depth]
    bb = get_backbone(backbone)
    if bb.family != "slowfast" or bb.build().depth != depth:
        raise ArtifactError(backbone, f"the checkpoint's backbone is SlowFast-{depth}: use "
                            f"--backbone {BACKBONE_OF[depth]} (or its _16x8 variant)")
    slowfast.from_file(bb.build(), path)          # the backbone loads (one-line error if not)
    name, hparams, width, num_classes, sd = convert_head(head, path)
    if width != bb.channels:
        raise ArtifactError(path, f"the head reads {width} channels, {backbone} gives "
                            f"{bb.channels}")
    lm = read_labelmap(labelmap)
    if lm.num_classes != num_classes:
        raise ArtifactError(labelmap, f"{lm.num_classes} classes, the checkpoint has "
                            f"{num_classes} outputs (ACAR-Net: AVA's 60-class list)")
    if num_classes == 60 and lm.pose_indices != list(range(13)):
        raise ArtifactError(labelmap, "ACAR-Net's softmax covers the first 13 outputs (the "
                            f"pose classes); this label map's pose classes are at "
                            f"{lm.pose_indices[:14]}")
    hparams = asdict(head_config(name, hparams))
    net = build_head(name, width, num_classes, **hparams)
    result = net.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(path, f"head tensors: missing {result.missing_keys[:4]}, "
                            f"unexpected {result.unexpected_keys[:4]}")
    pad = pad_multiple or default_pad_multiple(bb)   # extract's default: unpadded
    spec = FeatureSpec(backbone, f"file:{path.name}:{slowfast._digest(path)}", False,
                       bb.clip_frames, bb.clip_stride, short_side, bb.channels,
                       (f"s{short_side}",),
                       {"clip_fps": 30.0, "dilate_last": False, "pad_multiple": pad,
                        "canvas": CANVAS, "time_offset": float(time_offset), "amp": False})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"source": str(path), "source_format": f"ACAR-Net model zoo ({fmt} backbone)",
              "head": name, "hparams": hparams,
              "extract": f"acar extract --backbone {backbone} --weights {path} "
                         f"--short-side {short_side} --time-offset {time_offset:g}"
                         + (f" --pad-multiple {pad_multiple}" if pad_multiple else "")}
    save_checkpoint({"head": name, "hparams": hparams, "in_channels": width,
                     "num_classes": num_classes, "labelmap": lm.to_dict(),
                     "feature_spec": spec.to_dict(),
                     "state_dict": {k: v.contiguous() for k, v in net.state_dict().items()},
                     "imported": record}, out / "head.pt")
    with atomic_path(out / "import.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return record
