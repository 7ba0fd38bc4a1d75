"""Slow, literal reference for AVA frame-mAP: the rules of the official ActivityNet
``get_ava_performance.py`` written out frame by frame with plain Python containers.

It is the oracle that :mod:`pipeline.ava_eval` is tested against, so it favours being
obviously right over being fast.  It follows the official code step by step:

1. frame key ``(video_id, int(timestamp))``; rows of classes outside the label map dropped;
2. GT: every row is pushed on a per-frame heap as ``(person_id, action, y1, x1, y2, x2)``
   (the official reader takes the 8th column as a score), then listed by descending first
   element, stably over the heap array;
3. predictions: per-frame min-heap of capacity 50 over ``(score, action, y1, x1, y2, x2)``;
   a row enters a full heap only if its score beats the minimum, evicting the smallest tuple;
4. excluded frames dropped; predictions with ``x1 >= x2`` or ``y1 >= y2`` removed;
5. per frame and class, predictions in descending score take their max-IoU GT box
   (``argmax``: first maximum, NaN wins) and are TPs iff IoU >= 0.5 and it is unmatched;
6. VOC all-point AP per class with GT; mAP is the mean over classes with GT.

Where the official result depends on orders that vary (equal scores), the documented rules of
:mod:`pipeline.ava_eval` are used: equal-score predictions of a frame in file order (the heap
tuples carry the file position as a last element, which only separates identical rows), and
for AP equal scores ranked later-in-concatenation first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

CAPACITY = 50
THRESHOLD = 0.5


def _key(video_id, timestamp) -> tuple[str, int]:
    return str(video_id), int(timestamp)


def _iou(a: tuple, b: tuple) -> float:
    """IoU of two (y1, x1, y2, x2) boxes, no +1, float64 arithmetic as numpy does it."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union == 0:
        return math.nan if inter == 0 else math.copysign(math.inf, inter)
    return inter / union


def _argmax(values: list[float]) -> int:
    """``np.argmax``: index of the first NaN if any, else of the first maximum."""
    for i, v in enumerate(values):
        if math.isnan(v):
            return i
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _voc_ap(ranked_tp: list[bool], num_gt: int) -> float:
    if not ranked_tp:
        return 0.0
    precision, recall, tp = [], [], 0
    for k, is_tp in enumerate(ranked_tp, start=1):
        tp += is_tp
        precision.append(tp / k)
        recall.append(tp / num_gt)
    recall = [0.0, *recall, 1.0]
    precision = [0.0, *precision, 0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i]
               for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def reference_frame_map(gt_rows: Iterable[tuple], pred_rows: Iterable[tuple],
                        label_ids: Iterable[int], excluded_rows: Iterable[tuple] = ()
                        ) -> tuple[float, dict[int, float], dict[int, int]]:
    """mAP, ``{action_id: AP}`` (NaN without GT) and ``{action_id: num_gt}``.

    ``gt_rows``: ``(video_id, timestamp, x1, y1, x2, y2, action_id, person_id)``;
    ``pred_rows``: ``(video_id, timestamp, x1, y1, x2, y2, action_id, score)``;
    ``excluded_rows``: ``(video_id, timestamp)``.  Timestamps may be strings ("0902").
    """
    label_ids = list(label_ids)
    whitelist = set(label_ids)
    excluded = {_key(v, t) for v, t in excluded_rows}

    gt_heaps: dict[tuple, list] = {}
    for i, (v, t, x1, y1, x2, y2, a, pid) in enumerate(gt_rows):
        if int(a) not in whitelist:
            continue
        heapq.heappush(gt_heaps.setdefault(_key(v, t), []),
                       (float(pid), int(a), float(y1), float(x1), float(y2), float(x2), i))
    gt_boxes = {k: sorted(h, key=lambda e: -e[0]) for k, h in gt_heaps.items()}

    pred_heaps: dict[tuple, list] = {}  # dict order: first appearance, as officially
    for i, (v, t, x1, y1, x2, y2, a, s) in enumerate(pred_rows):
        if int(a) not in whitelist:
            continue
        heap = pred_heaps.setdefault(_key(v, t), [])
        item = (float(s), int(a), float(y1), float(x1), float(y2), float(x2), i)
        if len(heap) < CAPACITY:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)

    num_gt = dict.fromkeys(label_ids, 0)
    for k, boxes in gt_boxes.items():
        if k not in excluded:
            for e in boxes:
                num_gt[e[1]] += 1

    detections: dict[int, list] = {a: [] for a in label_ids}  # (score, concat position, tp)
    position = 0
    for k, heap in pred_heaps.items():
        if k in excluded:
            continue
        dets = sorted(heap, key=lambda e: (-e[0], e[6]))
        dets = [e for e in dets if e[2] < e[4] and e[3] < e[5]]
        gts = gt_boxes.get(k, [])
        for a in label_ids:
            class_gts = [e[2:6] for e in gts if e[1] == a]
            matched = [False] * len(class_gts)
            for e in dets:
                if e[1] != a:
                    continue
                tp = False
                if class_gts:
                    ious = [_iou(e[2:6], g) for g in class_gts]
                    j = _argmax(ious)
                    if ious[j] >= THRESHOLD and not matched[j]:
                        tp, matched[j] = True, True
                detections[a].append((e[0], position, tp))
                position += 1

    aps: dict[int, float] = {}
    for a in label_ids:
        if num_gt[a] == 0:
            aps[a] = math.nan
            continue
        ranked = sorted(detections[a], key=lambda d: (d[0], d[1]), reverse=True)
        aps[a] = _voc_ap([d[2] for d in ranked], num_gt[a])
    valid = [ap for ap in aps.values() if not math.isnan(ap)]
    return (sum(valid) / len(valid) if valid else math.nan), aps, num_gt
