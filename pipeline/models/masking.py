"""Heads see only the image: the operators of the heads, restricted to the valid region.

``extract`` resizes each frame and pads it right and bottom with zeros up to a square
canvas, so the context map V (B, C, H, W) has cells outside the image.  Each keyframe comes
with ``valid`` (B, 2) int64 = ``(rows, cols)``: the cells inside the image, counted from the
top-left corner.  The official ACAR-Net crops the context map to the unpadded size; the
functions here compute, on the padded batch, what each operator computes on the map cropped
to ``[:rows, :cols]`` of its own keyframe (up to float rounding).

Conventions:

* ``valid`` (L, 2) int64 ``(rows, cols)`` goes with a tensor ``x`` (L, ..., h, w) whose
  leading dim it indexes: L = B keyframes for the context map, L = N actors for the
  per-actor maps of ``acrn``/``acar`` (:func:`actor_valid` picks keyframe ``rois[:, 0]``).
  After a conv or a pool the extents shrink: :func:`extent_after`.
* ``valid=None`` is the whole map.  Every function then returns its input unchanged (the
  same object) or calls the plain operator, and so does a ``valid`` that covers the whole
  map (:func:`covers`): the toy world's square maps compute bitwise what they compute today.
* A bad ``valid`` (wrong shape, an extent outside ``1..h`` x ``1..w``) is a one-line
  ValueError.  The check (:func:`covers`) reads ``valid``'s min and max once per call: one
  host sync per call when ``valid`` lives on the GPU, and a data-dependent branch.  A head
  syncs once on entry (:func:`needed`) and, only when there is something to mask, once per
  masking call after that (14 for acar with two HR2O blocks); ``valid=None`` never syncs.

Why each operator needs what it gets:

* **RoIAlign** (:func:`replicate_edges`).  torchvision's ``roi_align`` on a map with h rows
  clamps a sample point with ``h-1 <= y <= h`` to row h-1 and returns 0 for ``y > h`` (and
  for ``y < -1``).  On the padded map a sample point in ``(h-1, h)`` interpolates row h-1
  with row h.  With every padding cell set to the nearest image cell (edge replication:
  cell (r, c) holds V[min(r, rows-1), min(c, cols-1)]) that interpolation gives row h-1's
  value, as the cropped map does.  ``aligned=True`` samples a box ``[y1, y2]`` strictly
  inside ``[y1 - 0.5, y2 - 0.5]``, so every box with ``y2 <= rows + 0.5`` and
  ``x2 <= cols + 0.5`` (a fortiori a box inside the image) gets the cropped map's features.
  ``sampling_ratio=0`` picks ``ceil(box size / output size)`` samples per bin, which does
  not depend on the map size.
* **Convs with zero padding** (:func:`zero_outside`): a 3x3 conv with ``padding=1`` on the
  cropped map sees zeros beyond its border; on the padded map it sees the padding cells,
  so they must be 0, and be zeroed again after each conv (the conv writes into them).
* **Convs without padding** (ACAR's 3x3): output cell i reads input cells ``i..i+2``; the
  first ``rows - 2`` output rows read only image rows.  Zero the rest after the conv.
* **Max-pools** (:func:`masked_max_pool`): the cropped pool pads with -inf, so fill the
  cells outside with -inf, pool, zero outside the new extents (``ceil(rows / 2)`` for
  MaxPool(3, s2, p1), ``ceil(rows / 4)`` for MaxPool(5, s4, p2), 1 for the global max-pool).
  Every window of an output cell inside the new extents holds at least one image cell, so
  for non-negative (post-ReLU) maps with zeroed padding ``fill=0`` gives the same result.
* **Spatial mean** (:func:`masked_spatial_mean`): sum over the image cells / their count.
* **GroupNorm** (:func:`masked_group_norm`): statistics over the image cells only, the
  per-channel affine as ``nn.GroupNorm``; the output is 0 outside (ready for a conv).
* **Normalised coordinates** (:func:`box_embedding`, :func:`location_embedding`, ACRN):
  divide by the keyframe's valid extents, not by the padded map's H, W.
* **Attention across actors, location by location** (HR2O's messages ``nl``, ``avg``,
  ``rn``, ``gattn``; acfb's bank attention): the message at cell p reads only cell p of the
  actors' Q/K/V maps, and all actors of a keyframe share its extents, so the messages at
  image cells are the cropped ones as long as the convs that make Q/K/V see zeroed padding.
  Only the output needs masking (GroupNorm over image cells, zero after the residual).

Where each function goes
------------------------

Where ``valid`` comes from: per keyframe and view, ``cells_inside(view.valid,
view.feature_stride)``, stacked to (B, 2) int64 by whoever batches the context maps
(:func:`pipeline.keyframes.valid_region`).  Each
head's public entry points (``forward``/``features``, ``relation_maps``, acar's
``first_order`` and ``bank_maps``) call :func:`needed` first, so a ``valid`` covering the
map costs one check and then nothing.

* Every head: :meth:`pipeline.models.base.Head.actors` is ``actor_vectors(X, rois, size,
  valid)``, which RoIAligns ``replicate_edges(X, valid)``, X the map it RoIAligns (the
  context, or acar's reduced V: a 1x1 conv without bias commutes with the replication).
  ``linear``, ``actor_actor`` and ``lfb`` need nothing else (lfb's banked actor vectors
  come from ``bank.py``'s ``actor_vectors``, which needs the banked keyframes' ``valid``).
* ``acrn`` (``ACRNHead.maps``): :func:`box_embedding` and :func:`location_embedding` with
  the extents, :func:`zero_outside` after the 1x1 relation conv and after each 3x3 conv
  (extents ``actor_valid(valid, rois)``), :func:`masked_spatial_mean` for AvgPool(R).
* ``acar`` (``ACARHead._first_order``, ``_pooled_first_order``, ``maps``): after conv2 (no
  padding) :func:`zero_outside` with ``extent_after(actor_valid(valid, rois), conv2)``;
  ``downsample`` as :func:`masked_max_pool`; the HR2O blocks get those extents;
  :func:`masked_spatial_mean` for AvgPool(F).  ``bank_maps`` pools with
  :func:`masked_max_pool` too, so banked maps are 0 outside.
* HR2O (``HR2OBlock.forward(..., valid)``, ``x`` 0 outside): the message as it is (per
  location), :func:`masked_group_norm`, the conv, then :func:`zero_outside` after the
  residual.
* ``acfb`` (``ACFBHead.maps``): as acar; the bank slots (B, S, d, h, w) of a keyframe come
  from the same video (the same extents), zeroed with ``extent_through(valid, [conv2,
  downsample])`` (B, 2); its blocks are HR2O's.  ``bank.py``'s acfb builder passes the
  banked keyframes' ``valid`` to ``bank_maps``.

``relation_maps`` then returns maps that are 0 outside the image (the demo's heatmaps).
``tests/models/test_masking.py`` checks every head against the head on each keyframe's
cropped map, and the heads with ``valid=None`` against the heads as written before masking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

# ---- the valid region ----------------------------------------------------------------

def covers(valid: Tensor | None, height: int, width: int, length: int | None = None) -> bool:
    """True when ``valid`` (L, 2) is None or every extent is the whole ``height x width`` map
    (nothing to mask); checks ``valid`` (one-line ValueError).  ``length``: the expected L."""
    if valid is None:
        return True
    if valid.ndim != 2 or valid.shape[1] != 2 or (length is not None and len(valid) != length):
        want = f"({length}, 2)" if length is not None else "(L, 2)"
        raise ValueError(f"valid: expected a {want} tensor of (rows, cols), "
                         f"got shape {tuple(valid.shape)}")
    if valid.dtype.is_floating_point or valid.dtype in (torch.bool, torch.uint8):
        raise ValueError(f"valid: expected an integer (int64) tensor of (rows, cols), "
                         f"got {valid.dtype}")
    if valid.numel() == 0:
        return True
    lo, hi = valid.amin(0).tolist(), valid.amax(0).tolist()   # one sync: [rows, cols] each
    if lo[0] < 1 or lo[1] < 1 or hi[0] > height or hi[1] > width:
        raise ValueError(f"valid: (rows, cols) must lie in 1..{height} x 1..{width} for a "
                         f"{height}x{width} map, got rows {lo[0]}..{hi[0]}, cols {lo[1]}..{hi[1]}")
    return lo[0] == height and lo[1] == width


def needed(valid: Tensor | None, x: Tensor) -> Tensor | None:
    """``valid`` (L, 2) for ``x`` (L, ..., h, w), on ``x``'s device, or None when it covers
    the whole map (checked, one sync): a head calls this once on entry, so that the masking
    functions below all take their unmasked path, bitwise, when there is nothing to mask."""
    if covers(valid, x.shape[-2], x.shape[-1], len(x)):
        return None
    return valid.to(x.device)


def cells_inside(valid_box: Sequence[float], feature_stride: float) -> tuple[int, int]:
    """``ViewSpec.valid`` (x0, y0, x1, y1) in input pixels -> ``(rows, cols)``: the context
    cells that hold any image pixel, ``(ceil(y1 / stride), ceil(x1 / stride))``.

    Ceil, so that every box inside the image (``y2 <= y1 / stride`` in feature pixels) lies
    inside the valid region, as :func:`replicate_edges` needs.  The image must sit at the
    top-left corner (``extract`` pads right and bottom).
    """
    x0, y0, x1, y1 = valid_box
    if x0 != 0 or y0 != 0 or x1 <= 0 or y1 <= 0 or feature_stride <= 0:
        raise ValueError(f"valid box {tuple(valid_box)} (stride {feature_stride}): expected "
                         "the image at the top-left corner, (0, 0, x1 > 0, y1 > 0)")
    eps = 1e-6                                          # 160 / (160 / 10) may be 10.0000001
    return math.ceil(y1 / feature_stride - eps), math.ceil(x1 / feature_stride - eps)


def valid_mask(valid: Tensor, height: int, width: int) -> Tensor:
    """(L, 2) (rows, cols) -> (L, H, W) bool, True on the cells inside the image."""
    rows = torch.arange(height, device=valid.device)[None, :, None]   # (1, H, 1)
    cols = torch.arange(width, device=valid.device)[None, None, :]    # (1, 1, W)
    return (rows < valid[:, 0, None, None]) & (cols < valid[:, 1, None, None])  # (L, H, W)


def actor_valid(valid: Tensor | None, rois: Tensor) -> Tensor | None:
    """(B, 2) keyframe extents, (N, 5) rois -> (N, 2): the extents of each actor's keyframe."""
    if valid is None:
        return None
    return valid[rois[:, 0].long()]                                   # (N, 2)


def _mask_like(x: Tensor, valid: Tensor) -> Tensor:
    """(L, 2) -> a bool mask broadcastable to x (L, ..., h, w)."""
    m = valid_mask(valid.to(x.device), x.shape[-2], x.shape[-1])      # (L, h, w)
    return m.view(len(x), *([1] * (x.ndim - 3)), *x.shape[-2:])       # (L, 1.., h, w)


def fill_outside(x: Tensor, valid: Tensor | None, value: float) -> Tensor:
    """x (L, ..., h, w) with the cells outside ``valid`` (L, 2) set to ``value``."""
    if covers(valid, x.shape[-2], x.shape[-1], len(x)):
        return x
    return torch.where(_mask_like(x, valid), x, value)


def zero_outside(x: Tensor, valid: Tensor | None) -> Tensor:
    """x (L, ..., h, w) with the cells outside ``valid`` (L, 2) set to 0: what a conv with
    zero padding must see there, so that it computes the cropped map's conv inside."""
    return fill_outside(x, valid, 0.0)


# ---- RoIAlign --------------------------------------------------------------------------

def replicate_edges(context: Tensor, valid: Tensor | None) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W), every cell outside ``valid`` (B, 2) replaced by the
    nearest cell inside (row min(r, rows-1), col min(c, cols-1)).

    ``roi_align(replicate_edges(V, valid), rois, aligned=True, sampling_ratio=0)`` equals
    ``roi_align`` on each keyframe's map cropped to ``[:rows, :cols]`` for every box with
    ``x2 <= cols + 0.5`` and ``y2 <= rows + 0.5`` (see the module docstring).
    """
    B, C, H, W = context.shape
    if covers(valid, H, W, B):
        return context
    valid = valid.to(context.device)
    r = torch.minimum(torch.arange(H, device=context.device)[None], valid[:, :1] - 1)  # (B, H)
    c = torch.minimum(torch.arange(W, device=context.device)[None], valid[:, 1:] - 1)  # (B, W)
    x = context.gather(2, r[:, None, :, None].expand(B, C, H, W))     # rows replicated
    return x.gather(3, c[:, None, None, :].expand(B, C, H, W))        # then columns


# ---- extents after a conv or a pool ---------------------------------------------------

def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def extent_after(valid: Tensor | None, module: nn.Module) -> Tensor | None:
    """(L, 2) extents before ``module`` -> (L, 2) after it: the size of its output on the
    cropped map.  Handles Conv2d, MaxPool2d/AvgPool2d (``ceil_mode=False``), adaptive pools
    to 1x1 (extent 1) and Identity.  ``floor((n + 2p - dil (k - 1) - 1) / s) + 1``: 3x3
    without padding: n - 2; MaxPool(3, s2, p1): ceil(n / 2); MaxPool(5, s4, p2): ceil(n / 4).
    """
    if valid is None or isinstance(module, nn.Identity):
        return valid
    if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        if _pair(module.output_size) != (1, 1):
            raise ValueError(f"extent_after: only adaptive pools to 1x1, got {module}")
        return torch.ones_like(valid)
    if isinstance(module, nn.Conv2d):
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        if isinstance(module.padding, str):
            if module.padding == "same":
                return valid
            p = (0, 0)
        else:
            p = _pair(module.padding)
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if module.ceil_mode:
            raise ValueError(f"extent_after: ceil_mode pools are not supported, got {module}")
        k, p = _pair(module.kernel_size), _pair(module.padding)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
    else:
        raise ValueError(f"extent_after: no extent rule for {module.__class__.__name__}")
    out = [torch.div(valid[:, i] + 2 * p[i] - d[i] * (k[i] - 1) - 1, s[i],
                     rounding_mode="floor") + 1 for i in (0, 1)]
    return torch.stack(out, 1)                                        # (L, 2)


def extent_through(valid: Tensor | None, modules: Iterable[nn.Module]) -> Tensor | None:
    """``extent_after`` through a sequence of modules."""
    for module in modules:
        valid = extent_after(valid, module)
    return valid


def masked_max_pool(x: Tensor, valid: Tensor | None, pool: nn.Module,
                    fill: float = -math.inf) -> tuple[Tensor, Tensor | None]:
    """x (L, C, h, w), extents (L, 2) -> (pool(x) (L, C, h', w') masked, extents (L, 2)).

    The cells outside are filled with ``fill`` before pooling (-inf: what the cropped
    pool's own padding holds, exact for any input; 0 is exact for non-negative input),
    and the output is 0 outside the new extents.  ``pool``: one of acar's downsamples
    (Identity, MaxPool2d, AdaptiveMaxPool2d(1)).
    """
    if covers(valid, x.shape[-2], x.shape[-1], len(x)):
        return pool(x), extent_after(valid, pool)
    y = pool(fill_outside(x, valid, fill))                            # (L, C, h', w')
    out = extent_after(valid, pool)
    return zero_outside(y, out), out


# ---- pooling and normalisation over the image cells ----------------------------------

def masked_spatial_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    """x (L, C, h, w), extents (L, 2) -> (L, C): the mean over the cells inside
    (``x.mean(dim=(2, 3))`` when ``valid`` covers the map)."""
    if covers(valid, x.shape[-2], x.shape[-1], len(x)):
        return x.mean(dim=(2, 3))
    valid = valid.to(x.device)
    total = torch.where(_mask_like(x, valid), x, 0.0).sum(dim=(2, 3))  # (L, C)
    count = (valid[:, 0] * valid[:, 1]).to(x.dtype)                   # (L,)
    return total / count[:, None]


def masked_group_norm(x: Tensor, valid: Tensor | None, norm: nn.GroupNorm) -> Tensor:
    """``norm`` (an nn.GroupNorm) with its statistics over the cells inside ``valid`` only:
    x (L, C, h, w), extents (L, 2) -> (L, C, h, w), 0 outside.  Inside, it equals
    ``norm`` applied to each map cropped to its extents (biased variance, ``norm.eps``,
    per-channel affine)."""
    L, C, h, w = x.shape
    if covers(valid, h, w, L):
        return norm(x)
    valid = valid.to(x.device)
    G = norm.num_groups
    inside = valid_mask(valid, h, w)[:, None, None]                   # (L, 1, 1, h, w)
    xg = x.view(L, G, C // G, h, w)                                   # (L, G, C/G, h, w)
    count = (C // G * valid[:, 0] * valid[:, 1]).to(x.dtype)[:, None, None, None, None]
    mean = torch.where(inside, xg, 0.0).sum(dim=(2, 3, 4), keepdim=True) / count
    dev = torch.where(inside, xg - mean, 0.0)                         # (L, G, C/G, h, w)
    var = dev.square().sum(dim=(2, 3, 4), keepdim=True) / count       # biased, as GroupNorm
    y = (dev / torch.sqrt(var + norm.eps)).view(L, C, h, w)
    if norm.affine:
        y = y * norm.weight[:, None, None] + norm.bias[:, None, None]
    return zero_outside(y, valid)


# ---- ACRN's normalised coordinates ----------------------------------------------------

def box_embedding(rois: Tensor, valid: Tensor | None, height: int, width: int) -> Tensor:
    """(N, 5) rois in feature-map pixels -> (N, 4) ``[x1/cols, y1/rows, x2/cols, y2/rows]``
    with the extents of each actor's keyframe (``[x1/W, y1/H, x2/W, y2/H]`` when ``valid``
    covers the map: ACRN's box coordinates)."""
    if covers(valid, height, width):
        scale = rois.new_tensor([width, height, width, height])
        return rois[:, 1:] / scale
    ext = actor_valid(valid.to(rois.device), rois).to(rois.dtype)     # (N, 2) rows, cols
    scale = torch.stack([ext[:, 1], ext[:, 0], ext[:, 1], ext[:, 0]], 1)  # (N, 4)
    return rois[:, 1:] / scale


def location_embedding(height: int, width: int, like: Tensor,
                       valid: Tensor | None = None) -> Tensor:
    """-> (1, 2, H, W) when ``valid`` covers the map, ``[(u + 0.5) / W, (v + 0.5) / H]`` at
    cell (u, v) (ACRN's location coordinates), else (B, 2, H, W): x and y of every cell
    centre divided by the keyframe's extents, ``[(u + 0.5) / cols, (v + 0.5) / rows]``
    (values outside the image exceed 1 and are masked later)."""
    if covers(valid, height, width):
        ys = (torch.arange(height, dtype=like.dtype, device=like.device) + 0.5) / height
        xs = (torch.arange(width, dtype=like.dtype, device=like.device) + 0.5) / width
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([x, y])[None]                              # (1, 2, H, W)
    ext = valid.to(device=like.device, dtype=like.dtype)              # (B, 2)
    B = len(ext)
    ys = (torch.arange(height, dtype=like.dtype, device=like.device) + 0.5) / ext[:, :1]  # (B,H)
    xs = (torch.arange(width, dtype=like.dtype, device=like.device) + 0.5) / ext[:, 1:]   # (B,W)
    return torch.stack([xs[:, None, :].expand(B, height, width),
                        ys[:, :, None].expand(B, height, width)], 1)  # (B, 2, H, W)
