import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.labelmap import LabelMap, read_labelmap, write_labelmap
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
