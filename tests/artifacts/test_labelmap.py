import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.labelmap import (
    AVA_NAMES,
    LabelMap,
    read_labelmap,
    softmax_notice,
    write_labelmap,
)
from tests.conftest import LABELMAP


def test_round_trip_with_superclasses(tmp_path):
    write_labelmap(LABELMAP, tmp_path / "l.pbtxt")
    back = read_labelmap(tmp_path / "l.pbtxt")
    assert back == LABELMAP
    assert back.pose_indices == [0, 1]
    assert LabelMap.from_dict(back.to_dict()) == back


def test_ava_item_format_gets_ava_superclasses(tmp_path):
    p = tmp_path / "ava.pbtxt"
    p.write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
                 'item {\n  name: "carry/hold (an object)"\n  id: 17\n}\n'
                 'item {\n  name: "talk to (e.g., self, a person, a group)"\n  id: 79\n}\n')
    lm = read_labelmap(p)
    assert lm.ids == (1, 17, 79)
    assert lm.names[0] == "bend/bow (at the waist)"
    assert lm.superclasses == ("pose", "object", "person")


def test_ava_v21_label_format(tmp_path):
    p = tmp_path / "v21.pbtxt"
    p.write_text('label {\n  name: "stand"\n  label_id: 12\n  label_type: PERSON_MOVEMENT\n}\n'
                 'label {\n  name: "watch (a person)"\n  label_id: 80\n'
                 '  label_type: PERSON_INTERACTION\n}\n')
    lm = read_labelmap(p)
    assert lm.ids == (12, 80) and lm.superclasses == ("pose", "person")


@pytest.mark.parametrize("text, problem", [
    ("", "no 'item"),
    ('item { name: "a" }', "needs a name and an id"),
    ('item { name: "a" id: x1 }', "id must be an integer"),
    ('item { name: "a" id: 1 }\nitem { name: "b" id: 1 }', "duplicate id 1"),
])
def test_bad_labelmap(tmp_path, text, problem):
    p = tmp_path / "bad.pbtxt"
    p.write_text(text)
    with pytest.raises(ArtifactError, match=problem):
        read_labelmap(p)


def test_unreadable_labelmap(tmp_path):
    p = tmp_path / "bin.pbtxt"
    p.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ArtifactError, match="cannot read label map"):
        read_labelmap(p)


@pytest.mark.parametrize("text, line, problem", [
    # issue 19 item 6: a missing '}' used to swallow a class silently (10 -> 9 classes)
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n\nitem {\n  name: "c"\n'
     '  id: 3\n}\n', 5, "'item' block is not closed"),
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n', 5,
     "'item' block is not closed"),
    ('item {\n  name: "a"\n  id: 1\n}\n}\n', 5, "unexpected text"),
    ('item {\n  name: "a"\n  id: 1\n}\nitem \n  name: "b"\n  id: 2\n}\n', 5, "unexpected text"),
    ('itme {\n  name: "a"\n  id: 1\n}\n', 1, "unexpected text 'itme {'"),
])
def test_malformed_block_is_an_error_naming_its_line(tmp_path, text, line, problem):
    p = tmp_path / "bad.pbtxt"
    p.write_text(text)
    with pytest.raises(ArtifactError, match=rf"bad.pbtxt:{line}: .*{problem}"):
        read_labelmap(p)


def test_comments_and_blank_lines_between_blocks_are_fine(tmp_path):
    p = tmp_path / "c.pbtxt"
    p.write_text('# a label map\n\nitem {\n  name: "a"\n  id: 1\n}\n  # two\nitem { name: "b" '
                 'id: 2 }\n\n')
    assert read_labelmap(p).ids == (1, 2)


def _plain(path, names):
    path.write_text("".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n'
                            for i, n in enumerate(names, 1)))
    return path


def test_own_plain_map_gets_no_pose_group(tmp_path):
    # issue 20 item 10: ids 1..10 used to fall into AVA's pose range 1-14 (one softmax)
    names = ["pick", "place", "scan", "walk", "talk", "hold", "open", "close", "point", "wave"]
    lm = read_labelmap(_plain(tmp_path / "own.pbtxt", names))
    assert lm.ids == tuple(range(1, 11))
    assert lm.pose_indices == [] and set(lm.superclasses) == {""}
    assert "no pose softmax group" in softmax_notice(lm)
    forced = read_labelmap(tmp_path / "own.pbtxt", ava_ranges=True)
    assert forced.pose_indices == list(range(10))


def test_ava_names_get_ava_ranges_and_a_renamed_class_does_not(tmp_path):
    # AVA's names as its pbtxt spells them: the parenthesised part is not compared
    full = {1: "bend/bow (at the waist)", 17: "carry/hold (an object)",
            49: "ride (e.g., a bike, a car, a horse)", 80: "watch (a person)"}
    ava60 = {a: full.get(a, n) for a, n in AVA_NAMES.items() if a not in
             (2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53, 55, 71, 75)}
    assert len(ava60) == 60
    p = tmp_path / "ava60.pbtxt"
    p.write_text("".join(f'item {{\n  name: "{n}"\n  id: {a}\n}}\n' for a, n in ava60.items()))
    lm = read_labelmap(p)
    assert [lm.ids[i] for i in lm.pose_indices] == [a for a in ava60 if a <= 14]
    assert lm.superclasses[lm.ids.index(17)] == "object"
    assert lm.superclasses[lm.ids.index(80)] == "person"
    assert "pose softmax over 13 classes (bend/bow (at the waist), crouch/kneel" \
        in softmax_notice(lm)
    p.write_text(p.read_text().replace('"stand"', '"standing still"'))
    assert read_labelmap(p).pose_indices == []
    assert read_labelmap(p, ava_ranges=False).pose_indices == []


def test_marked_pose_classes_form_the_group(tmp_path):
    p = tmp_path / "m.pbtxt"
    p.write_text('item { name: "up" id: 1 superclass: "pose" }\n'
                 'item { name: "down" id: 2 superclass: "pose" }\n'
                 'item { name: "wave" id: 3 }\n')
    lm = read_labelmap(p)
    assert lm.pose_indices == [0, 1] and lm.superclasses == ("pose", "pose", "")
    assert softmax_notice(lm) == ("pose softmax over 2 classes (up, down); a sigmoid for "
                                  "each of the other 1")


def test_toy_world_map_keeps_its_grouping(tmp_path):
    from pipeline.synth import LABELMAP as TOY

    write_labelmap(TOY, tmp_path / "toy.pbtxt")
    back = read_labelmap(tmp_path / "toy.pbtxt")
    assert back == TOY and back.pose_indices == [0, 1, 2]
