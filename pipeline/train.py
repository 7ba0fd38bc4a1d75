"""Stage ``train``: a head trained on cached features only (no video decoding).

Samples are the keyframes of the annotation CSV that the feature store has.  Each
keyframe contributes its GT person boxes plus the detected boxes with score >=
``det_score_thr`` that overlap a GT box with IoU >= ``match_iou`` (they take that
box's labels; unmatched detections are dropped).  Boxes are jittered by up to
±``jitter`` of their size.  Loss: per-class BCE with a softmax over the pose classes
(:mod:`pipeline.losses`).  SGD with Nesterov momentum, linear warm-up, then step decay,
stepped per iteration.  After every epoch but the last the resume state is written
beside the output (``m.pt.partial``), so ``--resume`` continues an interrupted run with
the same result; the output path (and its log: ``<log>.partial`` until then) only ever
holds a finished model.  A non-finite loss stops the run at once (one line naming the
epoch, step and keyframes): nothing is written.

Decoupled long-tail fine-tuning (Kang et al. 2019, classifier re-training), stage two after
a normally trained head: ``train: classifier`` (with ``init``, the stage-one checkpoint,
all of whose weights must fit) freezes every parameter but the head's final classifier
(``Head.classifier``; the frozen part runs in eval mode, its dropouts off, so the features
are those of stage one) and ``sampler: class-balanced`` draws the training boxes class-first
(:class:`ClassBalanced`).  ``acar train --finetune`` takes these settings from the params
file's ``finetune`` section.
"""

from __future__ import annotations

import csv
import io
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed
from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.atomic import write_text_atomic
from .artifacts.checkpoint import load_checkpoint, partial_path, save_checkpoint
from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore
from .artifacts.labelmap import LabelMap, read_labelmap, softmax_notice
from .bank_reader import BankReader, open_bank
from .distributed import SINGLE, Dist, all_reduce_sum, worker_init
from .inference import Validator, head_spec
from .keyframes import (
    BOX_COLUMNS,
    FeatureCache,
    Keyframe,
    TrainKeyframes,
    box_iou,
    keyframe_rows,
)
from .losses import ava_loss
from .models import Head, build_head, reads_time
from .progress import progress

LOG_COLUMNS = ["epoch", "step", "lr", "loss", "val_mAP"]


@dataclass
class TrainConfig:
    head: str = "linear"
    # the head's hyper-parameters (stages.yaml heads.<head>.hparams): checked against the
    # head's config dataclass (pipeline.models.head_config); the checkpoint records them all
    hparams: dict = field(default_factory=dict)
    view: str | None = None          # feature view to train on (default: the store's first)
    epochs: int = 10
    batch_size: int = 8              # keyframes per step
    lr: float = 0.1                  # base learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-7
    warmup_epochs: float = 1.0       # linear warm-up from lr * warmup_factor
    warmup_factor: float = 0.1
    # step-decay points, as fractions of the whole training
    lr_steps: list[float] = field(default_factory=lambda: [0.7])
    lr_gamma: float = 0.1
    det_score_thr: float = 0.9       # detected boxes used as extra samples
    match_iou: float = 0.9           # ...when they overlap a GT box this much
    jitter: float = 0.075            # ±fraction of box size
    seed: int = 0
    cache: str = "auto"              # features in RAM: auto (if < cache_max_gb) | memory | disk
    cache_max_gb: float = 8.0
    # DataLoader worker processes when reading from disk; 0: a prefetching thread (no
    # batch travels through shared memory: faster on few cores, and for cheap heads)
    num_workers: int = 0
    # a checkpoint whose weights start the head (those with the same name and shape), e.g.
    # fine-tuning; on the toy world, acfb started from its bank's acar did worse (README)
    init: str | None = None
    # which parameters train: all | classifier (the final classifier only; the rest frozen,
    # as stage two of decoupled fine-tuning; needs init)
    train: str = "all"
    # how an epoch's samples are drawn: shuffle (every keyframe once, all its boxes carry the
    # loss) | class-balanced (a class uniformly, then one of its boxes: ClassBalanced)
    sampler: str = "shuffle"
    # with --val-annotations: the val mAP after every val_every-th epoch and after the last
    # (the others' log rows leave it empty); it changes nothing in the training
    val_every: int = 1

    def check(self) -> None:
        """One-line ArtifactErrors for settings that do not go together."""
        if isinstance(self.val_every, bool) or not isinstance(self.val_every, int) \
                or self.val_every < 1:
            raise ArtifactError("train.val_every", f"must be an integer >= 1, got "
                                                   f"{self.val_every!r}")
        if self.train not in TRAIN_PARTS:
            raise ArtifactError("--train", f"must be one of {', '.join(TRAIN_PARTS)}, "
                                           f"got {self.train!r}")
        if self.sampler not in SAMPLERS:
            raise ArtifactError("--sampler", f"must be one of {', '.join(SAMPLERS)}, "
                                             f"got {self.sampler!r}")
        if self.train == "classifier" and not self.init:
            raise ArtifactError("--init", "--train classifier re-trains the classifier of a "
                                          "trained head: give its checkpoint with --init")


TRAIN_PARTS = ("all", "classifier")
SAMPLERS = ("shuffle", "class-balanced")


def init_from(head: torch.nn.Module, path: str | os.PathLike, every: bool = False) -> int:
    """Copy into ``head`` the weights of checkpoint ``path`` that fit (same name and
    shape); returns how many tensors were copied.  None fitting is an error; with
    ``every``, any weight of the head left unfitted is one (``--train classifier`` freezes
    them: they must be the trained ones)."""
    state = load_checkpoint(path)["state_dict"]
    own = head.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise ArtifactError(path, "no weight of this checkpoint fits the head (--init)")
    if every and len(fit) < len(own):
        missing = [k for k in own if k not in fit]
        raise ArtifactError(path, f"--train classifier freezes the head's weights, so --init "
                                  f"must hold all of them: {len(missing)} of {len(own)} do "
                                  f"not fit ({', '.join(missing[:3])}"
                                  f"{', ...' if len(missing) > 3 else ''})")
    head.load_state_dict(fit, strict=False)
    return len(fit)


def trainable(head: Head, part: str) -> list[torch.nn.Parameter]:
    """The parameters that ``part`` trains (all | classifier); with ``classifier``, every
    other parameter of ``head`` gets ``requires_grad = False``."""
    if part == "all":
        return list(head.parameters())
    keep = {id(p) for p in head.classifier.parameters()}
    for p in head.parameters():
        p.requires_grad_(id(p) in keep)
    return [p for p in head.parameters() if id(p) in keep]


def train_mode(head: Head, part: str) -> None:
    """``head.train()``; with ``part`` classifier, the frozen modules in eval mode (their
    dropouts off): only the classifier and the dropout before it train."""
    head.train()
    if part == "classifier":
        for m in head.modules():
            m.train(m is head or m is head.classifier or m is head.dropout)


class ClassBalanced:
    """Class-balanced sampling of training boxes (Kang et al. 2019; Feng et al.'s stage two).

    A draw picks a class uniformly among the classes that have at least one training box,
    then a box of that class uniformly (GT boxes and matched detections alike).

    * **Multi-label boxes**: a box is a box of each of its classes, so it can be drawn
      through any of them; its target is its whole label vector (every class's BCE, the
      pose softmax).  The drawn class's frequency is uniform; a label that co-occurs with
      others (every box has a pose) is seen more often than that.
    * **Keyframe batching**: a draw trains on its box's keyframe, with all of that
      keyframe's boxes (the actors and the context that relation heads read), but only the
      drawn box carries the loss.  A batch is ``batch_size`` draws (a keyframe may come
      twice, each time for another box); an epoch is as many draws as there are training
      boxes.
    """

    def __init__(self, samples: list[Keyframe]):
        counts = [len(k.boxes) for k in samples]
        labels = np.concatenate([k.labels for k in samples]) > 0       # (M, K) all boxes
        self.keyframe = np.repeat(np.arange(len(samples)), counts)      # (M,) box -> keyframe
        self.row = np.concatenate([np.arange(n) for n in counts])      # (M,) box -> its row
        self.counts = counts
        self.classes = np.flatnonzero(labels.any(0))                    # classes with a box
        self.boxes = [np.flatnonzero(labels[:, c]) for c in self.classes]

    def __len__(self) -> int:
        return len(self.keyframe)                                      # draws per epoch

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws -> (class (n,), box (n,)): a class uniformly, then one of its boxes."""
        which = rng.integers(len(self.classes), size=n)                 # (n,) class slot
        box = np.empty(n, np.int64)
        for j, boxes in enumerate(self.boxes):
            at = np.flatnonzero(which == j)
            box[at] = boxes[rng.integers(len(boxes), size=len(at))]
        return self.classes[which], box

    def batches(self, epoch: int, cfg: TrainConfig) -> list[list[tuple[int, int]]]:
        """The global batches of ``epoch``: ``batch_size`` (keyframe, row of the drawn box)
        entries each, seeded by (seed, epoch)."""
        _, box = self.draw(len(self), np.random.default_rng([cfg.seed, epoch, 1]))
        entries = list(zip(self.keyframe[box].tolist(), self.row[box].tolist(), strict=True))
        return [entries[s:s + cfg.batch_size] for s in range(0, len(entries), cfg.batch_size)]

    def loss_rows(self, share: list[tuple[int, int]]) -> list[int]:
        """The rows of the drawn boxes among the rois of a batch of ``share``'s keyframes
        (all their boxes, in order)."""
        rows, offset = [], 0
        for k, row in share:
            rows.append(offset + row)
            offset += self.counts[k]
        return rows


def gt_keyframes(store: FeatureStore, gt: pd.DataFrame, dets: pd.DataFrame,
                 labelmap: LabelMap, det_score_thr: float, match_iou: float) -> list[Keyframe]:
    """Training keyframes: GT boxes with multi-hot labels, plus matched detections."""
    index = labelmap.index
    gt = gt[gt["action_id"].isin(index)]
    dets = dets[dets["score"] >= det_score_thr]
    times = {v: store.timestamps(v) for v in store.videos()}
    det_at = keyframe_rows(dets)                          # (video, ts) -> rows of det_box
    det_box = dets[BOX_COLUMNS].to_numpy(np.float32)
    gt_box = gt[BOX_COLUMNS].to_numpy(np.float32)
    gt_class = np.array([index[a] for a in gt["action_id"].tolist()], np.int64)
    out: list[Keyframe] = []
    for (video, ts), rows in sorted(keyframe_rows(gt).items()):
        k = np.flatnonzero(times[video] == ts) if video in times else []
        if len(k) == 0:
            continue
        uniq, inv = np.unique(gt_box[rows], axis=0, return_inverse=True)
        labels = np.zeros((len(uniq), labelmap.num_classes), np.float32)
        labels[inv.reshape(-1), gt_class[rows]] = 1.0
        boxes = [uniq]
        lab = [labels]
        if (video, ts) in det_at:
            dboxes = det_box[det_at[(video, ts)]]
            iou = box_iou(dboxes, uniq)
            best = iou.argmax(axis=1)
            ok = iou[np.arange(len(dboxes)), best] >= match_iou
            ok &= ~(iou >= 1.0 - 1e-6).any(axis=1)   # the GT box itself is already there
            boxes.append(dboxes[ok])
            lab.append(labels[best[ok]])
        out.append(Keyframe(video, int(ts), int(k[0]), np.concatenate(boxes),
                            np.concatenate(lab)))
    return out


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up, then step decay by ``lr_gamma`` at each ``lr_steps`` fraction."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (cfg.warmup_factor + (1 - cfg.warmup_factor) * step / warm)
    decays = sum(step >= f * total for f in cfg.lr_steps)
    return cfg.lr * cfg.lr_gamma ** decays


def global_batches(data: TrainKeyframes, epoch: int, cfg: TrainConfig,
                   balanced: ClassBalanced | None = None) -> list[list[int]]:
    """Batches of ``cfg.batch_size`` keyframes in the seeded order of ``epoch`` (with
    ``balanced``: the keyframes of its draws)."""
    if balanced is not None:
        return [[k for k, _ in b] for b in balanced.batches(epoch, cfg)]
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data)).tolist()
    return [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]


class Prefetcher:
    """Iterates ``loader`` in a background thread, up to ``depth`` batches ahead, so that
    reading and collating overlap the training step (file reads, zstd and copies release
    the GIL).  An error in the thread is raised by the iteration.

    ``threads`` >= 2: a DataLoader without worker processes has its batches fetched by
    that many threads at once (in order), so that one batch's decode does not wait for the
    previous one's.  Every batch is the same whichever thread fetches it (the jitter is
    seeded per keyframe), but the default stays 1: on 2 loaded cores 2 threads changed
    nothing measurable (README, ``bench/train.py --one-fetch-thread``), and they bypass
    ``DataLoader.__iter__``, which draws one number from torch's global RNG per epoch, so a
    head with dropout (acar, lfb) would train on other dropout masks than the committed
    ``dvc.lock``'s (measured: acar's checkpoint differs, deterministically)."""

    def __init__(self, loader: DataLoader, depth: int = 4, threads: int = 1):
        self.loader, self.depth, self.threads = loader, depth, threads

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self) -> Iterator:
        """The loader's batches in order, ``threads`` of them fetched at once when it is a
        DataLoader without workers."""
        loader = self.loader
        if self.threads < 2 or not isinstance(loader, DataLoader) or loader.num_workers \
                or loader.batch_sampler is None:
            yield from loader
            return
        data = loader.dataset
        items = getattr(data, "__getitems__", None) or (lambda idx: [data[i] for i in idx])

        def fetch(indices: list[int]):
            return loader.collate_fn(items(indices))

        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="acar-fetch")
        pending: deque[Future] = deque()
        try:
            for indices in loader.batch_sampler:
                pending.append(pool.submit(fetch, indices))
                if len(pending) > self.threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator:
        q: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()

        def put(item: tuple) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        def fill() -> None:
            batches = self.batches()
            try:
                for batch in batches:
                    if not put((True, batch)):
                        return
                put((False, None))
            except BaseException as err:   # handed to the consumer, raised there
                put((False, err))
            finally:
                batches.close()            # stops the fetching threads

        thread = threading.Thread(target=fill, name="acar-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                ok, batch = q.get()
                if ok:
                    yield batch
                elif batch is None:
                    return
                else:
                    raise batch
        finally:
            stop.set()
            thread.join()


def epoch_loader(data: TrainKeyframes, epoch: int, cfg: TrainConfig, workers: int,
                 d: Dist = SINGLE, balanced: ClassBalanced | None = None
                 ) -> DataLoader | Prefetcher:
    """This rank's share (``batch[rank::world]``) of every global batch of ``epoch``,
    loaded by ``workers`` processes, or with none by a :class:`Prefetcher` thread.

    A rank whose share is empty gets an empty batch and still takes part in the step.
    """
    data.epoch = epoch
    shares = [b[d.rank::d.world] for b in global_batches(data, epoch, cfg, balanced)]
    loader = DataLoader(data, batch_sampler=shares, collate_fn=data.collate,
                        num_workers=workers, prefetch_factor=4 if workers else None,
                        worker_init_fn=worker_init() if workers else None)
    return loader if workers else Prefetcher(loader)


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer,
                loader: DataLoader | Prefetcher,
                pose: list[int], cfg: TrainConfig, epoch: int, actors: list[int],
                d: Dist = SINGLE, banks: BankReader | None = None,
                source: object = "features",
                loss_rows: list[list[int]] | None = None) -> list[float]:
    """One pass over ``loader``; the learning rate is set before every step.

    ``loss_rows[s]``: the rows of this rank's batch ``s`` that carry the loss (the drawn
    boxes of :class:`ClassBalanced`); None: every row.  ``actors[s]`` then counts the
    loss-bearing rows of the global batch.

    ``actors[s]`` is the number of boxes in global batch ``s``: each rank divides its
    summed loss by the global element count, so the gradients that DDP averages over
    ranks equal the single-process gradient of the whole batch.  ``banks`` gives bank
    heads their slots (randomly subsampled, seeded by (seed, epoch, step)).  A non-finite
    loss (on any rank) is an :class:`ArtifactError` naming ``source``, the epoch, the step
    and the batch's keyframes, raised before the step changes any weight.
    """
    train_mode(model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel)
               else model, cfg.train)
    losses = []
    steps = len(actors)
    bar = progress(loader, desc=f"train {cfg.head} epoch {epoch + 1}", unit="step", leave=False,
                   disable=not d.main)
    for s, (kfs, context, rois, valid, targets) in enumerate(bar):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch * steps + s, cfg, steps)
        elements = max(actors[s] * targets.shape[1], 1)
        slots = None
        if banks is not None:
            slots = banks.gather(kfs, np.random.default_rng([cfg.seed, epoch, s]))
            slots = tuple(t.to(d.device) for t in slots)
        if valid is not None:
            valid = valid.to(d.device)
        logits = model(context.to(d.device), rois.to(d.device), bank=slots, valid=valid)
        if loss_rows is not None:
            rows = torch.as_tensor(loss_rows[s], dtype=torch.long, device=logits.device)
            logits, targets = logits[rows], targets[rows.cpu()]               # (n, K)
        local = ava_loss(logits, targets.to(d.device), pose, reduction="sum")
        loss = local * (d.world / elements)
        if len(rois) == 0:   # no actors on this rank: zero gradients keep DDP's collectives
            loss = loss + 0.0 * sum(p.sum() for p in model.parameters())   # in step
        total = all_reduce_sum(local.item(), d) / elements   # every rank sees a NaN
        if not math.isfinite(total):
            raise ArtifactError(source, non_finite(total, epoch, s, kfs, context))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(total)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def non_finite(loss: float, epoch: int, step: int, kfs: list[Keyframe],
               context: torch.Tensor, shown: int = 6) -> str:
    """The one-line problem of a non-finite loss: where, and which keyframes (those whose
    features are non-finite, if any; else the whole batch)."""
    bad = ~torch.isfinite(context.flatten(1).float()).all(1) if len(context) else None
    suspects = [k for k, b in zip(kfs, bad.tolist(), strict=True) if b] \
        if bad is not None and bool(bad.any()) else list(kfs)
    what = "non-finite features in" if bad is not None and bool(bad.any()) else "batch of"
    names = ", ".join(f"{k.video}@{k.timestamp}" for k in suspects[:shown])
    more = f" (+{len(suspects) - shown} more)" if len(suspects) > shown else ""
    return (f"training loss is {loss} at epoch {epoch + 1}, step {step + 1} ({what} keyframes "
            f"{names}{more}); stopped, no model written")


def run(cfg: TrainConfig, features: str, detections: str | os.PathLike,
        annotations: str | os.PathLike, labelmap: str | os.PathLike, out: str | os.PathLike,
        val_annotations: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
        resume: bool = False, bank: str | None = None,
        val_excluded: str | os.PathLike | None = None) -> dict:
    """Train ``cfg.head`` and write the checkpoint ``out``; returns the final log row.

    ``val_excluded``: an excluded-timestamps CSV for the val mAP of the log (scored as
    ``eval --excluded`` scores it).

    Runs with ``torch.use_deterministic_algorithms`` (warnings only, where an op has no
    deterministic version): without it, two identical runs of ``acrn`` on the CPU with 2
    threads ended up to 0.2 apart in their weights (identical with 1 thread, or with the
    flag).  Our suspect, not isolated: the parallel ``index_put_`` with accumulate in the
    backward of the heads' indexing, which the flag makes serial.
    """
    d = distributed.setup()
    was = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(cfg, d, features, detections, annotations, labelmap, out,
                    val_annotations, log, resume, bank, val_excluded)
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        distributed.cleanup(d)


def _run(cfg: TrainConfig, d: Dist, features: str, detections: str | os.PathLike,
         annotations: str | os.PathLike, labelmap: str | os.PathLike, out: str | os.PathLike,
         val_annotations: str | os.PathLike | None, log: str | os.PathLike | None,
         resume: bool, bank: str | None,
         val_excluded: str | os.PathLike | None = None) -> dict:
    hparams = head_spec(cfg.head, cfg.hparams)     # before any file is read: a typo fails fast
    cfg.check()
    if val_excluded is not None and val_annotations is None:
        raise ArtifactError(val_excluded, "--val-excluded scores the val mAP: it goes with "
                                          "--val-annotations")
    torch.manual_seed(cfg.seed)
    lm = read_labelmap(labelmap)
    if d.main:
        tqdm.write(f"train: {softmax_notice(lm)}")
    store = FeatureStore(features)
    videos = store.videos()
    if not videos:
        raise ArtifactError(features, "feature store has no complete videos")
    spec = store.spec(videos[0])
    view = cfg.view or spec.views[0]
    for video in videos:
        if view not in (views := store.spec(video).views):
            raise ArtifactError(features, f"video '{video}' has no view '{view}' (train.view; "
                                          f"it has {', '.join(views)})")
    dets, _ = read_detections(detections)
    samples = gt_keyframes(store, read_annotations(annotations), dets, lm,
                           cfg.det_score_thr, cfg.match_iou)
    if not samples:
        raise ArtifactError(annotations, "no annotated keyframe has features in " + features)
    cache = FeatureCache(store, view, in_memory=False, time=reads_time(cfg.head))
    in_memory = cfg.cache == "memory" or (
        cfg.cache == "auto"
        and cache.nbytes(sorted({k.video for k in samples})) < cfg.cache_max_gb * 2**30)
    cache.in_memory = in_memory
    cache.open(sorted({k.video for k in samples}))
    data = TrainKeyframes(samples, cache, cfg.jitter, cfg.seed)
    head = build_head(cfg.head, spec.channels, lm.num_classes, **hparams).to(d.device)
    if cfg.init:
        init_from(head, cfg.init, every=cfg.train == "classifier")
    banks = open_bank(bank, head, spec.to_dict(), in_memory)   # None: head reads no bank
    opt = torch.optim.SGD(trainable(head, cfg.train), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    balanced = ClassBalanced(samples) if cfg.sampler == "class-balanced" else None
    steps_per_epoch = math.ceil(len(balanced or samples) / cfg.batch_size)
    log = Path(log) if log else Path(str(out) + ".log.csv")
    partial_log = Path(str(log) + ".partial")
    rows: list[dict] = []
    start_epoch = 0
    partial = partial_path(out)
    source = partial if partial.exists() else Path(out)
    if resume and source.exists():                 # an unfinished run, or a finished one
        ckpt = load_checkpoint(source, unfinished=True)
        state = ckpt.get("train", {})
        if state.get("config") == asdict(cfg):
            head.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, rows = state["epoch"], state.get("log", [])
        else:
            tqdm.write(f"resume: {source} was made with other settings; starting over")
    pose = lm.pose_indices
    model = head
    if d.active:   # same initial weights on every rank: seeded above, and DDP broadcasts
        model = torch.nn.parallel.DistributedDataParallel(
            head, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    validate = None
    if val_annotations is not None and d.main:
        validate = Validator(store, dets, val_annotations, lm, view, bank=banks,
                             excluded=val_excluded, time=reads_time(cfg.head))
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        loader = epoch_loader(data, epoch, cfg, 0 if in_memory else cfg.num_workers, d,
                              balanced)
        loss_rows = None
        if balanced is None:
            actors = [sum(len(samples[i].boxes) for i in b)
                      for b in global_batches(data, epoch, cfg)]
        else:                                 # one loss-bearing box per draw
            draws = balanced.batches(epoch, cfg)
            actors = [len(b) for b in draws]
            loss_rows = [balanced.loss_rows(b[d.rank::d.world]) for b in draws]
        losses = train_epoch(model, opt, loader, pose, cfg, epoch, actors, d, banks, features,
                             loss_rows)
        if not d.main:
            distributed.barrier(d)          # rank 0 validates and writes
            continue
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
               "lr": opt.param_groups[0]["lr"], "loss": float(np.mean(losses)), "val_mAP": ""}
        ckpt = {"head": cfg.head, "hparams": hparams, "in_channels": spec.channels,
                "num_classes": lm.num_classes, "labelmap": lm.to_dict(),
                "feature_spec": {**spec.to_dict(), "train_view": view},
                "state_dict": head.state_dict(),
                "bank": head.bank_request and head.bank_request.to_dict()}
        if validate is not None and ((epoch + 1) % cfg.val_every == 0
                                     or epoch + 1 == cfg.epochs):
            row["val_mAP"] = validate(head)["mAP"]
        rows.append(row)
        tqdm.write(f"epoch {row['epoch']}: loss {row['loss']:.4f}"
                   + (f" val mAP {row['val_mAP']:.4f}" if row["val_mAP"] != "" else ""))
        done = epoch + 1 == cfg.epochs
        ckpt["train"] = {"config": asdict(cfg), "epoch": epoch + 1, "log": rows,
                         "optimizer": opt.state_dict(), "complete": done}
        save_checkpoint(ckpt, out if done else partial)   # out: finished models only
        _write_log(rows, log if done else partial_log)    # ...and the log of one
        if done:
            partial.unlink(missing_ok=True)
            partial_log.unlink(missing_ok=True)
        distributed.barrier(d)
    if d.main and rows:
        last = rows[-1]
        tqdm.write(f"train: {cfg.head}, {last['epoch']} epochs, final loss {last['loss']:.4f}"
                   + (f", val mAP {last['val_mAP']:.4f}" if last["val_mAP"] != "" else "")
                   + f" -> {out} (log {log})")
    return rows[-1] if rows else {}


def _write_log(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
