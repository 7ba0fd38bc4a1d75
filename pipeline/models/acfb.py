"""``acfb``: ACAR-Net with the Actor-Context Feature Bank (Pan et al., CVPR 2021, Sec. 3.3).

ACAR's first-order part runs live on the current keyframe (so gradients flow); then HR2O-NL
blocks let every current actor attend, location by location, to the actors of its own
keyframe (live maps) *and* to the banked first-order maps of all actors in the window
[t-w, t+w] of the same video (a frozen bank made once by a trained ``acar``:
``acar bank --kind acfb``).  Shapes for B keyframes, N actors, S bank slots per keyframe::

    A, F    = first_order(context, rois)          (N, D), (N, d, H-2, W-2)   as in ``acar``
    F       = pool(F)                             (N, d, h, w)   pool: the bank's --pool
    L, m    = bank                                (B, S, d, h, w), (B, S)    m: True = real slot
    per block (``depth`` = 2), actor i of keyframe b, every location p:
      x_j   = [F_j : j in keyframe b] ++ [L_bs : m_bs]          live (updated) + banked (fixed)
      M_i(p)= sum_j softmax_j(Q F_i(p) . K x_j(p) / sqrt(d)) V x_j(p)
      F_i  <- F_i + Dropout(Conv(ReLU(GroupNorm(M_i))))
    logits  = Linear(Dropout([ReLU(Linear(A)); AvgPool(F)]))  (N, K)

The blocks are acar's own (``hr2o.HR2O`` of ``nl`` blocks), given the bank as their
``memory``: keys and values beside the live actors.

With ``valid`` (B, 2), everything is acar's masking (see ``acar.py``); the banked maps of
a keyframe come from its own video (the same image size, so the same extents) and are
zeroed outside those extents too, so each keyframe gets what it gets from its cropped map
and a bank of cropped maps.

The bank gives a keyframe its window *without* second t itself (``exclude_current``): the
current actors are there as live maps.  Masked slots are zeroed and get the most negative
finite score, so their attention weight is exactly 0.  With an empty bank (``bank=None`` or
every slot masked) the head computes exactly ``acar`` with ``hr2o="nl"`` and the matching
``downsample``; the parameters are the same (same names), so an acar checkpoint's
``state_dict`` loads into it.

Defaults: ACAR's (reduce_dim 1024, hidden_dim 512, kernel_size 3, hr2o_dropout 0.2,
dropout 0.0, roi_size 7), ``pool`` = "none" (no max-pool before HR2O: full map detail),
``window`` w = 10 s, ``depth`` = 2.

``temporal`` (not in the paper; default "none", the paper's ACFB): the bank is a set, so
its attention cannot tell a map of second t - 4 from one of t + 4, nor t - 2 from t - 3.
"learned" adds a learned vector per relative second to each banked map before the blocks::

    L_bs   <- L_bs + E[tau_bs + w]        E (2w+1, d), zero-initialised; tau_bs = s - t

so keys and values carry when the slot was (the reader gives ``times``; the live actors
get nothing).  With E = 0 it computes the paper's ACFB.

``scene`` (not in the paper; default false): the banked maps are those of a frozen acar,
trained on single clips, which has no reason to keep what only matters later (a lamp that
flashed), and they exist only for the seconds somebody was on screen.  With ``scene`` the
bank also holds each second's raw context map X_s (``acar bank --scene``), and the head
encodes it with its own first-order layers (trained, so they can keep what the label
needs), without an actor term::

    G_s    = pool(ReLU(Conv3x3(ReLU(Conv1x1(Conv1x1(X_s))))))    (T, d, h, w)  reduce,
                                                                   conv1_context, conv2
    memory = [L_bs : m_bs] ++ [G_s (+ E[s - t]) : s in the window, s != t]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .acar import BANK_POOL_DOWNSAMPLE, ACARHead, check_common
from .actor import group_actors
from .base import BANK_POOLS, BankRequest, HeadConfig, bank_slots
from .masking import extent_after, extent_through, masked_max_pool, needed, zero_outside

TEMPORAL = ("none", "learned")


@dataclass(frozen=True)
class ACFBConfig(HeadConfig):
    head = "acfb"
    reduce_dim: int = 1024      # D, as acar's
    hidden_dim: int = 512       # d, as the bank's acar (the banked maps have d channels)
    pool: str = "none"          # the bank's --pool, one of BANK_POOLS
    window: int = 10            # w: the bank's window, seconds either side
    depth: int = 2              # HR2O-NL blocks, 1..3
    kernel_size: int = 3        # Q/K/V and output convs of the blocks, odd
    hr2o_dropout: float = 0.2   # inside the blocks
    dropout: float = 0.0        # before the classifier
    bias: bool = False          # classifier bias
    roi_size: int = 7           # RoIAlign output size
    temporal: str = "none"      # none (the paper) | learned: a vector per relative second
    scene: bool = False         # also the window's context maps, encoded by the head

    # what ACARHead's constructor reads beyond these fields
    hr2o = "nl"
    mlp_1x1 = False

    @property
    def downsample(self) -> str:
        """The live maps are max-pooled as the banked ones."""
        return BANK_POOL_DOWNSAMPLE[self.pool]

    def __post_init__(self) -> None:
        self.check_range("reduce_dim", 1)
        self.check_range("hidden_dim", 1)
        self.check_choice("pool", BANK_POOLS)
        self.check_range("window", 0)
        self.check_choice("temporal", TEMPORAL)
        self.check(isinstance(self.scene, bool), "scene", "true or false")
        check_common(self)


class ACFBHead(ACARHead):
    Config = ACFBConfig
    config: ACFBConfig  # type: ignore[assignment]

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(in_channels, num_classes, **hparams)   # acar's parameters, names
        cfg = self.config
        learned = cfg.temporal == "learned"
        self.bank_request = BankRequest("acfb", cfg.window, None, exclude_current=True,
                                        dim=cfg.hidden_dim, pool=cfg.pool, times=learned,
                                        scene=cfg.scene)
        if learned:   # E (2w+1, d): a vector per relative second, zero: the paper's ACFB
            self.time_embed = nn.Parameter(torch.zeros(2 * cfg.window + 1, cfg.hidden_dim))

    def maps(self, context: Tensor, rois: Tensor, bank: Any = None,
             valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (N, D), the relation maps F (N, d, h, w) after the bank blocks, before pooling
        (0 outside the image), and their extents (N, 2) (None: the whole map);
        ``features`` and ``relation_maps`` (ACAR's) read them."""
        valid = needed(valid, context)                               # (B, 2) | None
        a, f, ext = self._pooled_first_order(context, rois, valid)   # (N, D), (N, d, h, w)
        cfg = self.config
        times = scene = None
        if bank is not None:
            want = 2 + (cfg.temporal != "none") + 3 * cfg.scene
            if len(bank) != want:
                raise ValueError(f"acfb (temporal={cfg.temporal}, scene={cfg.scene}) needs "
                                 f"{want} bank tensors (slots, mask[, times][, scene, "
                                 f"scene_mask, scene_times]), got {len(bank)}: the slot times")
            rest = list(bank[2:])
            bank = bank[:2]
            times = rest.pop(0) if cfg.temporal != "none" else None   # (B, S)
            scene = rest if cfg.scene else None
        mem, mem_mask = self.slots(bank, f, len(context))            # (B, S, d, h, w), (B, S)
        if scene is not None:
            g, g_mask = self._scene(scene[0], scene[1], valid)       # (B, T, d, h, w), (B, T)
            mem, mem_mask = torch.cat([mem, g], 1), torch.cat([mem_mask, g_mask], 1)
            if times is not None:
                times = torch.cat([times, scene[2].to(times.dtype)], 1)  # (B, S + T)
        if times is not None:
            w = cfg.window
            e = self.time_embed[(times.long() + w).clamp(0, 2 * w)]  # (B, S, d)
            mem = mem + (e * mem_mask[..., None])[..., None, None]   # masked slots stay 0
        mem = zero_outside(mem, extent_through(valid, [self.conv2, self.downsample]))
        index, mask = group_actors(rois, len(context))               # (B, M), (B, M)
        return a, self.hr2o(f, index, mask, (mem, mem_mask), valid=ext), ext  # (N, d, h, w)

    def _scene(self, x: Tensor, mask: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Scene slots: context maps x (B, T, C, H, W) with mask (B, T) -> G (B, T, d, h, w)
        by the head's own first-order layers (no actor term), 0 where masked or outside the
        image, and the mask."""
        B, T = x.shape[:2]
        v = self.reduce(x.flatten(0, 1).to(self.reduce.weight.dtype))    # (B*T, D, H, W)
        g = self.conv2(self.conv1_context(v).relu()).relu()             # (B*T, d, H-2, W-2)
        ext = extent_after(None if valid is None else valid.repeat_interleave(T, 0),
                           self.conv2)                                   # (B*T, 2) | None
        g, _ = masked_max_pool(zero_outside(g, ext), ext, self.downsample)
        g = g.unflatten(0, (B, T))                                       # (B, T, d, h, w)
        mask = mask.to(torch.bool)
        return torch.where(mask[..., None, None, None], g, 0.0), mask

    @staticmethod
    def slots(bank: Any, f: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """``bank`` = (slots (B, S, d, h, w), mask (B, S)) or None (no slots), checked."""
        return bank_slots(bank, tuple(f.shape[1:]), batch_size, f,
                          f"maps {tuple(f.shape[1:])}: the bank's --pool, view or "
                          "hidden_dim differs from the head's")
