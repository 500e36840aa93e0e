import pytest

from models.errors import ModelsError
from models.vocab import ItemVocab


def test_indices_are_stable_and_never_reused():
    v = ItemVocab(["a", "b", "c"])
    before = {i: v.index(i) for i in "abc"}
    for new in ["d", "a", "e"]:
        v.add(new)
    assert {i: v.index(i) for i in "abc"} == before
    assert (v.index("d"), v.index("e"), v.rows) == (4, 5, 6)


def test_round_trip_and_corruption():
    v = ItemVocab(["x", "y"])
    assert ItemVocab.from_list(v.to_list()).to_list() == ["x", "y"]
    with pytest.raises(ModelsError, match="duplicate"):
        ItemVocab.from_list(["x", "x"])
    with pytest.raises(ModelsError, match="outside"):
        v.id_of(0)
