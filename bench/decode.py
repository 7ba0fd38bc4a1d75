"""decord 0.6.0 against its successors on PyPI, on the shared clips (issue 20 item 6).

For every candidate (a PyPI requirement whose module is ``decord``) this script runs
itself as a worker in a throwaway environment (``uv run --no-project --with CANDIDATE
--with av``), side by side in one run, and measures on each clip of ``../shared/videos``:

- frame identity with PyAV (rgb24): every frame, compared byte for byte (count of
  differing frames, largest absolute pixel difference); decord's frame count and the
  frame start times (largest difference to PyAV's, ms);
- decode speed, 1 thread, best of ``--repeats`` in each of ``--rounds`` runs of the
  candidates in turn: every frame in order (``get_batch`` of 16 at a time), and the
  pipeline's access pattern: 8 clips of 8 frames at stride 2 around evenly spaced
  keyframes (``get_batch`` per clip, seeking);
- small synthetic clips (32-160 px wide, as the toy world's): the frame shape decord
  returns, and whether PyAV (imported first) still encodes h264 once decord is imported
  (with ami-decord imported *before* av, PyAV lost libx264 in a manual check: not
  measured here);
- the installed wheel's tags (its ``.dist-info/WHEEL``): a tag that does not fit the
  interpreter (decord 0.6.0 says ``cp36-cp36m`` inside a file named ``py3-none``) makes
  ``uv run`` reinstall the package on every call.

It then times ``uv run true`` (``--uv-runs`` times) in the repository as it is and, with
``--compare-with DIR`` (another checkout with its own synced ``.venv``, e.g. the commit
before the switch), alternately in both, and records whether ``uv run`` reinstalled a
package and whether it ran its bytecode pass.  Writes bench/results/decode.json.

    nice -n 5 python3 bench/decode.py             # uv on PATH; about 20 minutes here
    git archive OLD | tar -x -C /tmp/old && (cd /tmp/old && uv sync --locked)
    nice -n 5 python3 bench/decode.py --compare-with /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "videos"
RESULTS = ROOT / "bench" / "results" / "decode.json"
CANDIDATES = ["decord==0.6.0", "decord2==3.4.0", "eva-decord==0.6.1", "ami-decord==0.6.0"]


# ---- the worker (runs inside the candidate's environment) --------------------------------

def _pyav_frames(path: Path):
    import av
    import numpy as np

    frames, times = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_count = 1
        for f in c.decode(stream):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time) if f.time is not None else float("nan"))
    return np.stack(frames), np.asarray(times)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


NARROW = [(w, h) for w in (32, 64, 96, 120, 160) for h in (64, 96)]


def _grey_clip(path: Path, w: int, h: int, n: int = 12) -> None:
    import av
    import numpy as np

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 * i, np.uint8), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _narrow(decord, tmp: Path) -> dict:
    """Frame shape of small synthetic clips (the toy world is 96-160 px wide): 'ok', or
    what came back instead of (h, w, 3).  The clips are in ``tmp`` already."""
    out = {}
    for w, h in NARROW:
        try:
            vr = decord.VideoReader(str(tmp / f"{w}x{h}.mp4"), num_threads=1)
            one = vr[3].asnumpy().shape
            vr.get_batch([0, 5, 9]).asnumpy()
            out[f"{w}x{h}"] = "ok" if one == (h, w, 3) else f"frame shape {one}"
        except Exception as err:  # noqa: BLE001 - decord's own error types
            out[f"{w}x{h}"] = f"{err.__class__.__name__}: {str(err)[-80:]}"
    return out


def _encodes() -> str:
    """Whether PyAV can still encode h264 (acar's write_video) once decord is imported: a
    decord that bundles libav* under their plain names can take PyAV's place."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _grey_clip(Path(tmp) / "x.mp4", 64, 64, 2)
            return "ok"
        except Exception as err:  # noqa: BLE001
            return f"{err.__class__.__name__}: {str(err)[:80]}"


def worker(requirement: str, repeats: int) -> dict:
    import importlib.metadata as md

    import numpy as np

    tmp = Path(tempfile.mkdtemp())
    for w, h in NARROW:               # written before decord is imported (see _encodes)
        _grey_clip(tmp / f"{w}x{h}.mp4", w, h)
    import decord

    dist = requirement.split("==")[0]
    wheel = md.distribution(dist).read_text("WHEEL") or ""
    out = {"requirement": requirement, "version": md.version(dist), "pyav": md.version("av"),
           "wheel_tags": [ln.split(":", 1)[1].strip() for ln in wheel.splitlines()
                          if ln.startswith("Tag:")],
           "python": platform.python_version(), "clips": {}}
    decord.logging.set_level(decord.logging.QUIET)
    out["narrow"] = _narrow(decord, tmp)
    out["pyav_encodes_after_import"] = _encodes()
    for path in sorted(VIDEOS.glob("*.mp4")):
        ref, ref_t = _pyav_frames(path)
        vr = decord.VideoReader(str(path), num_threads=1)
        n = min(len(vr), len(ref))
        frames = np.concatenate([vr.get_batch(list(range(s, min(s + 16, n)))).asnumpy()
                                 for s in range(0, n, 16)])
        diff = np.abs(frames.astype(np.int16) - ref[:n].astype(np.int16))
        stamps = np.asarray(vr.get_frame_timestamp(list(range(n))))[:, 0]

        def sequential(path=path, n=n):
            r = decord.VideoReader(str(path), num_threads=1)
            for s in range(0, n, 16):
                r.get_batch(list(range(s, min(s + 16, n)))).asnumpy()

        keyframes = np.linspace(0, n - 1, 10)[1:-1].astype(int)
        clips = [np.clip(k + np.arange(-8, 8, 2), 0, n - 1).tolist() for k in keyframes]

        def clip_access(path=path, clips=clips):
            r = decord.VideoReader(str(path), num_threads=1)
            for idx in clips:
                r.get_batch(idx).asnumpy()

        seq = _best(sequential, repeats)
        out["clips"][path.name] = {
            "frames_pyav": len(ref), "frames_decord": len(vr),
            "size": list(ref.shape[1:3]), "fps_decord": float(vr.get_avg_fps()),
            "frames_differing": int((diff.reshape(n, -1).max(1) > 0).sum()),
            "max_abs_pixel_diff": int(diff.max()),
            "max_start_time_diff_ms": float(np.nanmax(np.abs(stamps - ref_t[:n])) * 1e3),
            "sequential_s": round(seq, 4),
            "sequential_fps": round(n / seq, 1),
            "clip_access_s": round(_best(clip_access, repeats), 4),
        }
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- the driver --------------------------------------------------------------------------

def _uv_run(cwd: Path) -> dict:
    t = time.perf_counter()
    res = subprocess.run(["uv", "run", "-v", "true"], cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"uv run true failed in {cwd}: {res.stderr.strip()[-300:]}")
    lines = res.stderr.splitlines()
    return {"s": round(time.perf_counter() - t, 2),
            "reinstalled": [ln for ln in lines if ln.startswith(("Uninstalled", "Installed"))],
            "bytecode_pass": next((ln for ln in lines if ln.startswith("Bytecode compiled")),
                                  None),
            "mismatch": [ln.removeprefix("DEBUG ").strip() for ln in lines
                         if "mismatch for" in ln][:2]}


def _time_uv_runs(dirs: dict[str, Path], runs: int) -> dict:
    """``uv run true`` in each of ``dirs``, alternately, ``runs`` times each."""
    out: dict[str, dict] = {name: {"dir": str(d), "s": []} for name, d in dirs.items()}
    for _ in range(runs):
        for name, d in dirs.items():
            r = _uv_run(d)
            out[name]["s"].append(r.pop("s"))
            out[name].update(r)                     # the last run's lines
    for v in out.values():
        v["median_s"] = sorted(v["s"])[len(v["s"]) // 2]
    return out


def _best_of_rounds(runs: list[dict]) -> dict:
    """The first run's facts, with each timing the best over the rounds."""
    if "error" in runs[0]:
        return runs[0]
    out = json.loads(json.dumps(runs[0]))
    for name, clip in out["clips"].items():
        for key in ("sequential_s", "clip_access_s"):
            clip[key] = min(r["clips"][name][key] for r in runs if "clips" in r)
        clip["sequential_fps"] = round(clip["frames_decord"] / clip["sequential_s"], 1)
    out["rounds"] = len(runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES)
    ap.add_argument("--repeats", type=int, default=1, help="timings per worker run")
    ap.add_argument("--rounds", type=int, default=2, help="worker runs per candidate")
    ap.add_argument("--uv-runs", type=int, default=5)
    ap.add_argument("--compare-with", type=Path, default=None,
                    help="another checkout with a synced .venv: uv run true there too")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        json.dump(worker(args.worker, args.repeats), sys.stdout)
        return
    if not VIDEOS.is_dir():
        raise SystemExit(f"{VIDEOS} not found: the shared clips are needed")
    rounds: dict[str, list[dict]] = {req: [] for req in args.candidates}
    for _ in range(args.rounds):                  # round robin: drift hits every candidate
        for req in args.candidates:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = ["uv", "run", "--no-project", "--python", platform.python_version(),
                       "--with", req, "--with", "av", "--with", "numpy", "python",
                       str(Path(__file__).resolve()), "--worker", req,
                       "--repeats", str(args.repeats)]
                res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            rounds[req].append({"requirement": req, "error": res.stderr.strip()[-500:]}
                               if res.returncode else json.loads(res.stdout))
            print(json.dumps(rounds[req][-1])[:200], file=sys.stderr)
    results = [_best_of_rounds(r) for r in rounds.values()]
    dirs = {"this": ROOT, **({"compared": args.compare_with} if args.compare_with else {})}
    report = {
        "command": "python3 bench/decode.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "candidates": results,
        "uv": subprocess.run(["uv", "--version"], capture_output=True,
                             text=True).stdout.strip(),
        "uv_run_true": _time_uv_runs(dirs, args.uv_runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["uv_run_true"], indent=1))


if __name__ == "__main__":
    main()
