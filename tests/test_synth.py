import numpy as np
import pytest
import torch

from pipeline import synth
from pipeline.artifacts.annotations import read_annotations, read_excluded
from pipeline.artifacts.labelmap import read_labelmap
from pipeline.video import video_info

POSES = [synth.STAND, synth.SIT, synth.WALK]
RARE = (synth.LISTEN, synth.ANSWER, synth.REACH)


def test_world_files_and_labels(synth_world):
    lm = read_labelmap(synth_world / "labelmap.pbtxt")
    assert lm == synth.LABELMAP
    assert set(lm.superclasses) == set(synth.FAMILIES)
    train = read_annotations(synth_world / "train.csv")
    assert set(train["video_id"]) == {"train_000", "train_001"}
    assert set(train["timestamp"]) <= {1, 2, 3}
    # exactly one pose per person and keyframe
    poses = train[train["action_id"].isin(POSES)]
    assert not poses.duplicated(["video_id", "timestamp", "person_id"]).any()
    persons = train.drop_duplicates(["video_id", "timestamp", "person_id"])
    assert len(poses) == len(persons)
    assert len(read_excluded(synth_world / "excluded.csv")) == 1
    info = video_info(synth_world / "videos" / "val_000.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (96, 64, 32, 8.0)


def test_deterministic_whatever_the_rendering_processes(tmp_path):
    """One process or three rendering the videos (in another order): every file the same."""
    cfg = synth.SynthConfig(num_train=3, num_val=2, duration=3, width=64, height=48)
    synth.run(cfg, tmp_path / "a", jobs=1)
    synth.run(cfg, tmp_path / "b", jobs=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 5 + 4          # videos, train/val.csv, excluded.csv, labelmap
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    videos = [(tmp_path / "a" / "videos" / f"train_00{i}.mp4").read_bytes() for i in range(3)]
    assert len(set(videos)) == 3        # each video its own


@pytest.fixture(scope="module")
def scenes():
    """Many scripted scenes of the default size (no rendering: fast)."""
    cfg = synth.SynthConfig()
    rng = np.random.default_rng(1)        # the alarm's own stream: the same scenes as before
    return cfg, [synth._script(rng, cfg, np.random.default_rng([1, k])) for k in range(150)]


@pytest.fixture(scope="module")
def grown_scenes():
    """The same, with issue 17's families (``synth.grow``: their own random stream)."""
    cfg = synth.SynthConfig(grow=True)
    rng = np.random.default_rng(1)
    return cfg, [synth._script(rng, cfg, np.random.default_rng([1, k]),
                               synth._grow_rng(cfg, f"v{k}")) for k in range(150)]


def _labelled(cfg, scenes):
    for sc in scenes:
        for t in range(1, cfg.duration):
            f = t * cfg.fps
            for i, p in enumerate(sc.people):
                if p.visible[f]:
                    yield sc, i, p, f, t, synth.labels_at(sc, i, f, cfg.fps)


@pytest.mark.parametrize("world", ["scenes", "grown_scenes"])
def test_every_family_occurs_with_positives_and_negatives(world, request):
    cfg, scs = request.getfixturevalue(world)
    lm = synth.labelmap_of(cfg)
    rare = RARE if cfg.grow else ()
    counts = {a: 0 for a in lm.ids}
    n = 0
    for *_, labels in _labelled(cfg, scs):
        n += 1
        for a in labels:
            counts[a] += 1
    for a, c in counts.items():
        if a in rare:         # long-tailed, as AVA's classes: under 2% of the boxes
            assert 0.002 * n < c < 0.02 * n, (lm.name(a), c, n)
        else:
            assert 0.02 * n < c < 0.9 * n, (lm.name(a), c, n)


def test_the_grown_families_only_with_grow(tmp_path):
    """``grow`` off (the default) is the world without issue 17's classes: no label, no
    class in the label map, the same scripts otherwise."""
    base, grown = synth.SynthConfig(), synth.SynthConfig(grow=True)
    assert synth.labelmap_of(base) == synth.LABELMAP
    assert synth.labelmap_of(grown).ids[-2:] == (synth.ANSWER, synth.REACH)
    assert set(synth.labelmap_of(grown).superclasses) == set(synth.GROWN_FAMILIES)
    rng = np.random.default_rng(5)
    for k in range(40):
        sc = synth._script(rng, base, np.random.default_rng([5, k]))
        assert not sc.balls and all(p.waving is None and p.reaching is None for p in sc.people)


def test_relation_rules_need_another_actor(scenes):
    cfg, scs = scenes
    rides = no_ride = listens = silent = screen = 0
    for sc, _i, p, f, _t, labels in _labelled(cfg, scs):
        others_drive = any(q.driver for q in sc.people if q is not p)
        if p.in_cart and not p.driver:
            assert labels[0] == synth.SIT
            assert (synth.RIDE in labels) == others_drive
            rides += others_drive
            no_ride += not others_drive
        speaking = any(q.speaker and q.talking[f] for q in sc.people)
        assert (synth.LISTEN in labels) == (p.audience and speaking and not sc.screen_on)
        if p.audience:
            assert labels[0] == synth.SIT and p.face[f] == -sc.lectern[2]   # faces the lectern
            listens += synth.LISTEN in labels
            silent += not speaking and not sc.screen_on
            screen += speaking and sc.screen_on
        # a talker who is not at the lectern makes nobody listen
        if any(q.talking[f] and not q.speaker for q in sc.people) and not speaking:
            assert synth.LISTEN not in labels
    assert rides and no_ride          # passengers of empty-seat carts only sit
    # the audience only sits while the lectern is silent, and watches the screen when it is on
    assert listens > 20 and silent > 20 and screen > 20


def _render(scenes):
    """The keyframes of 70 scripted scenes, as a viewer sees them: {(scene, f): image}."""
    cfg, scs = scenes
    rng = np.random.default_rng(2)
    return {(k, t * cfg.fps): synth._frame(sc, t * cfg.fps, rng)
            for k, sc in enumerate(scs[:70]) for t in range(1, cfg.duration)}


@pytest.fixture(scope="module")
def rendered(scenes):
    return _render(scenes)


@pytest.fixture(scope="module")
def grown_rendered(grown_scenes):
    return _render(grown_scenes)


def _drawn(img, sc, colour, x1=0.0, x2=None, y1=0.0, y2=None) -> int:
    """Pixels of exactly ``colour`` in the window that differ from the scene's background."""
    h, w = img.shape[:2]
    x1, y1 = max(int(x1), 0), max(int(y1), 0)
    x2, y2 = min(int(np.ceil(w if x2 is None else x2)), w), \
        min(int(np.ceil(h if y2 is None else y2)), h)
    win, bg = img[y1:y2, x1:x2], sc.background[y1:y2, x1:x2]
    return int(((win == colour).all(-1) & (win != bg).any(-1)).sum())


def _flames(img, x1, x2) -> int:
    """Flame pixels (R 255, B 20, flickering G) between columns x1 and x2."""
    win = img[:, max(int(x1), 0):max(int(x2), 0)]
    r, g, b = win[..., 0], win[..., 1], win[..., 2]
    return int(((r == 255) & (b == 20) & (g >= 90) & (g < 200)).sum())


def test_context_labels_are_visible_in_the_frame(scenes, rendered):
    cfg, scs = scenes
    scs = scs[:70]                                   # listen is rare: 70 scenes give > 10
    index = {id(sc): k for k, sc in enumerate(scs)}
    seen = dict.fromkeys(("watch", "warm", "hold", "drive", "ride", "listen", "off"), 0)
    for sc, _i, p, f, _t, labels in _labelled(cfg, scs):
        img, u, cx = rendered[index[id(sc)], f], sc.unit, p.x[f]
        x1, y1, x2, y2 = synth.box_of(sc, p, f)
        sx1, sy1, sx2, sy2 = sc.screen
        screen = img[sy1:sy2, sx1:sx2]
        lit = (screen != screen[0, 0]).any() and screen.std() > 20   # a picture, not a panel
        if synth.WATCH in labels:                          # watchers have a picture to watch
            assert lit
            seen["watch"] += 1
        if not lit:
            seen["off"] += 1
        if synth.WARM in labels:                           # flames within reach
            assert _flames(img, cx - 48 * u, cx + 48 * u) > 0
            seen["warm"] += 1
        elif not p.in_cart:                                # no flames anywhere near
            assert _flames(img, cx - 30 * u, cx + 30 * u) == 0
        hand = x2 if p.face[f] > 0 else x1                 # the box's side the person faces
        side = (hand, hand + 10 * u) if p.face[f] > 0 else (hand - 10 * u, hand)
        if synth.HOLD in labels and 0 <= side[0] and side[1] <= sc.width:
            # a yellow box in the hand, outside the person's box (unless out of the frame)
            assert _drawn(img, sc, synth.YELLOW, *side, y1, y2) > 0
            seen["hold"] += 1
        if synth.DRIVE in labels:                          # the steering wheel at the hands
            assert _drawn(img, sc, (15, 15, 15), cx - 14 * u, cx + 14 * u, y1, y2) > 0
            seen["drive"] += 1
        if p.in_cart:                 # riders share the cart with someone at its wheel
            wx = sc.cart[2] - 2 * u if sc.wheel_side > 0 else sc.cart[0] + 2 * u
            at_wheel = [q for q in sc.people if q is not p and q.in_cart and
                        _drawn(img, sc, q.color, wx - 12 * u, wx + 12 * u, y1, sc.cart[1]) > 0]
            assert (synth.RIDE in labels) == (bool(at_wheel) and synth.DRIVE not in labels)
            seen["ride"] += synth.RIDE in labels
        if synth.LISTEN in labels:
            # a dark screen, a bench below, someone at the lectern with an arm out, talking
            lx, ly, side = sc.lectern
            arm = sorted((lx + side * 6 * u, lx + side * 9 * u))
            assert not lit
            assert _drawn(img, sc, (120, 80, 40), x1, x2, y2 - 8 * u, y2) > 0
            assert any(_drawn(img, sc, q.color, *arm, ly - 40 * u, ly - 24 * u) > 0
                       for q in sc.people if q is not p)
            seen["listen"] += 1
    assert min(seen.values()) > 10, seen


def test_waiters_handed_over_outside_the_clip(scenes):
    cfg, scs = scenes
    waits = 0
    for sc, _i, p, f, t, labels in _labelled(cfg, scs):
        if synth.WAIT in labels:
            waits += 1
            assert 3 <= t - p.handover <= 8
            assert labels[0] == synth.STAND and not p.holding[f]
            # nobody else holding the object is on screen within +-1 s of the keyframe:
            # the receiver has left, so the clip alone cannot tell
            lo, hi = f - cfg.fps, min(f + cfg.fps, len(p.x) - 1)
            for q in sc.people:
                if q is not p and q.holding[lo:hi + 1].all() and not q.holding.all():
                    assert not q.visible[lo:hi + 1].any()
    assert waits > 20
    # people who stand still, empty-handed, all along and never handed anything over:
    # a clip of a waiter looks like one of theirs
    still = [p for sc in scs for p in sc.people if p.handover is None and not p.speaker
             and not p.talking.any() and (p.pose == synth.STAND).all()
             and not p.holding.any() and p.visible.all() and (p.face == p.face[0]).all()]
    assert len(still) > 15            # 9 of them by chance without P_STILL, 20 with it


def test_label_noise_toggles_few_labels(tmp_path):
    clean = synth.SynthConfig(num_train=4, num_val=0, duration=6, label_noise=0.0,
                              width=96, height=96)
    noisy = synth.SynthConfig(**{**clean.__dict__, "label_noise": 0.5})
    synth.run(clean, tmp_path / "c")
    synth.run(noisy, tmp_path / "n")
    a = read_annotations(tmp_path / "c" / "train.csv")
    b = read_annotations(tmp_path / "n" / "train.csv")
    key = ["video_id", "timestamp", "person_id", "action_id"]
    diff = len(set(map(tuple, a[key].values)) ^ set(map(tuple, b[key].values)))
    persons = len(a.drop_duplicates(["video_id", "timestamp", "person_id"]))
    assert 0.2 * persons < diff < 0.8 * persons
    # poses are never noised
    pa, pb = (d[d.action_id.isin(POSES)][key].values.tolist() for d in (a, b))
    assert pa == pb


def _lamp_on(img, sc) -> int:
    """Pixels of the alarm lamp's flash colour around the lamp."""
    x, y = sc.lamp
    r = 6 * sc.unit
    return _drawn(img, sc, synth.LAMP_ON, x - r, x + r, y - r, y + r)


def test_alerted_saw_the_lamp_flash_outside_the_clip(scenes):
    """``alerted`` (past scene context): the lamp flashed while i was on screen 3-9 s
    before t, and the frames of the 2-s clip around t show it dark; nobody else counts."""
    cfg, scs = scenes
    fps, rng = cfg.fps, np.random.default_rng(3)
    frames: dict = {}

    def on(k, sc, g):
        if (k, g) not in frames:
            frames[k, g] = _lamp_on(synth._frame(sc, g, rng), sc) > 0
        return frames[k, g]

    alerted = late = lit_in_clip = 0
    for k, sc in enumerate(scs):
        assert sc.lamp is not None                          # a lamp in every scene
        for t in range(1, cfg.duration):
            f = t * fps
            for i, p in enumerate(sc.people):
                if not p.visible[f]:
                    continue
                labels = synth.labels_at(sc, i, f, fps)
                window = range(max(f - 9 * fps, 0), f - 3 * fps + 1)
                clip = range(f - fps, min(f + fps, len(p.x) - 1) + 1)
                saw = [g for g in window if sc.lamp_lit[g] and p.visible[g]]
                if synth.ALERTED in labels:
                    alerted += 1
                    if k < 40:                              # as rendered: seen, then dark
                        assert any(on(k, sc, g) for g in saw[:4])
                        assert not any(on(k, sc, g) for g in clip)
                    assert not sc.lamp_lit[clip.start: clip.stop].any()
                    # the same label with everyone else gone: no other person involved
                    alone = synth.Scene(**{**sc.__dict__, "people": [p]})
                    assert synth.ALERTED in synth.labels_at(alone, 0, f, fps)
                elif sc.lamp_lit[window.start: window.stop].any():
                    if sc.lamp_lit[clip.start: clip.stop].any():
                        lit_in_clip += 1                    # still flashing: not yet
                    else:
                        assert not saw
                        late += 1                           # came after it went dark
    # positives; people who walked in after the flash; keyframes while it still flashes
    assert alerted > 200 and late > 10 and lit_in_clip > 10, (alerted, late, lit_in_clip)


def test_alarm_draws_from_its_own_stream():
    """The lamp and the late arrivals leave the rest of a scene as it was without them."""
    cfg = synth.SynthConfig()
    for k in range(20):
        a = synth._script(np.random.default_rng(k), cfg, np.random.default_rng(100 + k))
        b = synth._script(np.random.default_rng(k), cfg, np.random.default_rng(200 + k))
        n = min(len(a.people), len(b.people))
        assert n >= len(a.people) - 1 and n >= len(b.people) - 1    # one arrival at most
        for p, q in zip(a.people[:n], b.people[:n], strict=True):
            if not p.visible[0] or not q.visible[0]:
                continue                                            # an arrival
            assert np.array_equal(p.x, q.x) and np.array_equal(p.pose, q.pose)


def test_answer_needs_the_order_of_two_waves(grown_scenes):
    cfg, scs = grown_scenes
    fps = cfg.fps
    seen = dict.fromkeys(("answer", "first", "alone", "together"), 0)
    for sc, _i, p, f, _t, labels in _labelled(cfg, scs):
        mine = synth.waved(p, f, fps)
        others = [synth.waved(q, f, fps) for q in sc.people if q is not p and q.visible[f]]
        first = [q for q in sc.people if q is not p and q.visible[f]
                 and synth.waved(q, f, fps) == (True, False)]
        assert (synth.ANSWER in labels) == (mine == (False, True) and bool(first))
        if synth.ANSWER in labels:
            seen["answer"] += 1
            # the one who waved first has the same waves, in the other order: a head that
            # averages the clip over time sees two people who each waved once, 0.5 s
            clip = np.arange(f - fps, f + fps, 2)              # the 8 samples, stride 2
            assert all(p.waving[clip].sum() == q.waving[clip].sum() == 2 for q in first)
            assert synth.ANSWER not in synth.labels_at(sc, sc.people.index(first[0]), f, fps)
        elif mine == (True, False) and (False, True) in others:
            seen["first"] += 1                                 # the reverse order
        elif any(mine) and not any(map(any, others)):
            seen["alone"] += 1
        elif any(mine) and mine in others:
            seen["together"] += 1
    assert min(seen.values()) > 10, seen
    assert abs(seen["first"] - seen["answer"]) <= 0.2 * seen["answer"], seen


def test_waves_show_in_their_own_temporal_bin(grown_scenes):
    """hoghof on each half of the clip (2 temporal bins of 4 samples): the answerer's wave
    changes the second bin's cells around it and not the first's; the first waver's the
    reverse.  Averaged over the whole clip, both waves show."""
    from pipeline.backbones.hoghof import CELL, HogHof

    cfg, scs = grown_scenes
    fps, hog = cfg.fps, HogHof()
    checked = 0
    for sc, _i, p, f, _t, labels in _labelled(cfg, scs):
        if synth.ANSWER not in labels:
            continue
        j = next(k for k, q in enumerate(sc.people) if q is not p
                 and synth.waved(q, f, fps) == (True, False))
        if abs(sc.people[j].x[f] - p.x[f]) < 3 * CELL:       # cells of their own
            continue
        clip = range(f - fps, f + fps, 2)
        saved = [(q, q.waving) for q in sc.people]
        with_waves = [synth._frame(sc, g, np.random.default_rng(g)) for g in clip]
        for q in sc.people:
            q.waving = None
        still = [synth._frame(sc, g, np.random.default_rng(g)) for g in clip]
        for q, w in saved:
            q.waving = w

        def feats(frames):                       # (T, H, W, 3) -> (30, h, w)
            x = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None].float()
            return hog(x / 127.5 - 1)[0, :, 0]

        def change(a, b):                        # per cell column: |a - b| summed
            return (feats(a) - feats(b)).abs().sum((0, 1))                    # (w,)

        bins = [change(with_waves[:4], still[:4]), change(with_waves[4:], still[4:])]
        ci, cj = (int((q.x[f] - q.face[f] * 4 * sc.unit) // CELL)   # the waving arm's cell
                  for q in (p, sc.people[j]))
        assert bins[1][ci] > 0.5 and bins[0][ci] < 0.1 * bins[1][ci], bins
        assert bins[0][cj] > 0.5 and bins[1][cj] < 0.1 * bins[0][cj], bins
        whole = change(with_waves, still)
        assert whole[ci] > 0.2 and whole[cj] > 0.2
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_reach_needs_the_green_ball_beside_on_the_side_faced(grown_scenes, grown_rendered):
    cfg, scs = grown_scenes
    seen = dict.fromkeys(("reach", "blue", "not yet", "decoy"), 0)
    index = {id(sc): k for k, sc in enumerate(scs[:70])}
    for sc, _i, p, f, _t, labels in _labelled(cfg, scs):
        u = sc.unit
        beside = [(bx, synth.ball_colour(sc, k, f)) for k, (bx, by, _) in enumerate(sc.balls)
                  if synth.REACH_X[0] * u - 1e-6 <= abs(bx - p.x[f]) <= synth.REACH_X[1] * u + 1e-6]
        faced = [c for bx, c in beside if p.face[f] * (bx - p.x[f]) > 0]
        reaching = p.reaching is not None and p.reaching[f]
        assert (synth.REACH in labels) == (reaching and synth.GREEN in faced)
        if synth.REACH in labels:
            seen["reach"] += 1
            x1, y1, x2, y2 = synth.box_of(sc, p, f)
            if id(sc) in index:         # the ball and the hand are drawn beyond the box
                img = grown_rendered[index[id(sc)], f]
                reach = synth.REACH_X[1] * u
                out = (x2, x2 + reach) if p.face[f] > 0 else (x1 - reach, x1)
                walkers = [q for q in sc.people if q is not p and q.visible[f] and
                           out[0] - 8 * u < q.x[f] < out[1] + 8 * u]   # may pass in front
                assert walkers or _drawn(img, sc, synth.GREEN, *out, y1, y2) > 10
                assert _drawn(img, sc, p.color, *out, y1, y2) > 0
        elif reaching:                           # the same reach, for a blue ball
            assert beside and faced == [synth.BLUE], (beside, faced)
            if sc.green is not None and sc.green.any():
                seen["not yet"] += 1             # ... which is green at other times
            else:
                seen["blue"] += 1                # ... which stays blue
        else:
            assert p.reaching is None            # a reacher's arm is out all along
        if any(synth.ball_colour(sc, k, f) == synth.GREEN and
               min(abs(bx - q.x[f]) for q in sc.people) >= 30 * u
               for k, (bx, _, _) in enumerate(sc.balls)):
            seen["decoy"] += 1                   # a green ball far from everyone
    assert min(seen.values()) > 10, seen


def test_reach_ball_is_out_of_the_reachers_roi_feature(grown_scenes):
    """The ball's colour is what tells a ``reach``, and the reacher's RoI feature (RoIAlign
    7x7 + max over the HOG/HOF/colour cells, the box as drawn and jittered by 7.5%) is the
    same for a green and a blue ball, though the maps differ: only a head that looks
    outside the box (atr) can tell the two apart."""
    import dataclasses

    from pipeline.backbones.hoghof import HogHof
    from pipeline.models.actor import actor_vectors

    cfg, scs = grown_scenes
    cases = [(sc, p, int(np.flatnonzero(p.reaching)[0]) + cfg.fps // 2)
             for sc in scs for p in sc.people if p.reaching is not None][:6]
    assert len(cases) == 6
    for sc, p, f in cases:
        frames = np.clip(f + 2 * (np.arange(8) - 4), 0, len(p.x) - 1)
        near = [k for k, (bx, _, _) in enumerate(sc.balls)
                if abs(abs(bx - p.x[f]) - np.mean(synth.REACH_X) * sc.unit) <= 2 * sc.unit]
        assert len(near) == 1

        def cells(colour, sc=sc, frames=frames, k=near[0]):
            balls = [b if i != k else (*b[:2], colour) for i, b in enumerate(sc.balls)]
            s = dataclasses.replace(sc, balls=balls, green=None)
            clip = np.stack([synth._frame(s, int(g), np.random.default_rng(int(g)))
                             for g in frames])                            # (T, H, W, 3)
            x = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            return HogHof()(x)[:, :, 0]                                   # (1, C, h, w)

        green, blue = cells(synth.GREEN), cells(synth.BLUE)
        assert (green - blue).abs().amax() > 0.5                          # the ball is seen
        x1, y1, x2, y2 = synth.box_of(sc, p, f)
        dw, dh = 0.075 * (x2 - x1), 0.075 * (y2 - y1)
        for box in ((x1, y1, x2, y2), (x1 - dw, y1 - dh, x2 + dw, y2 + dh)):
            rois = torch.tensor([[0.0, *box]]) / torch.tensor([1.0] + [HogHof.stride] * 4)
            torch.testing.assert_close(actor_vectors(green, rois), actor_vectors(blue, rois))


def test_most_scenes_have_a_reacher(grown_scenes):
    """The ball stands far out (REACH_X), so the reacher and the ball do not both fit
    between the cart and the lecture: the ball may stand in front of them (not of the fire
    or of anyone who does not walk), and a reacher too near the image's edge turns to the
    other side.  Most scenes that try (P_REACH) get one, so ``reach`` is learnable."""
    cfg, scs = grown_scenes
    reachers = [p for sc in scs for p in sc.people if p.reaching is not None]
    assert len(reachers) > 0.5 * synth.P_REACH * len(scs), len(reachers)
    for sc in scs:
        for p in sc.people:
            if p.reaching is None:
                continue
            bx = p.x[0] + p.face[0] * np.mean(synth.REACH_X) * sc.unit
            assert 0 < bx < cfg.width                            # on the image
            if sc.fire is not None:
                assert abs(bx - sc.fire[0]) >= 12 * sc.unit   # 14 px, less REACH_X's spread
