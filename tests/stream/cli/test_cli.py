"""The command line: real commands in-process (``main(argv)``), errors that say what to do."""

import json

import numpy as np
import pytest

from models.data import load_dataset
from stream.cli.main import main
from tests.data import needs_nyc


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """The first 4,000 Foursquare NYC check-ins as a generic user,item,timestamp CSV."""
    ev = load_dataset("foursquare-nyc").head(4000)
    path = tmp_path_factory.mktemp("data") / "nyc4k.csv"
    rows = ["user,item,timestamp"] + [f"{u},{i},{t:.0f}" for u, i, t in zip(ev.users, ev.items, ev.ts, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


@needs_nyc
def test_train_then_evaluate_round_trip(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", str(small_csv), "--model", "hail", "--peers", "2", "--epochs", "2",
               "--hidden", "16", "--layers", "1", "--max-len", "20", "--quiet", "--json", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["n_peers"] == 2 and metrics["config"]["distill"] == "med"
    assert 0.0 <= metrics["test"]["ndcg@10"] <= 1.0 and metrics["test"]["n"] > 100
    assert len(json.loads((out / "history.json").read_text())) >= 1
    capsys.readouterr()
    rc = main(["evaluate", str(out / "model.safetensors"), "--dataset", str(small_csv), "--baselines", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    # the checkpoint evaluates to exactly what training measured on the same split
    assert rows["hail"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    assert {"popularity", "markov", "user-frequency"} <= set(rows)


@needs_nyc
def test_evaluate_on_another_dataset_is_refused(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(small_csv), "--model", "sasrec", "--epochs", "1", "--hidden", "8",
                 "--layers", "1", "--max-len", "10", "--quiet", "--out", str(out)]) == 0
    other = tmp_path / "other.csv"
    other.write_text("user,item,timestamp\n" + "\n".join(f"u{n % 7},x{n},{n}" for n in range(60)) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.safetensors"), "--dataset", str(other)]) == 2
    assert "another item vocabulary" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "no-such-data", "--out", "x"], "use foursquare-nyc, amazon-beauty"),
        pytest.param(["train", "--dataset", "foursquare-nyc", "--model", "hail", "--peers", "1", "--out", "x"],
                     "--peers must be >= 2", marks=needs_nyc),
        pytest.param(["evaluate", "missing.safetensors", "--dataset", "foursquare-nyc"], "missing.safetensors",
                     marks=needs_nyc),
        pytest.param(["replay", "--dataset", "foursquare-nyc", "--bootstrap-servers", "127.0.0.1:1", "--limit", "1"],
                     "HAILSTREAM_BOOTSTRAP_SERVERS", marks=needs_nyc),
    ],
)
def test_errors_exit_2_with_a_hint(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hailstream {argv[0]}: error:") and message in err


@needs_nyc
def test_not_a_checkpoint_is_refused(tmp_path, capsys):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(np.arange(100, dtype=np.int64).tobytes())
    assert main(["evaluate", str(fake), "--dataset", "foursquare-nyc"]) == 2
    assert "checkpoint" in capsys.readouterr().err.lower()
