"""Benchmark of the AVA frame-mAP evaluator on an AVA-val-sized synthetic case.

Generates (seeded, cached) a ground-truth CSV, an excluded-timestamps CSV, AVA's 60-class
label map and a predictions CSV shaped like a real submission (every class scored for every
predicted person box; distinct scores unless ``--scores rounded``), then runs
``acar eval --predictions ...`` (the scoring path: no model, no torch, no pandas) as a
subprocess and, in the same run on the same files, the official ActivityNet evaluator;
records wall and CPU seconds, peak RSS (``ru_maxrss`` of each child, what
``/usr/bin/time -v`` reports), the speed ratio and whether every AP is identical, in
``bench/results/eval.json``.

The official evaluator is not ours to ship.  Get it (ActivityNet at 3fee089, the 2019
version with excluded timestamps) and point ``--official`` at its ``Evaluation`` folder::

    git clone https://github.com/activitynet/ActivityNet /tmp/ActivityNet
    git -C /tmp/ActivityNet checkout 3fee089
    .venv/bin/python bench/eval.py --official /tmp/ActivityNet/Evaluation

It is Python-2-era code (``np.float``, implicit relative imports): it runs in a scratch
environment, a venv made once (untimed) with ``uv venv --python 3.11`` and
``uv pip install 'numpy<1.24'`` under the bench cache (``--official-python`` gives an
interpreter instead), with ``Evaluation/ava`` on ``PYTHONPATH``.

    .venv/bin/python bench/eval.py --official DIR   # full size: 57,408 frames, 8.6M rows
    .venv/bin/python bench/eval.py --scale 0.05     # quick check, acar only
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "eval.json"
TIME = "/usr/bin/time"  # GNU time: the peak RSS of the command alone
ACAR = "import sys; from cli.main import main; sys.argv[0] = 'acar'; main()"  # `acar ...`

# AVA v2.2 evaluation classes (ava_action_list_v2.2_for_activitynet_2019): id -> name.
AVA60 = {
    1: "bend/bow (at the waist)", 3: "crouch/kneel", 4: "dance", 5: "fall down", 6: "get up",
    7: "jump/leap", 8: "lie/sleep", 9: "martial art", 10: "run/jog", 11: "sit", 12: "stand",
    13: "swim", 14: "walk", 15: "answer phone", 17: "carry/hold (an object)", 20: "climb",
    22: "close (e.g., a door, a box)", 24: "cut", 26: "dress/put on clothing", 27: "drink",
    28: "drive (e.g., a car, a truck)", 29: "eat", 30: "enter", 34: "hit (an object)",
    36: "lift/pick up", 37: "listen (e.g., to music)", 38: "open (e.g., a window, a car door)",
    41: "play musical instrument", 43: "point to (an object)", 45: "pull (an object)",
    46: "push (an object)", 47: "put down", 48: "read", 49: "ride (e.g., a bike, a horse)",
    51: "sail boat", 52: "shoot", 54: "smoke", 56: "take a photo",
    57: "text on/look at a cellphone", 58: "throw", 59: "touch (an object)",
    60: "turn (e.g., a screwdriver)", 61: "watch (e.g., TV)",
    62: "work on a computer", 63: "write", 64: "fight/hit (a person)",
    65: "give/serve (an object) to (a person)", 66: "grab (a person)", 67: "hand clap",
    68: "hand shake", 69: "hand wave", 70: "hug (a person)", 72: "kiss (a person)",
    73: "lift (a person)", 74: "listen to (a person)", 76: "push (another person)",
    77: "sing to (e.g., self, a person, a group)", 78: "take (an object) from (a person)",
    79: "talk to (e.g., self, a person, a group)", 80: "watch (a person)",
}
POSE_IDS = [a for a in AVA60 if a <= 14]
OTHER_IDS = [a for a in AVA60 if a > 14]
KEYFRAMES = np.arange(902, 1799)  # 897 keyframes per video, as in AVA


def _labelmap_text() -> str:
    return "".join(f'item {{\n  name: "{n}"\n  id: {a}\n}}\n' for a, n in AVA60.items())


def _zipf_p(n: int, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** 1.1
    return rng.permutation(p / p.sum())


def _write(path: Path, columns: dict[str, np.ndarray]) -> None:
    table = pa.table(columns)
    opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    pacsv.write_csv(table, path, opts)


def generate(out: Path, scale: float = 1.0, seed: int = 0,
             distinct: bool = True) -> dict[str, Path]:
    """Write gt.csv, excluded.csv, labelmap.pbtxt and pred.csv under ``out`` (cached).
    ``distinct``: every score distinct (the random scores' ranks, as 7-decimal numbers), the
    case on which the official result does not depend on its sort's tie order; else the
    scores rounded to 6 decimals (many ties)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in [("annotations", "gt.csv"), ("excluded", "excluded.csv"),
                                     ("labelmap", "labelmap.pbtxt"), ("predictions", "pred.csv")]}
    done = out / "DONE"
    if done.exists():
        return paths
    rng = np.random.default_rng(seed)
    n_videos = max(1, round(64 * scale))
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    videos = np.array(["".join(rng.choice(alphabet, 11)) for _ in range(n_videos)])
    frame_video = np.repeat(np.arange(n_videos), len(KEYFRAMES))
    frame_ts = np.tile(KEYFRAMES, n_videos)
    n_frames = len(frame_video)

    # Ground truth: ~1.6 people per frame, each with one pose and ~1.5 other actions.
    people = 1 + rng.poisson(0.6, n_frames)
    p_frame = np.repeat(np.arange(n_frames), people)
    n_people = len(p_frame)
    cx, cy = rng.uniform(0.15, 0.85, n_people), rng.uniform(0.3, 0.7, n_people)
    w, h = rng.uniform(0.08, 0.3, n_people), rng.uniform(0.3, 0.6, n_people)
    boxes = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), 0, 1)
    boxes = np.round(boxes, 3)
    n_other = rng.poisson(1.5, n_people)
    pose = rng.choice(POSE_IDS, n_people, p=_zipf_p(len(POSE_IDS), rng))
    other = rng.choice(OTHER_IDS, n_other.sum(), p=_zipf_p(len(OTHER_IDS), rng))
    g_person = np.concatenate([np.arange(n_people), np.repeat(np.arange(n_people), n_other)])
    g_action = np.concatenate([pose, other])
    srt = np.argsort(g_person, kind="stable")
    g_person, g_action = g_person[srt], g_action[srt]
    g_frame = p_frame[g_person]
    gt = {
        "video_id": videos[frame_video[g_frame]],
        "timestamp": np.char.zfill(frame_ts[g_frame].astype(str), 4),
        "x1": boxes[g_person, 0], "y1": boxes[g_person, 1],
        "x2": boxes[g_person, 2], "y2": boxes[g_person, 3],
        "action_id": g_action,
        "person_id": g_person - np.searchsorted(p_frame, g_frame),
    }
    _write(paths["annotations"], gt)

    # Excluded timestamps: ~0.5% of frames.
    ex = np.flatnonzero(rng.random(n_frames) < 0.005)
    _write(paths["excluded"], {"video_id": videos[frame_video[ex]],
                               "timestamp": np.char.zfill(frame_ts[ex].astype(str), 4)})
    paths["labelmap"].write_text(_labelmap_text())

    # Predicted person boxes: 90% of people found (noisy box) plus ~1 false box per frame.
    found = rng.random(n_people) < 0.9
    tp_box = boxes[found] + rng.normal(0, 0.02, (found.sum(), 4))
    n_false = rng.poisson(1.06, n_frames)
    fcx, fcy = rng.uniform(0.1, 0.9, n_false.sum()), rng.uniform(0.2, 0.8, n_false.sum())
    fw, fh = rng.uniform(0.05, 0.3, n_false.sum()), rng.uniform(0.2, 0.6, n_false.sum())
    fp_box = np.stack([fcx - fw / 2, fcy - fh / 2, fcx + fw / 2, fcy + fh / 2], 1)
    d_box = np.round(np.clip(np.concatenate([tp_box, fp_box]), 0, 1), 3)
    d_frame = np.concatenate([p_frame[found], np.repeat(np.arange(n_frames), n_false)])
    d_person = np.concatenate([np.flatnonzero(found), np.full(n_false.sum(), -1)])
    srt = np.argsort(d_frame, kind="stable")
    d_box, d_frame, d_person = d_box[srt], d_frame[srt], d_person[srt]
    n_det, ids = len(d_frame), np.array(list(AVA60))
    # Scores: low background scores, boosted for the person's true actions.
    score = rng.beta(0.6, 8.0, (n_det, len(ids)))
    col = {a: i for i, a in enumerate(ids)}
    true_det = np.flatnonzero(d_person >= 0)
    lookup = {}
    for p, a in zip(g_person.tolist(), g_action.tolist(), strict=True):
        lookup.setdefault(p, []).append(col[a])
    rows = [(i, c) for i in true_det.tolist() for c in lookup[int(d_person[i])]]
    if rows:
        r = np.array(rows)
        score[r[:, 0], r[:, 1]] = np.clip(rng.beta(4.0, 2.5, len(r)), 0, 1)
    if distinct:  # same order, ties broken at random, values k * 1e-7 (k < 10**7)
        flat = score.ravel()
        rank = np.empty(len(flat), dtype=np.int64)
        rank[np.lexsort((rng.random(len(flat)), flat))] = np.arange(1, len(flat) + 1)
        if len(flat) >= 10**7:
            raise SystemExit("--scores distinct needs fewer than 10**7 prediction rows")
        score = np.round(rank * 1e-7, 7).reshape(score.shape)
    else:
        score = np.round(score, 6)
    rep = np.repeat(np.arange(n_det), len(ids))
    pred = {
        "video_id": videos[frame_video[d_frame[rep]]],
        "timestamp": np.char.zfill(frame_ts[d_frame[rep]].astype(str), 4),
        "x1": d_box[rep, 0], "y1": d_box[rep, 1], "x2": d_box[rep, 2], "y2": d_box[rep, 3],
        "action_id": np.tile(ids, n_det),
        "score": score.ravel(),
    }
    _write(paths["predictions"], pred)
    done.write_text(json.dumps({"scale": scale, "seed": seed, "distinct_scores": distinct,
                                "gt_rows": len(g_frame),
                                "pred_rows": len(rep), "frames": n_frames}))
    return paths


def _official_python(given: str | None, cache: Path) -> str:
    """The interpreter of the official evaluator's scratch environment: a venv under the
    bench cache with numpy<1.24, made once with uv (untimed)."""
    if given:
        return given
    env = cache / "official-env"
    python = env / "bin" / "python"
    if not python.exists():
        subprocess.run(["uv", "venv", "--python", "3.11", str(env)], check=True)
        subprocess.run(["uv", "pip", "install", "--python", str(python), "numpy<1.24"],
                       check=True)
    return str(python)


def _official_command(evaluation: Path, python: str, paths: dict[str, Path]) -> list[str]:
    return [python, "-O", str(evaluation / "get_ava_performance.py"),
            "-l", str(paths["labelmap"]), "-g", str(paths["annotations"]),
            "-e", str(paths["excluded"]), "-d", str(paths["predictions"])]


def _official_metrics(stdout: str) -> dict:
    """The dict the official evaluator pprints (``nan`` read as None)."""
    text = stdout[stdout.index("{"):stdout.rindex("}") + 1]
    return ast.literal_eval(text.replace("nan", "None"))


def _compare(acar: dict, official: dict) -> dict:
    """Every AP and the mAP, acar against the official: identical floats?"""
    prefix = "PascalBoxes_PerformanceByCategory/AP@0.5IOU/"
    theirs = {k[len(prefix):]: v for k, v in official.items() if k.startswith(prefix)}
    ours = {c["name"]: c["ap"] for c in acar["per_class"].values()}  # see _read_metrics
    differ = {n: {"acar": ours.get(n), "official": theirs.get(n)}
              for n in sorted(set(ours) | set(theirs)) if ours.get(n) != theirs.get(n)}
    official_map = official["PascalBoxes_Precision/mAP@0.5IOU"]
    return {"official_mAP": official_map, "mAP_identical": acar["mAP"] == official_map,
            "classes_compared": len(theirs), "classes_differing": differ}


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
         ) -> tuple[float, float, float, str]:
    """Run ``cmd``; return (wall s, CPU s, peak RSS in MB of that child, its stdout).

    The peak RSS is ``/usr/bin/time -f %M``'s: a child forked from this process (which
    holds the generated case) would report this process's peak, not its own."""
    with tempfile.TemporaryFile() as log, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        t0 = time.perf_counter()
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", rss.name, *cmd], cwd=cwd,
                                stdout=log, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode()
        if proc.returncode:
            err.seek(0)
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                     f"{out}{err.read().decode()}")
        peak_kib = int(Path(rss.name).read_text().split()[-1])
    return wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 64 videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="official-2019", help="acar eval --mode")
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed acar runs (the best is reported; the official runs once)")
    ap.add_argument("--scores", choices=["distinct", "rounded"], default="distinct",
                    help="prediction scores: all distinct, or rounded to 6 decimals (ties)")
    ap.add_argument("--official", type=Path, default=None,
                    help="ActivityNet's Evaluation folder at 3fee089 (see the doc above)")
    ap.add_argument("--official-python", default=None,
                    help="interpreter for the official evaluator [a uv scratch env]")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "acar-bench" / "eval")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load0 = round(os.getloadavg()[0], 2)

    data_dir = args.cache / f"scale{args.scale:g}-seed{args.seed}-{args.scores}"
    t0 = time.perf_counter()
    paths = generate(data_dir, args.scale, args.seed, args.scores == "distinct")
    gen_s = time.perf_counter() - t0
    info = json.loads((data_dir / "DONE").read_text())

    # Environments that set PYTHONDONTWRITEBYTECODE over a venv installed without .pyc files
    # recompile pandas in every new interpreter (~3 s here); a normal install has the .pyc
    # files, so write them once (an untimed import), then time the evaluator.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _run([sys.executable, "-c", "import cli.main, pipeline.evaluate, pyarrow.csv, matplotlib"],
         env)
    import_s = _run([sys.executable, "-c", "import cli.main, pipeline.evaluate, pyarrow.csv"])[0]
    if args.official is not None:
        official_py = _official_python(args.official_python, args.cache)
        official_env = {**os.environ, "PYTHONPATH": str(args.official / "ava")}

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        metrics_path = Path(tmp) / "metrics.json"
        cmd = [sys.executable, "-c", ACAR, "eval", "--mode", args.mode,
               "--predictions", str(paths["predictions"]), "--annotations",
               str(paths["annotations"]), "--labelmap", str(paths["labelmap"]),
               "--excluded", str(paths["excluded"]), "--out", str(metrics_path)]
        for _ in range(max(1, args.repeat)):
            runs.append(_run(cmd)[:3])
        metrics = json.loads(metrics_path.read_text())
        # metrics.json is the summary; the per-class APs are in per_class.json beside it
        metrics["per_class"] = json.loads((Path(tmp) / "per_class.json").read_text())
    wall, cpu, peak_mb = min(runs)
    print(f"acar runs (wall s, CPU s, peak MB): {runs}; mAP {metrics['mAP']!r}",
          file=sys.stderr, flush=True)           # kept if the official run fails later

    if args.official is not None:
        ocmd = _official_command(args.official, official_py, paths)
        o_wall, o_cpu, o_mb, o_out = _run(ocmd, official_env, args.official)
        (data_dir / "official_stdout.txt").write_text(o_out)   # 40 min of output: keep it
        print(f"official: wall {o_wall:.1f} s, CPU {o_cpu:.1f} s, peak {o_mb:.0f} MB; stdout "
              f"in {data_dir / 'official_stdout.txt'}", file=sys.stderr, flush=True)
        official = {"command": " ".join(["python", *ocmd[1:]]),
                    "env": "uv venv --python 3.11 + uv pip install 'numpy<1.24'",
                    "wall_s": round(o_wall, 2), "cpu_s": round(o_cpu, 2),
                    "peak_rss_mb": round(o_mb, 1),
                    "speedup_wall": round(o_wall / wall, 1), "speedup_cpu": round(o_cpu / cpu, 1),
                    **_compare(metrics, _official_metrics(o_out))}
        print(f"official {o_wall:.1f} s, acar {wall:.2f} s: {o_wall / wall:.1f}x "
              f"(CPU {o_cpu / cpu:.1f}x); mAP identical: {official['mAP_identical']}, "
              f"classes differing: {len(official['classes_differing'])}", file=sys.stderr)
    else:
        official = "not run: give --official (see the doc at the top of bench/eval.py)"
    result = {
        "case": {**info, "pred_csv_mb": round(paths["predictions"].stat().st_size / 2**20, 1),
                 "data_dir": str(data_dir), "generate_s": round(gen_s, 2)},
        "command": " ".join(["acar", *cmd[3:-1], "<tmp>/metrics.json"]),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "runs": [{"wall_s": round(w, 3), "cpu_s": round(c, 3), "peak_rss_mb": round(m, 1)}
                 for w, c, m in runs],
        "python_import_s": round(import_s, 3),
        "mAP": metrics["mAP"],
        "official": official,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
                    "loadavg_1m_at_start": load0,
                    "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
