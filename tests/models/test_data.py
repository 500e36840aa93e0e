import gzip

import numpy as np
import pytest

from models.data import load_dataset
from models.errors import DataError
from tests.data import needs_beauty, needs_nyc


@needs_nyc
def test_foursquare_nyc_matches_its_readme():
    ev = load_dataset("foursquare-nyc")
    assert (len(ev), ev.n_users, ev.n_items) == (113_344, 1_082, 4_988)
    assert np.all(np.diff(ev.ts) >= 0)
    assert ev.block is not None and set(ev.block.tolist()) == {"T0", "T1", "T2", "T3", "T4", "T5"}
    assert ev.lat is not None and 40 < float(ev.lat.mean()) < 41.5


@needs_beauty
def test_amazon_beauty_matches_its_readme_and_keeps_line_order_on_ties():
    ev = load_dataset("amazon-beauty")
    assert (len(ev), ev.n_users, ev.n_items) == (198_502, 22_363, 12_101)
    assert np.all(np.diff(ev.ts) >= 0)
    # user "1" bought 7873, 6846 on the same day (ties) and then 4585: source order is kept
    mask = ev.users == "1"
    assert ev.items[mask].tolist() == ["7873", "6846", "4585", "1", "5406"]


def test_generic_tsv_and_recbole_inter(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("user_id\titem_id\ttimestamp\nu\tx\t5\nu\ty\t3\n")
    ev = load_dataset(tsv)
    assert ev.items.tolist() == ["y", "x"]
    inter = tmp_path / "ml.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t9\n2\t11\t5\t8\n")
    ev = load_dataset(inter)
    assert ev.users.tolist() == ["2", "1"] and ev.ts.tolist() == [8.0, 9.0]
    gz = tmp_path / "g.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write("user,poi_id,unix_s,lat,lon\na,p,1,40.7,-73.9\n")
    ev = load_dataset(gz)
    assert ev.lat is not None and ev.lat.tolist() == [40.7]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("who,what,when\n1,2,3\n", "no user column"),
        ("user,item,timestamp\nu,i,yesterday\n", "malformed row"),
        ("user,item,timestamp\nu,i\n", "malformed row"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(p)


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="use foursquare-nyc, amazon-beauty"):
        load_dataset("no-such-thing")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("foursquare-nyc", data_dir=tmp_path)
