"""Why acfb does or does not read `alerted` (past scene context): issue 18 item 3.

Runs on one seed's work directory of ``bench/world.py`` (its world, features, acfb bank and
the trained acar / acfb / acfb_t checkpoints) and measures, on the val split, each candidate:

``coverage``     does the flash enter the bank at all: for each alerted person-keyframe,
                 whether its bank window (as the reader gathers it: window, max_per_step,
                 without t) holds a map of a second whose clip shows the lamp lit; slots
                 per keyframe.
``probe``        does hoghof encode the lamp, and do acar's banked first-order maps still
                 do: logistic probes (train videos -> val videos) for "the lamp flashes in
                 the clip of second s", on the raw context map, on a banked map, and on a
                 banked map mean-pooled over space (what the classifier's AvgPool keeps).
``order_blind``  the best AP on `alerted` of a reader that knows perfectly, per second,
                 whether the lamp flashed, but not when relative to t (the paper's bank is
                 a set): the empirical P(alerted | lit in the clip, lit at a banked second,
                 i on screen then) of the train split, scored on val; and the same with the
                 sign of the time (past / future) known.
``ablation``     per-class AP of each acfb checkpoint with its bank and with every slot
                 masked (does the trained head use the bank at all).
``attention``    the attention weight the HR2O blocks put on the slots of lit seconds in
                 [t-9, t-3], against those slots' share of the real slots (uniform weight).

    uv run python bench/acfb_probe.py --work /tmp/h18_world/seed0 --seed 0 --tag _h18

Writes bench/results/acfb_probe<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline import evaluate, synth
from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.banks import BankStore
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.artifacts.detections import read_detections
from pipeline.artifacts.features import FeatureStore
from pipeline.bank_reader import BankReader
from pipeline.config import load_config
from pipeline.inference import load_head, test_keyframes
from pipeline.keyframes import FeatureCache, batch
from pipeline.models import hr2o

RESULTS = Path(__file__).parent / "results"


def scenes(cfg: synth.SynthConfig) -> dict[str, synth.Scene]:
    """The scripted scenes of ``synth.run(cfg)``, by video id (its random stream replayed:
    a script, then the two seeds ``_render_video`` draws)."""
    rng = np.random.default_rng(cfg.seed)
    out = {}
    for split, n in (("train", cfg.num_train), ("val", cfg.num_val)):
        for i in range(n):
            vid = f"{split}_{i:03d}"
            out[vid] = synth._script(rng, cfg, synth._alarm_rng(cfg, vid))
            rng.integers(1 << 62)
            rng.integers(1 << 62)
    return out


def lit_in_clip(sc: synth.Scene, s: int, fps: int) -> bool:
    """The lamp is lit in a sampled frame of the 2-s clip around second s (8 frames, every
    2nd, centred on s: frames s*fps - 8 .. s*fps + 6)."""
    f = s * fps
    frames = [g for g in range(f - fps, f + fps, 2) if 0 <= g < len(sc.lamp_lit)]
    return bool(sc.lamp_lit[frames].any())


def person_of(sc: synth.Scene, box: np.ndarray, f: int, cfg: synth.SynthConfig) -> int:
    """The scene person whose box at frame f is nearest to ``box`` (normalised)."""
    best, arg = np.inf, -1
    for k, p in enumerate(sc.people):
        if not p.visible[f]:
            continue
        x1, y1, x2, y2 = synth.box_of(sc, p, f)
        b = np.clip(np.array([x1 / cfg.width, y1 / cfg.height, x2 / cfg.width,
                              y2 / cfg.height]), 0, 1)
        d = float(np.abs(b - box).sum())
        if d < best:
            best, arg = d, k
    return arg


def coverage(work: Path, cfg, scs, request, gt) -> dict:
    reader = BankReader(str(work / "acfb.zarr"), request)
    pos = gt[gt.action_id == synth.ALERTED].drop_duplicates(["video_id", "timestamp"])
    n_slots, covered, n = [], 0, 0
    for video, t in zip(pos.video_id, pos.timestamp, strict=True):
        vb = reader.video(video)
        rows = reader.rows(video, int(t))
        secs = set(vb.actor_timestamps[rows].tolist())
        n += 1
        covered += any(lit_in_clip(scs[video], s, cfg.fps) and t - 9 <= s <= t - 3
                       for s in secs)
    for video in sorted(set(gt.video_id)):
        vb = reader.video(video)
        for t in vb.timestamps:
            n_slots.append(len(reader.rows(video, int(t))))
    return {"alerted_keyframes": n, "with_a_lit_banked_second_in_t-9..t-3": covered,
            "share": covered / max(n, 1), "slots_per_keyframe_mean": float(np.mean(n_slots)),
            "slots_per_keyframe_max": int(np.max(n_slots)),
            "window": request.window, "max_per_step": request.max_per_step}


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """AP of a ranking: the mean precision at each positive (ties broken by order)."""
    y = np.asarray(y, bool)[np.argsort(-np.asarray(score), kind="stable")]
    if not y.any():
        return float("nan")
    hits = np.cumsum(y)
    return float(np.mean(hits[y] / (np.flatnonzero(y) + 1)))


def _fit_ap(xtr, ytr, xva, yva, l2: float = 1e-3) -> float:
    """A logistic probe (standardised inputs, class-balanced, L2, full-batch L-BFGS)
    trained on (xtr, ytr), its AP on (xva, yva)."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    x = torch.from_numpy((xtr - mu) / sd).float()
    y = torch.from_numpy(ytr.astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    pos = float(y.mean())
    weight = torch.where(y > 0, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            x @ w + b, y, weight=weight) + l2 * (w ** 2).sum())
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        score = torch.from_numpy((xva - mu) / sd).float() @ w + b
    return average_precision(yva, score.numpy())


def probe(work: Path, cfg, scs, banked: bool = True) -> dict:
    store = FeatureStore(str(work / "features.zarr"))
    bank = BankStore(str(work / "acfb.zarr")) if banked else None
    raw = {"train": ([], []), "val": ([], [])}
    maps = {"train": ([], []), "val": ([], [])}
    for video in store.videos():
        split = video.split("_")[0]
        sc = scs[video]
        view = store.spec(video).views[0]
        ctx = np.asarray(store.group(video)[view][:], np.float32)        # (K, C, 1?, H, W)
        for k, t in enumerate(store.timestamps(video)):
            raw[split][0].append(ctx[k].reshape(-1))
            raw[split][1].append(lit_in_clip(sc, int(t), cfg.fps))
        if bank is None:
            continue
        vb = bank.read_video(video)
        for r in range(len(vb.actor_timestamps)):
            maps[split][0].append(np.asarray(vb.data[r], np.float32))
            maps[split][1].append(lit_in_clip(sc, int(vb.actor_timestamps[r]), cfg.fps))
    out = {}
    for name, d, fn in (("raw hoghof context map (C*H*W)", raw, lambda x: x),
                        ("banked first-order map (d*h*w)", maps, lambda x: x.reshape(len(x), -1)),
                        ("banked map, mean over space (d)", maps, lambda x: x.mean((2, 3)))):
        if not d["train"][0]:
            continue
        xtr, ytr = fn(np.stack(d["train"][0])), np.array(d["train"][1])
        xva, yva = fn(np.stack(d["val"][0])), np.array(d["val"][1])
        t0 = time.perf_counter()
        out[name] = {"val_AP": _fit_ap(xtr, ytr, xva, yva), "positives_val": int(yva.sum()),
                     "n_val": len(yva), "chance": float(yva.mean()), "dims": xtr.shape[1],
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def order_blind(cfg, scs, gt_tr, gt_va) -> dict:
    """Oracle features of a person-keyframe, from the scene: (lit in the clip, lit at a
    banked second (|s - t| <= 10, s != t), i on screen at such a second), and the same
    split into past / future seconds."""
    def feats(video, t, pid):
        sc, p = scs[video], scs[video].people[pid]
        now = lit_in_clip(sc, t, cfg.fps)
        secs = [s for s in range(max(1, t - 10), min(cfg.duration, t + 11)) if s != t]
        lit = [s for s in secs if lit_in_clip(sc, s, cfg.fps)]
        seen = [s for s in lit if p.visible[s * cfg.fps]]
        blind = (now, bool(lit), bool(seen))
        signed = (now, any(s < t for s in seen), any(s > t for s in seen),
                  any(t - 9 <= s <= t - 3 for s in seen))
        return blind, signed

    def table(gt):
        rows = []
        for (video, t, pid), g in gt.groupby(["video_id", "timestamp", "person_id"]):
            rows.append((*feats(video, int(t), int(pid)), synth.ALERTED in set(g.action_id)))
        return rows

    tr, va = table(gt_tr), table(gt_va)
    out = {}
    for j, name in ((0, "order-blind (lit now, lit in the bank, i there then)"),
                    (1, "signed (+ past / future, + in t-9..t-3)")):
        rate: dict = {}
        for r in tr:
            rate.setdefault(r[j], []).append(r[2])
        prior = float(np.mean([r[2] for r in tr]))
        score = np.array([np.mean(rate[r[j]]) if r[j] in rate else prior for r in va])
        y = np.array([r[2] for r in va])
        out[name] = float(average_precision(y, score + 1e-9 * np.arange(len(y))[::-1]))
    out["val_prevalence"] = float(np.mean([r[2] for r in va]))
    return out


class _Masked(BankReader):
    """Every slot masked: the head sees an empty bank."""

    def gather(self, keyframes, rng=None, flip=False):
        out = list(super().gather(keyframes, rng, flip))
        out[1] = torch.zeros_like(out[1])
        if self.request.scene:                  # (.., scene, scene_mask, scene_times)
            out[-2] = torch.zeros_like(out[-2])
        return tuple(out)


def bank_of(work: Path, head: str) -> str:
    """The bank bench/world.py trained ``head`` with."""
    scene = load_checkpoint(work / f"{head}.pt")["hparams"].get("scene")
    return str(work / ("acfb_scene.zarr" if scene else "acfb.zarr"))


def ablation(work: Path, params: str, heads: list[str]) -> dict:
    import pipeline.bank_reader as br

    world = work / "synth"
    cfg = load_config(evaluate.EvalConfig, "eval", params)
    out = {}
    for head in heads:
        if not (work / f"{head}.pt").exists():
            continue
        res = {}
        for name, cls in (("with bank", BankReader), ("bank masked", _Masked)):
            br.BankReader = cls
            try:
                m = evaluate.run(cfg, work / f"{head}.pt", str(work / "features.zarr"),
                                 work / "detections.parquet", world / "val.csv",
                                 world / "labelmap.pbtxt", work / f"probe_{head}_{name[:4]}.json",
                                 work / f"probe_{head}_{name[:4]}.csv",
                                 excluded=world / "excluded.csv", bank=bank_of(work, head))
            finally:
                br.BankReader = BankReader
            res[name] = {c["name"]: c["ap"] for c in m["per_class"].values()
                         if c["name"] in ("wait", "alerted")} | {"mAP": m["mAP"]}
        out[head] = res
    return out


def attention(work: Path, cfg, scs, head_name: str) -> dict:
    """Mean attention weight (over blocks, locations, actors) on the slots of seconds in
    [t-9, t-3] whose clip shows the lamp lit, for alerted actors, against those slots'
    share of the real slots."""
    ckpt = load_checkpoint(work / f"{head_name}.pt")
    head = load_head(ckpt, work / f"{head_name}.pt").eval()
    reader = BankReader(bank_of(work, head_name), head.bank_request)
    store = FeatureStore(str(work / "features.zarr"))
    dets, _ = read_detections(work / "detections.parquet")
    gt = read_annotations(work / "synth" / "val.csv")
    alerted = {(v, int(t), int(p)) for v, t, p in
               gt[gt.action_id == synth.ALERTED][["video_id", "timestamp", "person_id"]].values}
    videos = sorted(set(gt.video_id) & set(store.videos()))
    kfs = test_keyframes(store, dets, videos)
    cache = FeatureCache(store, store.spec(videos[0]).views[0])
    captured: list = []
    real = hr2o.masked_softmax

    def spy(scores, keep, dim):
        att = real(scores, keep, dim)
        captured.append(att.detach())
        return att
    hr2o.masked_softmax = spy
    mass, share, scene_mass, scene_share = [], [], [], []
    try:
        with torch.no_grad():
            for s in range(0, len(kfs), 16):
                chunk = kfs[s:s + 16]
                slots = reader.gather(chunk)
                captured.clear()
                head(*batch(chunk, cache)[:2], bank=slots, valid=batch(chunk, cache)[2])
                for b, k in enumerate(chunk):
                    vb = reader.video(k.video)
                    rows = reader.rows(k.video, k.timestamp)
                    secs = vb.actor_timestamps[rows]
                    good = np.array([lit_in_clip(scs[k.video], int(x), cfg.fps)
                                     and k.timestamp - 9 <= x <= k.timestamp - 3 for x in secs])
                    if not good.any():
                        continue
                    m = len(k.boxes)
                    for a in range(m):
                        pid = person_of(scs[k.video], k.boxes[a], k.timestamp * cfg.fps, cfg)
                        if (k.video, k.timestamp, pid) not in alerted:
                            continue
                        # att (B, M, M_max + S (+ T), h, w): live actors, slots, scene
                        S = slots[0].shape[1]
                        T = slots[-3].shape[1] if head.bank_request.scene else 0
                        live = captured[0].shape[2] - S - T
                        w = torch.stack([att[b, a, live:].mean((-2, -1)) for att in captured]
                                        ).mean(0).numpy()                     # (S + T,)
                        wa = w[:len(rows)]
                        mass.append(float(wa[good].sum() / max(wa.sum(), 1e-9)))
                        share.append(float(good.mean()))
                        if T:
                            n = int(slots[-2][b].sum())
                            st = k.timestamp + slots[-1][b, :n].numpy()
                            g2 = np.array([lit_in_clip(scs[k.video], int(x), cfg.fps)
                                           and k.timestamp - 9 <= x <= k.timestamp - 3
                                           for x in st])
                            ws = w[S:S + n]
                            scene_mass.append(float(ws[g2].sum() / max(w.sum(), 1e-9)))
                            scene_share.append(float(g2.sum() / (len(rows) + n)))
    finally:
        hr2o.masked_softmax = real
    extra = {} if not scene_mass else {
        "attention on lit past scene slots (share of all the bank's weight)":
            float(np.mean(scene_mass)),
        "their share of all slots": float(np.mean(scene_share))}
    return {**extra, "alerted_actors": len(mass),
            "attention_on_lit_past_slots (share of the bank's weight)": float(np.mean(mass)),
            "their share of the slots (uniform weight)": float(np.mean(share)),
            "ratio": float(np.mean(mass) / max(np.mean(share), 1e-9))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="one seed's directory of bench/world.py")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--tag", default="")
    ap.add_argument("--skip", nargs="*", default=[], help="measurements to skip")
    args = ap.parse_args()
    work = Path(args.work)
    cfg = load_config(synth.SynthConfig, "synth", args.params, {"seed": args.seed})
    scs = scenes(cfg)
    gt_tr = read_annotations(work / "synth" / "train.csv")
    gt_va = read_annotations(work / "synth" / "val.csv")
    # the replay is right: the scenes' own labels match the CSV's (label noise: 3%)
    agree = [synth.ALERTED in synth.labels_at(scs[v], int(p), int(t) * cfg.fps, cfg.fps)
             for v, t, p in gt_va[gt_va.action_id == synth.ALERTED]
             [["video_id", "timestamp", "person_id"]].values]
    out: dict = {"seed": args.seed, "replay_agreement": float(np.mean(agree))}
    assert out["replay_agreement"] > 0.9, out
    def request():            # the paper's acfb of --params (window, no per-second cap)
        from pipeline.models import build_head
        hp = yaml.safe_load(Path(args.params).read_text())["heads"]["acfb"]["hparams"]
        return build_head("acfb", 1, 1, **hp).bank_request
    steps = {"coverage": lambda: coverage(work, cfg, scs, request(), gt_va),
             "order_blind": lambda: order_blind(cfg, scs, gt_tr, gt_va),
             "ablation": lambda: ablation(work, args.params, ["acfb", "acfb_t", "acfb_s"]),
             "attention": lambda: {h: attention(work, cfg, scs, h)
                                   for h in ("acfb", "acfb_t", "acfb_s")
                                   if (work / f"{h}.pt").exists()},
             "probe": lambda: probe(work, cfg, scs),
             "probe_raw": lambda: probe(work, cfg, scs, banked=False)}
    for name, fn in steps.items():
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        out[name] = fn()
        print(name, json.dumps(out[name], indent=1), f"({time.perf_counter() - t0:.0f} s)",
              flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"acfb_probe{args.tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
