"""Stage ``synth``: a relational toy world with AVA-format labels (the default dataset).

Nothing pretrained can be downloaded offline and AVA is hundreds of GB, so the default
pipeline makes its own videos.  The world is built so that each family of classes
needs one scope of reasoning (ACAR paper, Table 1a/1f in miniature):

==========  =========  ==============================================================
family      class      rule at keyframe t (person i)
==========  =========  ==============================================================
pose        stand      i's pose: one per person (softmax group).  ``walk`` needs the
            sit        motion across the clip: a single frame of a walker in mid-stride
            walk       looks like a stander.
context     watch      the screen on the wall is on, i stands or sits, not in the cart
            warm       a fire burns 28-40 px beside i (others stay >= 72 px away)
            drive      i sits at the cart's wheel, hands on it (outside i's box)
            hold       i holds an object, in the hand beside the body (outside i's box)
relation    ride       i sits in the cart *and someone else drives it*; without a
                       driver the passengers only sit
            listen     i sits on the bench that faces the lectern, someone else talks
                       at the lectern (gesturing arm, moving mouth) and the screen on
                       the wall is off (when it is on, the audience watches it)
longterm    wait       i handed an object to someone who then left the scene, 3 to 8 s
                       before t (the clip around t only shows i standing, empty-handed;
                       the hand-over itself shows as ``hold`` on i, then on the receiver)
            alerted    the alarm lamp on the wall flashed while i was in the scene, 3 to
                       9 s before t, and it is dark in the 2-s clip around t (past scene
                       context: nobody else is involved, nothing of it is left in the clip)
temporal    answer     i waves back: i waves (arm up, hand to and fro, 0.5 s) in the 2nd
                       second of the clip around t, someone else waved in its 1st second
                       and neither waved in the other one.  The one who waved first, a
                       lone wave and two at once get no label: only the order tells
target      reach      i reaches (arm out) for the ball on the stand beside i, and the
                       ball is green now (64-68 px from i's centre, well outside i's
                       box; it is blue at other times, and for a blue ball the same
                       reach is no ``reach``)
==========  =========  ==============================================================

The ``temporal`` and ``target`` families (:func:`_grow`, own random stream per video) and
the rarer ``listen`` (a lectern speaker sometimes stays silent) were added for issue 17's
heads.  Their distractors: the one who waved first (same two waves, the reverse order),
a lone wave, two waves at once; the same reach for a ball that stays blue, the same
reach before and after the reacher's ball is green (the arm is out all along), and a green
ball elsewhere in the scene.  The ball's colour is the one thing that tells a ``reach``,
and it sits beyond what the box's RoI
feature sees (the cells RoIAlign samples, and the 3x3-cell colour surround of the
backbone's cells): only a head that looks outside the box can tell it.  So far out, the
ball may stand in front of the cart or the lecture (not of the fire or of anyone who does
not walk), else most scenes would have no room for a reacher.

Distractors keep the shortcuts closed: a static orange crate (not a fire), a dark
rectangle (an off screen), people who hold an object without handing it over, empty
carts, people who stand still all along without handing anything over (as a giver
stands after the hand-over), a silent or absent speaker, a talker away from the lectern
(who turns to the nearest person; nobody listens), an alarm lamp on the wall in every
scene that flashes in only some, people who walk in after it went dark (they never saw
it), occlusion by the cart's side, the
lectern and other people, and ``label_noise`` (a few percent of the person-keyframes get
one non-pose label toggled).  Sizes are for a 160x160 canvas and scale with the frame
(``MIN_CANVAS`` keeps tiny test frames usable).

Why ``listen`` needs the screen: without that condition, "i on the bench and a talker at
the lectern" is visible from the two actors' own features (the bench and the lectern sit
next to their boxes, and the backbone's 20-px cells spill into the RoI), so the
actor-actor head solved it as well as ACAR did.  The screen is far from every actor.

Outputs (``out_dir``)::

    videos/<video_id>.mp4      h264, ``fps`` frames per second
    train.csv, val.csv         AVA annotation CSVs (1 keyframe/s, t = 1 .. duration-1)
    labelmap.pbtxt             with acar's ``superclass`` extension (the family)
    excluded.csv               excluded (video_id, timestamp) of the val split
"""

from __future__ import annotations

import math
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import ArtifactError
from .artifacts.annotations import write_annotations, write_excluded
from .artifacts.labelmap import LabelMap, write_labelmap
from .progress import progress
from .threads import default_threads
from .video import write_video

LABELMAP = LabelMap(
    ids=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
    names=("stand", "sit", "walk", "watch", "warm", "drive", "hold", "ride", "listen",
           "wait", "alerted"),
    superclasses=("pose", "pose", "pose", "context", "context", "context", "context",
                  "relation", "relation", "longterm", "longterm"))
STAND, SIT, WALK, WATCH, WARM, DRIVE, HOLD, RIDE, LISTEN, WAIT = LABELMAP.ids[:10]
ALERTED = LABELMAP.ids[10]
FAMILIES = ("pose", "context", "relation", "longterm")
# ``synth.grow``: issue 17's families on top (the label map then has these two classes too)
GROWN_LABELMAP = LabelMap(ids=LABELMAP.ids + (12, 13), names=LABELMAP.names + ("answer", "reach"),
                          superclasses=LABELMAP.superclasses + ("temporal", "target"))
ANSWER, REACH = GROWN_LABELMAP.ids[-2:]
GROWN_FAMILIES = FAMILIES + ("temporal", "target")

# The world's rules (probabilities per video unless said otherwise).
P_SCREEN_ON = 0.5
P_FIRE = 0.6
P_CART = 0.55
P_DRIVER = 0.6
P_LECTURE = 0.8           # a lectern and an audience bench, in scenes without a cart
P_SPEAKER = 0.8           # somebody stands at the lectern (and talks, for a while)
P_HANDOVER = 0.9
P_TALK = 0.7              # a talker away from the lectern: nobody listens to it
P_HOLDER = 0.25           # a distractor: holds an object all along, hands nothing over
P_STILL = 0.3             # a distractor: stands still, empty-handed, all along (as a giver
                          # does after the hand-over), having handed nothing over
WARM_RANGE = (28, 40)     # px from the fire (160-px canvas)
FAR_FROM_FIRE = 72
WAIT_RANGE = (3, 8)       # seconds after the hand-over
MIN_CANVAS = 96
YELLOW = (250, 220, 30)
# `alerted` (past scene context), drawn from its own random stream (_alarm_rng), so the
# rest of each video is what it was before the class existed
P_ALARM = 0.5             # the lamp flashes, once, for ALARM_SECONDS
ALARM_SECONDS = (1, 2)
ALERT_RANGE = (3, 9)      # seconds between the flash and the keyframe
P_ARRIVE = 0.5            # a distractor: someone walks in (often after the flash)
LAMP_OFF, LAMP_ON = (52, 48, 48), (255, 40, 40)
# issue 17's families (`answer`, `reach`) and the rarer `listen`, drawn from their own
# random stream (_grow_rng), so the rest of each video is what it was before them
P_WAVES = 0.8             # two people in the scene wave, around some keyframes
WAVE_KEYFRAMES = (2, 5, 8)  # seconds (3 s apart: the 2-s clips of two events never meet)
P_WAVE_KEYFRAME = 0.7     # ... around each of these keyframes, one event:
WAVE_EVENTS = (("answer", 0.5), ("alone", 0.25), ("together", 0.25))
WAVE_FRAMES = 4           # a wave lasts 4 frames (0.5 s): 2 of the clip's 8 samples
P_REACH = 0.9             # somebody stands by a stand with a blue ball on it (one of the
                          # free people, else one more person), the arm out to it all along
P_GREEN = 0.35            # ... and the ball turns green for REACH_SECONDS (else it stays
                          # blue: reaching for a blue ball is no `reach`)
REACH_X = (64, 68)        # px from the reacher's centre to the ball's (the box is 12 wide):
                          # past the cells that the box's RoI samples and their 3x3 surround
BALL_R = 6.0              # the ball's radius (px); the arm reaches out to its near edge
ARM_W = 3.5               # the reaching arm's thickness (px)
REACH_SECONDS = (2, 3)    # the ball is green for 2 or 3 s (a stretch of the video)
P_DECOY_BALL = 0.5        # a green ball on a stand somewhere else in the scene
P_SILENT_SPEAKER = 0.7    # the lectern's speaker never talks (fewer `listen`: under 2%)
GREEN, BLUE, STAND_GREY = (40, 200, 70), (50, 80, 230), (150, 150, 160)


@dataclass
class SynthConfig:
    seed: int = 0
    num_train: int = 6          # videos in the train split
    num_val: int = 3            # videos in the val split
    duration: int = 10          # seconds per video (keyframes at 1..duration-1)
    fps: int = 8
    width: int = 160
    height: int = 160
    max_people: int = 5
    label_noise: float = 0.03   # share of person-keyframes with one non-pose label toggled
    grow: bool = False          # issue 17's families too: temporal (answer), target (reach)

    def __post_init__(self) -> None:
        for name in ("width", "height"):   # h264 frames have even sides: an odd one would be
            value = getattr(self, name)    # cropped, and the boxes normalised to the old one
            if isinstance(value, int) and value % 2:
                raise ArtifactError(f"synth.{name}", f"must be even (h264 frames have even "
                                                     f"sides), got {value}")


@dataclass
class Person:
    color: tuple[int, int, int]
    x: np.ndarray               # (F,) centre x in px per frame
    y: float                    # feet y in px
    pose: np.ndarray            # (F,) STAND | SIT | WALK
    face: np.ndarray            # (F,) +1 right, -1 left
    visible: np.ndarray         # (F,) bool
    holding: np.ndarray         # (F,) bool: an object in the hand
    talking: np.ndarray         # (F,) bool
    in_cart: bool = False
    driver: bool = False
    audience: bool = False      # sits on the bench that faces the lectern
    speaker: bool = False       # stands at the lectern
    handover: int | None = None  # second at which this person handed an object over
    waving: np.ndarray | None = None    # (F,) bool: waves (``answer``)
    reaching: np.ndarray | None = None  # (F,) bool: reaches out (``reach``)


@dataclass
class Scene:
    width: int
    height: int
    unit: float                  # px per unit of the 160-px canvas
    background: np.ndarray       # (H, W, 3) uint8
    screen: tuple[int, int, int, int]
    screen_on: bool
    fire: tuple[float, float] | None = None             # (x, y) of its base
    cart: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 (body)
    wheel_side: int = 1          # the wheel is at the cart's right (+1) or left (-1) end
    lectern: tuple[float, float, int] | None = None   # x, feet y, side the bench is on
    bench: tuple[float, float, float] | None = None   # x1, x2, seat y
    crates: list[tuple[int, int, int, int, tuple]] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)
    lamp: tuple[float, float] | None = None     # the alarm lamp's centre on the wall
    lamp_lit: np.ndarray | None = None          # (F,) bool: the lamp flashes (frames)
    balls: list[tuple[float, float, tuple]] = field(default_factory=list)  # x, y, colour
    green_ball: int | None = None               # the ball (index) that turns green ...
    green: np.ndarray | None = None             # (F,) bool: ... in these frames


# ---- the script: where everyone is and what they do, per frame ---------------------

def _static(frames: int, x: float, pose: int, face: int) -> dict:
    return dict(x=np.full(frames, x, float), pose=np.full(frames, pose),
                face=np.full(frames, face), visible=np.ones(frames, bool),
                holding=np.zeros(frames, bool), talking=np.zeros(frames, bool))


def _talk(rng, p: Person, seconds: int, fps: int, least: int) -> None:
    """``p`` talks during one random stretch of at least ``least`` seconds."""
    a = int(rng.integers(0, max(1, seconds - least)))
    b = int(rng.integers(min(a + least, seconds), seconds + 1))
    p.talking[a * fps: b * fps] = True


def _free_poses(rng, seconds: int, allowed: tuple[int, ...]) -> np.ndarray:
    poses = [int(rng.choice(allowed))]
    for _ in range(seconds - 1):
        poses.append(poses[-1] if rng.random() < 0.6 else int(rng.choice(allowed)))
    return np.array(poses)


@dataclass
class _Draft:
    """A scene being scripted: the random stream, the sizes, and what is still free."""
    rng: np.random.Generator
    cfg: SynthConfig
    scene: Scene
    colors: list[tuple[int, int, int]]          # unused body colours (popped from the end)
    occupied: list[tuple[float, float]] = field(default_factory=list)  # x intervals of
                                                # the cart, the lecture and the fire
    free: list[Person] = field(default_factory=list)   # standing people, free to act

    @property
    def frames(self) -> int:
        return self.cfg.duration * self.cfg.fps


def _script(rng: np.random.Generator, cfg: SynthConfig,
            alarm_rng: np.random.Generator | None = None,
            grow_rng: np.random.Generator | None = None) -> Scene:
    """Where everyone is and what they do, per frame (the draws' order fixes the world;
    the alarm lamp and the late arrivals draw from ``alarm_rng``, default ``rng``; issue
    17's additions, only with a ``grow_rng``, draw from it)."""
    scene = _room(rng, cfg)
    n = int(rng.integers(1, cfg.max_people + 1))
    colors = [tuple(int(c) for c in rng.integers(90, 255, 3)) for _ in range(n + 2)]
    d = _Draft(rng, cfg, scene, colors)
    n -= _cart(d, n)
    n -= _lecture(d, n)
    _fire(d)
    _free_people(d, n)
    rng.shuffle(d.free)
    _handover(d)
    talker = d.free.pop() if len(scene.people) >= 2 and d.free and rng.random() < P_TALK \
        else None
    if talker is not None:
        _talk(rng, talker, cfg.duration, cfg.fps, least=3)
    for p in d.free:
        _free_moves(d, p)
    if talker is not None:
        _turn_to_nearest(scene, talker, d.frames)
    _alarm(d, rng if alarm_rng is None else alarm_rng)
    if grow_rng is not None:
        _grow(d, grow_rng, talker)
    return scene


def _room(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """The background (a wall and a darker floor), the screen and the static distractors:
    an off-screen-like dark panel and an orange crate, sometimes."""
    W, H = cfg.width, cfg.height
    u = max(min(W, H), MIN_CANVAS) / 160
    base = rng.integers(20, 90, 3)
    grad = np.linspace(0, 1, H)[:, None, None] * rng.integers(0, 60, 3)
    texture = rng.integers(0, 22, (H, W, 1))
    background = np.clip(base + grad + texture, 0, 255).astype(np.uint8)
    floor = int(0.62 * H)
    background[floor:] = np.clip(background[floor:].astype(int) - 15, 0, 255)
    sw, sh = int(36 * u), int(22 * u)
    sx = int(rng.uniform(4 * u, W - sw - 4 * u))
    scene = Scene(W, H, u, background, (sx, int(0.1 * H), sx + sw, int(0.1 * H) + sh),
                  bool(rng.random() < P_SCREEN_ON))
    for colour in ((30, 30, 34), (235, 120, 20)):
        if rng.random() < 0.5:
            cw, ch = int(rng.uniform(10, 24) * u), int(rng.uniform(8, 16) * u)
            cx = int(rng.uniform(0, W - cw))
            cy = int(rng.uniform(0.12 * H, 0.5 * H)) if colour[0] < 100 else floor - ch
            scene.crates.append((cx, cy, cx + cw, cy + ch, colour))
    return scene


def _cart(d: _Draft, n: int) -> int:
    """Maybe a cart: a driver seat at the wheel end, passengers behind.  Returns how many
    of the ``n`` people sit in it."""
    rng, scene, u, W, H = d.rng, d.scene, d.scene.unit, d.cfg.width, d.cfg.height
    if not (rng.random() < P_CART and W >= 100 * u):
        return 0
    cw = 64 * u
    x1 = float(rng.uniform(2 * u, W - cw - 2 * u))
    yb = float(rng.uniform(0.82, 0.95) * H)
    scene.cart = (x1, yb - 14 * u, x1 + cw, yb)
    scene.wheel_side = int(rng.choice([-1, 1]))
    d.occupied.append((x1 - 6 * u, x1 + cw + 6 * u))
    n_in = int(rng.integers(1, min(3, n) + 1))
    driver = rng.random() < P_DRIVER
    front = x1 + cw - 12 * u if scene.wheel_side > 0 else x1 + 12 * u
    for k in range(n_in):
        x = front - scene.wheel_side * (k + (0 if driver else 1)) * 17 * u
        scene.people.append(Person(d.colors.pop(), y=yb - 4 * u, in_cart=True,
                                   driver=driver and k == 0,
                                   **_static(d.frames, x, SIT, scene.wheel_side)))
    return n_in


def _lecture(d: _Draft, n: int) -> int:
    """Maybe (no cart, people left) a lectern with a bench 30-64 px away on the side the
    speaker faces, a speaker and one or two listeners.  Returns how many people it took."""
    rng, scene, u, W, H = d.rng, d.scene, d.scene.unit, d.cfg.width, d.cfg.height
    if not (scene.cart is None and n > 0 and rng.random() < P_LECTURE and W >= 100 * u):
        return 0
    lx = float(rng.uniform(8 * u, W / 2 - 8 * u))
    side = 1
    if rng.random() < 0.5:
        lx, side = W - lx, -1
    yb = float(rng.uniform(0.8, 0.93) * H)
    b1, b2 = sorted((lx + side * 30 * u, lx + side * 64 * u))
    scene.lectern, scene.bench = (lx, yb, side), (b1, b2, yb)
    d.occupied.append((min(lx, b1) - 6 * u, max(lx, b2) + 6 * u))
    taken = 0
    if rng.random() < P_SPEAKER:
        p = Person(d.colors.pop(), y=yb, speaker=True, **_static(d.frames, lx, STAND, side))
        _talk(rng, p, d.cfg.duration, d.cfg.fps, least=4)
        scene.people.append(p)
        taken += 1
    left = n - taken
    for k in range(int(rng.integers(1, min(2, left) + 1)) if left > 0 else 0):
        x = lx + side * (38 + 17 * k) * u
        scene.people.append(Person(d.colors.pop(), y=yb, audience=True,
                                   **_static(d.frames, x, SIT, -side)))
        taken += 1
    return taken


def _fire(d: _Draft) -> None:
    """Maybe a fire, clear of the cart and the lecture (whose people stay clearly away
    from it, as free people do)."""
    rng, scene, u, W, H = d.rng, d.scene, d.scene.unit, d.cfg.width, d.cfg.height
    if not rng.random() < P_FIRE:
        return
    lecture = [q.x[0] for q in scene.people if q.speaker or q.audience]
    for _ in range(20):
        fx = float(rng.uniform(8 * u, W - 8 * u))
        if all(not (a - 10 * u < fx < b + 10 * u) for a, b in d.occupied) and \
                all(abs(fx - x) >= FAR_FROM_FIRE * u for x in lecture):
            scene.fire = (fx, float(rng.uniform(0.8, 0.92) * H))
            d.occupied.append((fx - 8 * u, fx + 8 * u))
            return


def _place(d: _Draft, warm: bool) -> float | None:
    """An x for a free person: by the fire (``warm``) or clearly away from it, clear of
    the occupied stretches and of other standing people; None after 40 tries."""
    rng, scene, u, W = d.rng, d.scene, d.scene.unit, d.cfg.width
    for _ in range(40):
        if warm:
            x = scene.fire[0] + rng.choice([-1, 1]) * rng.uniform(*WARM_RANGE) * u
        else:
            x = rng.uniform(8 * u, W - 8 * u)
        if not 6 * u < x < W - 6 * u:
            continue
        if any(a - 6 * u < x < b + 6 * u for a, b in d.occupied):
            continue
        if scene.fire is not None and not warm and abs(x - scene.fire[0]) < FAR_FROM_FIRE * u:
            continue
        if any(abs(x - q.x[0]) < 7 * u for q in scene.people if not q.in_cart):
            continue
        return float(x)
    return None


def _free_people(d: _Draft, n: int) -> None:
    """The ``n`` people left stand somewhere free, half of them by the fire if any."""
    rng, scene = d.rng, d.scene
    for _ in range(n):
        warm = scene.fire is not None and rng.random() < 0.5
        x = _place(d, warm)
        if x is None:
            continue
        y = float(rng.uniform(0.72, 0.95) * d.cfg.height)        # feet
        p = Person(d.colors.pop(), y=y, **_static(d.frames, x, STAND, int(rng.choice([-1, 1]))))
        scene.people.append(p)
        d.free.append(p)


def _handover(d: _Draft) -> None:
    """Maybe a hand-over: a free person (the giver, who stays) hands an object to a new
    one (the receiver), who takes it and leaves the scene by the nearest edge."""
    rng, scene, u, W = d.rng, d.scene, d.scene.unit, d.cfg.width
    secs, fps, F = d.cfg.duration, d.cfg.fps, d.frames
    if not (d.free and secs >= 6 and rng.random() < P_HANDOVER):
        return
    giver = d.free.pop()
    side = int(rng.choice([-1, 1]))
    rx = giver.x[0] + side * rng.uniform(14, 20) * u
    if not 6 * u < rx < W - 6 * u:
        return
    t_h = int(rng.integers(1, secs - WAIT_RANGE[0]))
    giver.handover = t_h
    giver.face[:] = side
    giver.holding[: t_h * fps] = True
    recv = Person(d.colors.pop(), y=giver.y + float(rng.uniform(-3, 3) * u),
                  **_static(F, rx, STAND, -side))
    recv.holding[t_h * fps:] = True
    out = 1 if rx > W / 2 else -1                       # the nearest edge
    go = int((t_h + 0.5) * fps)
    speed = (W / 2 + 20 * u) / (1.5 * fps)
    for f in range(go, F):
        recv.x[f] = recv.x[f - 1] + out * speed
        recv.pose[f], recv.face[f] = WALK, out
    recv.visible = (recv.x > -4 * u) & (recv.x < W + 4 * u)
    scene.people.append(recv)


def _free_moves(d: _Draft, p: Person) -> None:
    """A free person: maybe holds an object all along (a distractor), maybe stands still
    all along, else changes pose each second (stand / sit, and walk away from a fire),
    walking back and forth within 24 px and now and then turning round."""
    rng, u, W = d.rng, d.scene.unit, d.cfg.width
    secs, fps, fire = d.cfg.duration, d.cfg.fps, d.scene.fire
    if rng.random() < P_HOLDER:
        p.holding[:] = True
    near_fire = fire is not None and abs(p.x[0] - fire[0]) < FAR_FROM_FIRE * u
    still = not p.holding.any() and rng.random() < P_STILL
    poses = np.full(secs, STAND) if still else \
        _free_poses(rng, secs, (STAND, SIT) if near_fire else (STAND, SIT, WALK))
    anchor, v = p.x[0], float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.4) * u)
    x = anchor
    for f in range(d.frames):
        p.pose[f] = poses[f // fps]
        if p.pose[f] == WALK:
            if abs(x + v - anchor) > 24 * u or not 6 * u < x + v < W - 6 * u:
                v = -v
            x += v
            p.face[f] = 1 if v > 0 else -1
        elif not still and f % fps == 0 and rng.random() < 0.2:
            p.face[f:] = -p.face[f]
        p.x[f] = x


def _turn_to_nearest(scene: Scene, talker: Person, frames: int) -> None:
    """A talker away from the lectern turns to its nearest visible neighbour, per frame."""
    for f in range(frames):
        j = _nearest(scene.people, talker, f)
        if j is not None:
            talker.face[f] = 1 if scene.people[j].x[f] > talker.x[f] else -1


def _nearest(people: list[Person], p: Person, f: int) -> int | None:
    best, arg = np.inf, None
    for k, q in enumerate(people):
        if q is p or not q.visible[f]:
            continue
        d = np.hypot(q.x[f] - p.x[f], q.y - p.y)
        if d < best:
            best, arg = d, k
    return arg


def _alarm_rng(cfg: SynthConfig, video_id: str) -> np.random.Generator:
    """The alarm's own random stream of one video (seed and video id)."""
    return np.random.default_rng([cfg.seed, zlib.crc32(video_id.encode())])


def _alarm(d: _Draft, rng: np.random.Generator) -> None:
    """The alarm lamp (``alerted``): a lamp on the wall in every scene, which flashes once
    for 1-2 s in some, and maybe a late arrival, who walks in from an edge (0.5-1 s) at a
    random second and then stands, clear of everyone (often after the flash: never saw it)."""
    scene, u, W, H, fps = d.scene, d.scene.unit, d.cfg.width, d.cfg.height, d.cfg.fps
    secs, F = d.cfg.duration, d.frames
    sx1, _, sx2, _ = scene.screen
    for _ in range(20):                              # on the wall, not below the screen
        lx = float(rng.uniform(8 * u, W - 8 * u))
        if not sx1 - 8 * u < lx < sx2 + 8 * u:
            break
    scene.lamp = (lx, float(rng.uniform(0.3, 0.42) * H))
    scene.lamp_lit = np.zeros(F, bool)
    if secs >= ALERT_RANGE[0] + 2 and rng.random() < P_ALARM:
        a = int(rng.integers(1, secs - ALERT_RANGE[0]))
        n = int(rng.integers(ALARM_SECONDS[0], ALARM_SECONDS[1] + 1))
        scene.lamp_lit[a * fps: (a + n) * fps] = True
    if not (secs >= 4 and d.colors and rng.random() < P_ARRIVE):
        return
    for _ in range(40):
        x = float(rng.uniform(8 * u, W - 8 * u))
        if any(a - 6 * u < x < b + 6 * u for a, b in d.occupied) or \
                (scene.fire is not None and abs(x - scene.fire[0]) < FAR_FROM_FIRE * u) or \
                any(abs(x - q.x[-1]) < 9 * u for q in scene.people if not q.in_cart):
            continue
        break
    else:
        return
    come = int(rng.integers(1, secs - 1)) * fps      # first frame on screen
    edge = -1 if x < W / 2 else 1
    x0 = -8 * u if edge < 0 else W + 8 * u            # off screen until ``come``
    walk = max(int(rng.uniform(0.5, 1.0) * fps), 1)
    p = Person(d.colors.pop(), y=float(rng.uniform(0.72, 0.95) * H),
               **_static(F, x, STAND, -edge))
    p.x[:come] = x0
    p.x[come:come + walk] = x0 + (x - x0) * np.arange(1, walk + 1) / walk
    p.pose[come:come + walk] = WALK
    p.visible[:come] = False
    scene.people.append(p)


def saw_alarm(scene: Scene, p: Person, f: int, fps: int) -> bool:
    """``alerted``: the lamp flashed while ``p`` was on screen, 3 to 9 s before frame
    ``f``, and it is dark from 1 s before to 1 s after ``f`` (the clip around it)."""
    lit = scene.lamp_lit
    if lit is None or lit[max(f - fps, 0): f + fps + 1].any():
        return False
    lo, hi = max(f - ALERT_RANGE[1] * fps, 0), f - ALERT_RANGE[0] * fps
    return hi >= 0 and bool((lit[lo: hi + 1] & p.visible[lo: hi + 1]).any())


# ---- issue 17's additions: waves (temporal), a ball to reach for (target) ----------

def _grow_rng(cfg: SynthConfig, video_id: str) -> np.random.Generator:
    """The additions' own random stream of one video (seed and video id)."""
    return np.random.default_rng([cfg.seed, zlib.crc32(video_id.encode()), 17])


def _grow(d: _Draft, rng: np.random.Generator, talker: Person | None) -> None:
    """Issue 17's additions to a scripted scene: maybe a silent lectern speaker, a reacher
    by a ball on a stand (and a green decoy ball elsewhere), two people who wave."""
    for q in d.scene.people:
        if q.speaker and rng.random() < P_SILENT_SPEAKER:
            q.talking[:] = False
    reacher = _reach(d, rng)
    _waves(d, rng, exclude=[talker, reacher])


def _hand_y(scene: Scene, p: Person, f: int) -> float:
    """The height of ``p``'s outstretched arm (its shoulder line, as drawn) at frame f."""
    return box_of(scene, p, f)[1] + 13.25 * scene.unit


def _reach(d: _Draft, rng: np.random.Generator) -> Person | None:
    """Maybe someone stands still all along beside a stand with a blue ball at arm's
    height, facing it, the arm out to it all along, and the ball turns green for
    REACH_SECONDS (or never): a free person (not carrying a box), else one more person
    where the stand and the ball stay clear of everyone; maybe a green ball on a stand
    elsewhere, clear of everyone."""
    scene, u, W, H, fps = d.scene, d.scene.unit, d.cfg.width, d.cfg.height, d.cfg.fps
    secs, F = d.cfg.duration, d.frames
    reacher = None
    pool = [p for p in d.free if not p.holding.any()]
    if secs >= REACH_SECONDS[1] and rng.random() < P_REACH:
        side = int(rng.choice([-1, 1]))
        dx = float(rng.uniform(*REACH_X)) * u
        p = pool[int(rng.integers(len(pool)))] if pool else _reacher(d, rng, side, dx)
        if p is not None:
            if not 6 * u < p.x[0] + side * dx < W - 6 * u:
                side = -side
            p.x[:], p.pose[:] = p.x[0], STAND
            p.face[:] = side
            scene.balls.append((float(p.x[0] + side * dx), _hand_y(scene, p, 0), BLUE))
            p.reaching = np.ones(F, bool)
            if rng.random() < P_GREEN:
                n = int(rng.integers(REACH_SECONDS[0], REACH_SECONDS[1] + 1))
                a = int(rng.integers(0, secs - n + 1))
                scene.green_ball, scene.green = len(scene.balls) - 1, np.zeros(F, bool)
                scene.green[a * fps: (a + n) * fps] = True
            reacher = p
    if rng.random() < P_DECOY_BALL:
        for _ in range(20):
            x = float(rng.uniform(6 * u, W - 6 * u))
            if all(np.abs(q.x - x).min() >= 30 * u for q in scene.people) and \
                    all(abs(x - b[0]) >= 12 * u for b in scene.balls):
                scene.balls.append((x, float(rng.uniform(0.5, 0.7) * H), GREEN))
                break
    return reacher


def _reacher(d: _Draft, rng: np.random.Generator, side: int, dx: float) -> Person | None:
    """One more person for ``_reach``: standing, away from the fire, clear of the cart, the
    lecture and everyone who does not walk, the ball ``dx`` beside, on ``side`` (or the
    other side, where ``side`` runs off the image), clear of the fire and of everyone who
    does not walk (it may stand in front of the cart or the lecture); None after 40 tries."""
    scene, u, W, H = d.scene, d.scene.unit, d.cfg.width, d.cfg.height
    for _ in range(40):
        x = float(rng.uniform(8 * u, W - 8 * u))
        if not 6 * u < x + side * dx < W - 6 * u:
            side = -side
        bx = x + side * dx
        if not 6 * u < bx < W - 6 * u:
            continue
        if any(a - 6 * u < x < b + 6 * u for a, b in d.occupied):
            continue
        if scene.fire is not None and abs(x - scene.fire[0]) < (WARM_RANGE[1] + 8) * u:
            continue                             # not `warm`, and the flames a cell away
        if scene.fire is not None and abs(bx - scene.fire[0]) < 14 * u:
            continue                             # the ball off the fire
        if any(np.abs(q.x[q.pose != WALK] - v).min(initial=np.inf) < 12 * u
               for q in scene.people for v in (x, bx)):      # walkers may pass in front
            continue
        colour = tuple(int(c) for c in rng.integers(90, 255, 3))
        p = Person(colour, y=float(rng.uniform(0.72, 0.95) * H),
                   **_static(d.frames, x, STAND, side))
        scene.people.append(p)
        return p
    return None


def _waves(d: _Draft, rng: np.random.Generator, exclude: list) -> None:
    """Maybe two people (on screen all along, not speaking, driving or reaching) wave
    around some of the keyframes WAVE_KEYFRAMES, one event each: ``answer`` (one waves in
    the second before the keyframe, the other in the second after it), ``alone`` (one of
    them waves, in either second) or ``together`` (both, in the same second)."""
    scene, fps, F = d.scene, d.cfg.fps, d.frames
    pool = [q for q in scene.people if not any(q is e for e in exclude)
            and not q.speaker and not q.driver and q.visible.all()]
    if len(pool) < 2 or rng.random() >= P_WAVES:
        return
    pair = [pool[k] for k in rng.choice(len(pool), 2, replace=False)]
    for q in pair:
        q.waving = np.zeros(F, bool)
    names, probs = zip(*WAVE_EVENTS, strict=True)
    for t in WAVE_KEYFRAMES:
        f = t * fps
        if f - fps < 0 or f + fps > F or rng.random() >= P_WAVE_KEYFRAME:
            continue
        before = slice(f - fps + 1, f - fps + 1 + WAVE_FRAMES)     # inside [f - fps, f)
        after = slice(f + 1, f + 1 + WAVE_FRAMES)                  # inside [f, f + fps)
        event = str(rng.choice(names, p=probs))
        if event == "answer":
            first, second = (pair if rng.random() < 0.5 else pair[::-1])
            first.waving[before] = second.waving[after] = True
        else:
            when = before if rng.random() < 0.5 else after
            for q in (pair if event == "together" else [pair[int(rng.integers(2))]]):
                q.waving[when] = True


def waved(p: Person, f: int, fps: int) -> tuple[bool, bool]:
    """Whether ``p`` waves in the second before frame ``f`` ([f - fps, f)) and in the
    second from it ([f, f + fps)): the two halves of the 2-s clip around keyframe f."""
    if p.waving is None:
        return False, False
    return bool(p.waving[max(f - fps, 0): f].any()), bool(p.waving[f: f + fps].any())


def _grown_labels(scene: Scene, i: int, f: int, fps: int) -> list[int]:
    """``answer`` and ``reach`` of person ``i`` at frame ``f`` (see the module docstring)."""
    p, u, out = scene.people[i], scene.unit, []
    if waved(p, f, fps) == (False, True) and any(
            q is not p and q.visible[f] and waved(q, f, fps) == (True, False)
            for q in scene.people):
        out.append(ANSWER)
    if p.reaching is not None and p.reaching[f] and any(
            ball_colour(scene, k, f) == GREEN and p.face[f] * (bx - p.x[f]) > 0
            and REACH_X[0] * u - 1e-6 <= abs(bx - p.x[f]) <= REACH_X[1] * u + 1e-6
            and abs(by - _hand_y(scene, p, f)) < 2 * u
            for k, (bx, by, _) in enumerate(scene.balls)):
        out.append(REACH)
    return out


def ball_colour(scene: Scene, k: int, f: int) -> tuple:
    """The colour of ball ``k`` at frame ``f``: the reacher's turns green for a while."""
    if k == scene.green_ball and scene.green is not None and scene.green[f]:
        return GREEN
    return scene.balls[k][2]


def labelmap_of(cfg: SynthConfig) -> LabelMap:
    """The world's classes: issue 17's two only with ``grow``."""
    return GROWN_LABELMAP if cfg.grow else LABELMAP


# ---- the rules: labels of person i at keyframe frame f ---------------------------

def labels_at(scene: Scene, i: int, f: int, fps: int) -> list[int]:
    """The action ids of person ``i`` at frame ``f``, from the world's rules (no noise)."""
    p, u = scene.people[i], scene.unit
    pose = int(p.pose[f])
    out = [pose]
    if scene.screen_on and pose in (STAND, SIT) and not p.in_cart:
        out.append(WATCH)
    if scene.fire is not None and not p.in_cart and \
            abs(p.x[f] - scene.fire[0]) <= WARM_RANGE[1] * u + 1e-6:
        out.append(WARM)
    if p.driver:
        out.append(DRIVE)
    if p.holding[f]:
        out.append(HOLD)
    if p.in_cart and not p.driver and any(q.driver for q in scene.people):
        out.append(RIDE)
    if p.audience and not scene.screen_on and \
            any(q.speaker and q.talking[f] for q in scene.people):
        out.append(LISTEN)
    if p.handover is not None and WAIT_RANGE[0] <= f / fps - p.handover <= WAIT_RANGE[1]:
        out.append(WAIT)
    if saw_alarm(scene, p, f, fps):
        out.append(ALERTED)
    return out + _grown_labels(scene, i, f, fps)


def box_of(scene: Scene, p: Person, f: int) -> tuple[float, float, float, float]:
    """The person's body box (x1, y1, x2, y2) in px: head to feet, arms and objects out."""
    u = scene.unit
    h, w = (28 * u, 16 * u) if p.pose[f] == SIT else (40 * u, 12 * u)
    return p.x[f] - w / 2, p.y - h, p.x[f] + w / 2, p.y


# ---- rendering --------------------------------------------------------------------

def _rect(img, x1, y1, x2, y2, color) -> None:
    h, w = img.shape[:2]
    x1, x2 = max(int(round(x1)), 0), min(int(round(x2)), w)
    y1, y2 = max(int(round(y1)), 0), min(int(round(y2)), h)
    if x1 < x2 and y1 < y2:
        img[y1:y2, x1:x2] = color


def _disc(img, cx, cy, r, color, ring: bool = False) -> None:
    # the pixels within r of (cx, cy), tested in a window 1 px wider than the disc (the
    # same test, pixel for pixel, as over the whole image: every pixel outside is > r away)
    h, w = img.shape[:2]
    reach = abs(r)
    y0, y1 = max(int(math.floor(cy - reach)) - 1, 0), min(int(math.ceil(cy + reach)) + 2, h)
    x0, x1 = max(int(math.floor(cx - reach)) - 1, 0), min(int(math.ceil(cx + reach)) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    mask = (d2 <= r * r) & (d2 >= (r - 1.6) ** 2) if ring else d2 <= r * r
    img[y0:y1, x0:x1][mask] = color


def _draw_person(img, scene: Scene, p: Person, f: int, rng) -> None:
    u = scene.unit
    x1, y1, x2, y2 = box_of(scene, p, f)
    cx, pose, face = p.x[f], p.pose[f], p.face[f]
    head = 5 * u
    _disc(img, cx, y1 + head, head, p.color)
    _rect(img, cx + face * 2 * u - 1, y1 + head - 2 * u, cx + face * 2 * u + 1.5,   # an eye
          y1 + head - 0.5 * u, (20, 20, 20))
    if p.talking[f] and (f // 2) % 2 == 0:                                          # mouth
        _rect(img, cx + face * 2 * u - 1, y1 + head + 1.5 * u, cx + face * 3 * u + 1,
              y1 + head + 3 * u, (150, 20, 20))
    torso_bottom = y1 + (y2 - y1) * (0.62 if pose != SIT else 0.75)
    _rect(img, cx - 3 * u, y1 + 2 * head, cx + 3 * u, torso_bottom, p.color)
    if pose == WALK:
        swing = 4 * u * np.sin(f * 1.3)
        for dx in (swing, -swing):
            _rect(img, cx + dx - 1.5 * u, torso_bottom, cx + dx + 1.5 * u, y2, p.color)
    elif pose == SIT:                      # thigh forward, shin down
        _rect(img, min(cx, cx + face * 8 * u), torso_bottom - 2 * u, max(cx, cx + face * 8 * u),
              torso_bottom + 2 * u, p.color)
        kx = cx + face * 7 * u
        _rect(img, kx - 1.5 * u, torso_bottom, kx + 1.5 * u, y2, p.color)
    else:
        for dx in (-2 * u, 2 * u):
            _rect(img, cx + dx - 1.2 * u, torso_bottom, cx + dx + 1.2 * u, y2, p.color)
    shoulder = y1 + 2 * head + 2 * u
    hand_x = cx + face * 9 * u
    if p.driver:                           # both arms forward onto the wheel
        _rect(img, min(cx, hand_x), shoulder, max(cx, hand_x), shoulder + 2.5 * u, p.color)
    elif p.talking[f]:                     # a gesturing arm, up and down
        lift = (5 + 5 * np.sin(f * 1.7)) * u
        _rect(img, min(cx, cx + face * 9 * u), shoulder - lift, max(cx, cx + face * 9 * u),
              shoulder - lift + 3 * u, p.color)
    else:                                  # an arm hanging by the side
        ax = cx + face * 4 * u
        _rect(img, ax - 1.2 * u, shoulder, ax + 1.2 * u, shoulder + 10 * u, p.color)
    if p.holding[f]:                       # a box, carried at the hip
        hx = cx + face * 9 * u
        _rect(img, hx - 4.5 * u, shoulder + 5 * u, hx + 4.5 * u, shoulder + 14 * u, YELLOW)
    _draw_grown_arms(img, scene, p, f)


def _draw_grown_arms(img, scene: Scene, p: Person, f: int) -> None:
    """A reaching arm straight out at the shoulder, on the side faced (beyond the box),
    and a waving arm raised above the head on the other side, hand to and fro."""
    u = scene.unit
    _, y1, _, _ = box_of(scene, p, f)
    cx, face, shoulder = p.x[f], p.face[f], y1 + 12 * u
    if p.reaching is not None and p.reaching[f]:          # to the ball's near edge
        hx = cx + face * (REACH_X[0] - BALL_R) * u
        _rect(img, min(cx, hx), shoulder, max(cx, hx), shoulder + ARM_W * u, p.color)
    if p.waving is not None and p.waving[f]:
        ax = cx - face * 4 * u + 2.5 * u * np.sin(f * 2.1)
        _rect(img, ax - 1.2 * u, y1 - 6 * u, ax + 1.2 * u, shoulder, p.color)
        _rect(img, ax - 2 * u, y1 - 9 * u, ax + 2 * u, y1 - 5 * u, p.color)


def _draw_balls(img, scene: Scene, f: int) -> None:
    """Balls on stands: a pole, a plate, the ball (radius BALL_R) at arm's height."""
    u, r = scene.unit, BALL_R * scene.unit
    for k, (bx, by, _) in enumerate(scene.balls):
        _rect(img, bx - u, by + r, bx + u, by + 27 * u, STAND_GREY)
        _rect(img, bx - 4 * u, by + r, bx + 4 * u, by + r + 1.5 * u, STAND_GREY)
        _disc(img, bx, by, r, ball_colour(scene, k, f))


def _frame(scene: Scene, f: int, rng: np.random.Generator) -> np.ndarray:
    img = scene.background.copy()
    u = scene.unit
    x1, y1, x2, y2 = scene.screen
    _rect(img, x1 - 2, y1 - 2, x2 + 2, y2 + 2, (70, 70, 76))
    if scene.screen_on:     # a flickering picture: coloured blocks that change each frame
        for by in range(y1, y2, max(int(6 * u), 2)):
            for bx in range(x1, x2, max(int(6 * u), 2)):
                _rect(img, bx, by, min(bx + 6 * u, x2), min(by + 6 * u, y2),
                      tuple(int(c) for c in rng.integers(60, 255, 3)))
    else:
        _rect(img, x1, y1, x2, y2, (24, 26, 30))
    for cx1, cy1, cx2, cy2, colour in scene.crates:
        _rect(img, cx1, cy1, cx2, cy2, colour)
    _draw_lamp(img, scene, f)
    _draw_balls(img, scene, f)
    if scene.fire is not None:  # flames: flickering orange/yellow tongues on logs
        fx, fy = scene.fire
        _rect(img, fx - 7 * u, fy - 2 * u, fx + 7 * u, fy + 1 * u, (90, 50, 20))
        for k in range(5):
            h = rng.uniform(6, 14) * u
            dx = (k - 2) * 2.6 * u + rng.uniform(-1, 1) * u
            _rect(img, fx + dx - 1.3 * u, fy - 2 * u - h, fx + dx + 1.3 * u, fy - 2 * u,
                  (255, int(rng.integers(90, 200)), 20))
    if scene.bench is not None:    # a plank on two legs
        bx1, bx2, by = scene.bench
        _rect(img, bx1, by - 6 * u, bx2, by - 3 * u, (120, 80, 40))
        for lx in (bx1 + 2 * u, bx2 - 3 * u):
            _rect(img, lx, by - 3 * u, lx + u, by, (90, 60, 30))
    order = sorted(range(len(scene.people)), key=lambda k: scene.people[k].y)
    for k in order:
        p = scene.people[k]
        if p.visible[f]:
            _draw_person(img, scene, p, f, rng)
    if scene.lectern is not None:  # a stand with a slanted top and a microphone
        lx, ly, side = scene.lectern
        _rect(img, lx - 5 * u, ly - 22 * u, lx + 5 * u, ly, (100, 64, 36))
        _rect(img, lx - 6 * u, ly - 24 * u, lx + 6 * u, ly - 22 * u, (150, 100, 60))
        _rect(img, lx + side * 3 * u, ly - 30 * u, lx + side * 3 * u + u, ly - 24 * u,
              (40, 40, 40))
    if scene.cart is not None:     # the cart's side hides the passengers' legs
        cx1, cy1, cx2, cy2 = scene.cart
        _rect(img, cx1, cy1, cx2, cy2, (60, 110, 170))
        _rect(img, cx1, cy1, cx2, cy1 + 2 * u, (200, 200, 210))
        for wx in (cx1 + 10 * u, cx2 - 10 * u):
            _disc(img, wx, cy2, 4 * u, (20, 20, 20))
        wx = cx2 - 2 * u if scene.wheel_side > 0 else cx1 + 2 * u   # the steering wheel
        _disc(img, wx, cy1 - 9 * u, 5 * u, (15, 15, 15), ring=True)
        _rect(img, wx - u, cy1 - 5 * u, wx + u, cy1, (15, 15, 15))
    return img


def _draw_lamp(img, scene: Scene, f: int) -> None:
    """The alarm lamp: a dark bulb on a bracket; while it flashes, red on 2 frames of
    every 4 (so the clip's every-2nd-frame sampling sees it on and off)."""
    if scene.lamp is None:
        return
    u = scene.unit
    x, y = scene.lamp
    _rect(img, x - 4 * u, y + 3 * u, x + 4 * u, y + 5 * u, (70, 70, 76))
    on = scene.lamp_lit is not None and scene.lamp_lit[f] and (f // 2) % 2 == 0
    _disc(img, x, y, 4 * u, LAMP_ON if on else LAMP_OFF)


def _plan_video(rng: np.random.Generator, cfg: SynthConfig, video_id: str) -> tuple:
    """The video's script and its seeds (flicker, label noise): every draw from the world's
    ``rng``, in the order of the videos, so that rendering can run in any order."""
    scene = _script(rng, cfg, _alarm_rng(cfg, video_id),
                    _grow_rng(cfg, video_id) if cfg.grow else None)
    return scene, rng.integers(1 << 62), rng.integers(1 << 62)


def _render_video(cfg: SynthConfig, video_id: str, path: Path, scene: Scene, frame_seed,
                  noise_seed) -> list[tuple]:
    """Write the planned video to ``path``; its annotation rows."""
    F = cfg.duration * cfg.fps
    frame_rng = np.random.default_rng(frame_seed)   # flicker
    noise_rng = np.random.default_rng(noise_seed)   # label noise
    # lossless: the same seed gives the same pixels (lossy x264 did not, run to run)
    write_video((_frame(scene, f, frame_rng) for f in range(F)), path, cfg.fps, lossless=True)
    rows: list[tuple] = []
    W, H = cfg.width, cfg.height
    lm = labelmap_of(cfg)
    non_pose = [a for a, s in zip(lm.ids, lm.superclasses, strict=True)
                if s != "pose"]
    for t in range(1, cfg.duration):
        f = t * cfg.fps
        for pid, p in enumerate(scene.people):
            if not p.visible[f]:
                continue
            x1, y1, x2, y2 = box_of(scene, p, f)
            box = (float(np.clip(x1 / W, 0, 1)), float(np.clip(y1 / H, 0, 1)),
                   float(np.clip(x2 / W, 0, 1)), float(np.clip(y2 / H, 0, 1)))
            if box[2] - box[0] < 2 / W or box[3] - box[1] < 2 / H:
                continue
            labels = labels_at(scene, pid, f, cfg.fps)
            if noise_rng.random() < cfg.label_noise:
                flip = int(noise_rng.choice(non_pose))
                labels = [a for a in labels if a != flip] if flip in labels else labels + [flip]
            rows += [(video_id, t, *box, a, pid) for a in labels]
    return rows


def run(cfg: SynthConfig, out_dir: str | os.PathLike, jobs: int | None = None) -> None:
    """Generate the world into ``out_dir`` (deterministic in ``cfg``, whatever ``jobs``:
    the processes that render the videos, default the threads of pipeline.threads)."""
    out = Path(out_dir)
    try:
        (out / "videos").mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError(out, "cannot write here: a file is in the way") from None
    rng = np.random.default_rng(cfg.seed)
    splits = {"train": cfg.num_train, "val": cfg.num_val}
    cols = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id"]
    videos = [(split, f"{split}_{i:03d}") for split, n in splits.items() for i in range(n)]
    plans = [(cfg, vid, out / "videos" / f"{vid}.mp4", *_plan_video(rng, cfg, vid))
             for _, vid in videos]
    jobs = min(jobs or default_threads()[0], max(len(plans), 1))
    rows: dict[str, list[tuple]] = {split: [] for split in splits}
    with progress(total=len(plans), desc="synth", unit="video") as bar, ExitStack() as stack:
        if jobs > 1:   # forked workers; map keeps the videos' order
            pool = stack.enter_context(ProcessPoolExecutor(
                jobs, mp_context=multiprocessing.get_context("fork")))
            rendered = pool.map(_render_video, *zip(*plans, strict=True))
        else:
            rendered = (_render_video(*plan) for plan in plans)
        for (split, _), video_rows in zip(videos, rendered, strict=True):
            rows[split] += video_rows
            bar.update()
    for split in splits:
        write_annotations(pd.DataFrame(rows[split], columns=cols), out / f"{split}.csv")
    # One excluded keyframe in val, so the excluded-timestamps path is always exercised.
    write_excluded(pd.DataFrame({"video_id": ["val_000"], "timestamp": [cfg.duration - 1]}),
                   out / "excluded.csv")
    write_labelmap(labelmap_of(cfg), out / "labelmap.pbtxt")
