"""The run-time side of feature banks: a bank store opened once per training or evaluation
run gives a batch of keyframes their bank slots (the padded tensors + mask the bank heads
take), for the head's :class:`~pipeline.models.BankRequest`.  The store format is
:mod:`pipeline.artifacts.banks`.
"""

from __future__ import annotations

import numpy as np
import torch

from .artifacts import ArtifactError
from .artifacts.banks import BankStore, VideoBank, window_rows
from .models import BankRequest


class BankReader:
    """A bank opened once per run, for a head's ``bank_request``::

        {"kind": "lfb" | "acfb", "window": w, "max_per_step": K | None,
         "exclude_current": bool, "dim": C or d, "pool": "none" | "2x2" | "4x4" (acfb),
         "times": bool}

    :meth:`gather` gives B keyframes their bank slots: the banked actors at seconds
    ``[t - w, t + w]`` of the same video (without those at t when ``exclude_current``), at
    most ``max_per_step`` per second (random ones with ``rng``, in training; the highest
    scores without, so evaluation is deterministic).
    """

    def __init__(self, url: str, request: BankRequest, features_spec: dict | None = None,
                 in_memory: bool = True):
        self.url, self.request, self.in_memory = str(url), request, in_memory
        self.store = BankStore(url)
        videos = self.store.videos()
        if not videos:
            raise ArtifactError(self.url, "bank has no complete videos")
        attrs, kind = self.store.attrs(videos[0]), request.kind
        spec = attrs.get("spec", {})
        if attrs.get("kind") != kind:
            raise ArtifactError(self.url, f"an {attrs.get('kind')} bank, but the head reads "
                                          f"an {kind} bank")
        if spec.get("dim") != request.dim:
            raise ArtifactError(self.url, f"bank features have {spec.get('dim')} channels, "
                                          f"the head expects {request.dim}")
        if kind == "acfb" and spec.get("pool") != request.pool:
            raise ArtifactError(self.url, f"bank maps are pooled '{spec.get('pool')}', the "
                                          f"head expects pool '{request.pool}'")
        if request.scene and not spec.get("scene"):
            raise ArtifactError(self.url, "the head reads the scene's context maps: build the "
                                          "bank with --scene")
        if features_spec is not None and spec.get("features") != features_spec:
            raise ArtifactError(self.url, "bank was built on other features than these")
        self._videos: dict[str, VideoBank] = {}

    def video(self, video: str) -> VideoBank:
        if video not in self._videos:
            self._videos[video] = self.store.read_video(video, self.in_memory)
        return self._videos[video]

    def rows(self, video: str, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Bank rows of the keyframe (video, t): its window, capped per second."""
        vb = self.video(video)
        rows = window_rows(vb.actor_timestamps, t, self.request.window,
                           self.request.exclude_current)
        cap = self.request.max_per_step
        if cap is None or len(rows) == 0:
            return rows
        keep = []
        for s in np.unique(vb.actor_timestamps[rows]):
            step = rows[vb.actor_timestamps[rows] == s]
            if len(step) <= cap:
                keep.append(step)
            elif rng is not None:
                keep.append(np.sort(rng.choice(step, cap, replace=False)))
            else:
                keep.append(np.sort(step[np.argsort(-vb.scores[step], kind="stable")[:cap]]))
        return np.concatenate(keep)

    def gather(self, keyframes: list, rng: np.random.Generator | None = None,
               flip: bool = False) -> tuple[torch.Tensor, ...]:
        """Bank slots of B keyframes (objects with ``video`` and ``timestamp``).

        Returns ``slots`` (B, S, *item) float32, zero where padded, and ``mask`` (B, S)
        bool, True for real slots; S = the most slots of one keyframe (at least 1).
        ``flip`` mirrors acfb maps for a horizontally flipped view.  With the request's
        ``times``, also ``times`` (B, S) int64: each slot's second minus the keyframe's
        (0 where padded).
        """
        per_kf, rel = [], []
        for k in keyframes:
            vb = self.video(k.video)
            rows = self.rows(k.video, int(k.timestamp), rng)
            rel.append(vb.actor_timestamps[rows].astype(np.int64) - int(k.timestamp))
            if len(rows) == 0:
                per_kf.append(None)
            elif isinstance(vb.data, np.ndarray):
                per_kf.append(vb.data[rows])
            else:  # lazy: one contiguous read of the window, then the chosen rows
                per_kf.append(np.asarray(vb.data[rows[0]:rows[-1] + 1])[rows - rows[0]])
        item = self.video(keyframes[0].video).data.shape[1:] if keyframes else ()
        s = max([1] + [len(x) for x in per_kf if x is not None])
        slots = np.zeros((len(keyframes), s, *item), np.float32)
        mask = np.zeros((len(keyframes), s), bool)
        for b, x in enumerate(per_kf):
            if x is not None:
                slots[b, :len(x)] = x
                mask[b, :len(x)] = True
        slots = torch.from_numpy(slots)
        if flip and self.request.kind == "acfb":
            slots = slots.flip(-1)
        out: tuple[torch.Tensor, ...] = (slots, torch.from_numpy(mask))
        if self.request.times:
            times = np.zeros((len(keyframes), s), np.int64)
            for b, r in enumerate(rel):
                times[b, :len(r)] = r
            out += (torch.from_numpy(times),)
        if self.request.scene:
            out += self.scene(keyframes, flip)
        return out

    def scene(self, keyframes: list, flip: bool = False) -> tuple[torch.Tensor, ...]:
        """The context maps of the keyframes' windows (the seconds of the video's keyframes
        in ``[t - w, t + w]``, without t when ``exclude_current``): ``scene`` (B, T, C, H,
        W) float32, ``mask`` (B, T) and ``times`` (B, T) (second - t), zero where padded."""
        per_kf = []
        w = self.request.window
        for k in keyframes:
            vb = self.video(k.video)
            t = int(k.timestamp)
            idx = np.flatnonzero((vb.timestamps >= t - w) & (vb.timestamps <= t + w)
                                 & ((vb.timestamps != t) | (not self.request.exclude_current)))
            maps = None if len(idx) == 0 else (
                vb.scene[idx] if isinstance(vb.scene, np.ndarray)
                else np.asarray(vb.scene[idx[0]:idx[-1] + 1])[idx - idx[0]])
            per_kf.append((maps, vb.timestamps[idx].astype(np.int64) - t))
        item = next((m.shape[1:] for m, _ in per_kf if m is not None), None)
        if item is None:
            item = self.video(keyframes[0].video).scene.shape[1:] if keyframes else (0, 1, 1)
        n = max([1] + [len(r) for _, r in per_kf])
        scene = np.zeros((len(keyframes), n, *item), np.float32)
        mask = np.zeros((len(keyframes), n), bool)
        times = np.zeros((len(keyframes), n), np.int64)
        for b, (m, r) in enumerate(per_kf):
            if m is not None:
                scene[b, :len(r)], mask[b, :len(r)], times[b, :len(r)] = m, True, r
        out = torch.from_numpy(scene)
        return (out.flip(-1) if flip else out), torch.from_numpy(mask), torch.from_numpy(times)


def open_bank(url: str | None, head: torch.nn.Module, features_spec: dict | None = None,
              in_memory: bool = True) -> BankReader | None:
    """The reader for ``head``'s bank, or None for a head that reads none.

    A bank head without a bank, a bank for a head that reads none, or a bank of the wrong
    kind, size or features is an :class:`ArtifactError`.
    """
    request = head.bank_request
    if request is None:
        if url is not None:
            raise ArtifactError(url, f"{type(head).__name__} reads no bank; drop --bank")
        return None
    if url is None:
        raise ArtifactError("--bank", f"{type(head).__name__} reads an {request.kind} "
                                      "bank: give --bank (built by `acar bank`)")
    return BankReader(url, request, features_spec, in_memory)
