"""The command line: real commands in-process (``main(argv)``), errors that say what to do."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
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
    # the checkpoint records its data set, limit and split: evaluate needs only the folder
    meta = load_checkpoint(out / "model.safetensors").meta
    assert meta["dataset"] == str(small_csv.resolve()) and meta["limit"] is None and meta["split"] == "leave-last-out"
    rc = main(["evaluate", str(out), "--baselines", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    # the checkpoint evaluates to exactly what training measured on the same split
    assert rows["hail"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    assert {"popularity", "markov", "user-frequency"} <= set(rows)


@needs_nyc
def test_train_takes_the_model_options_of_the_benchmarks(small_csv, tmp_path):
    """The configuration of the accuracy table's rows is one command: coded MED with its α/β/γ, the
    history-aware output, the transition output, one shared item table, AdamW with warm-up and clipping."""
    out = tmp_path / "run"
    rc = main(["train", "--dataset", str(small_csv), "--model", "hail", "--epochs", "1", "--hidden", "8",
               "--heads", "2", "--layers", "1", "--max-len", "10", "--history", "copy", "--share-embedding",
               "--med-form", "coded", "--med-alpha", "-1", "--med-beta", "0.1", "--med-gamma", "2",
               "--optimizer", "adamw", "--schedule", "linear", "--warmup-steps", "5", "--clip-norm", "1",
               "--weight-decay", "0.01", "--transitions", "16", "--neighbours", "--trans-mode", "bias", "--quiet", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cfg, tc = metrics["config"], metrics["train"]
    assert (cfg["history"], cfg["share_embedding"], cfg["output_bias"], cfg["heads"]) == ("copy", True, True, 2)
    assert (cfg["med_form"], cfg["med_alpha"], cfg["med_beta"], cfg["med_gamma"]) == ("coded", -1.0, 0.1, 2.0)
    assert (tc["optimizer"], tc["schedule"], tc["warmup_steps"], tc["clip_norm"]) == ("adamw", "linear", 5, 1.0)
    ckpt = load_checkpoint(out / "model.safetensors")
    assert ckpt.config.history == "copy" and ckpt.config.transitions == 16
    assert ckpt.config.trans_recent == (1.0, 0.6, 0.2) and ckpt.config.trans_backward == 0.5
    assert ckpt.config.trans_mode == "bias"
    assert float(ckpt.model.trans_total.sum()) > 0  # the table travels with the model


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
        (["train", "--dataset", "no/such.csv", "--out", "x"], "file not found"),
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


@needs_nyc
def test_a_limited_checkpoint_evaluates_with_its_own_limit(small_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(small_csv), "--model", "sasrec", "--epochs", "1", "--hidden", "8",
                 "--layers", "1", "--max-len", "10", "--limit", "2000", "--quiet", "--json", "--out", str(out)]) == 0
    trained = json.loads((out / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sasrec"]["ndcg@10"] == pytest.approx(trained["ndcg@10"], abs=1e-6)


def test_too_small_data_fails_clearly(tmp_path, capsys):
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("user,item,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\n")
    assert main(["train", "--dataset", str(tiny), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "too small" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["demo", "--limit", "-5"], ["demo", "--limit", "0"], ["demo", "--max-rate", "-1"],
    ["demo", "--checkpoint", "/no/such/model.safetensors"], ["replay", "--dataset", "x", "--limit", "0"],
    ["train", "--dataset", "x", "--out", "y", "--epochs", "0"], ["demo", "--linger", "-1"],
    ["replay", "--dataset", "x", "--backfill", "-1"], ["demo", "--backfill", "some"],
])
def test_bad_arguments_exit_2_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_checkpoint_is_a_usage_error(tmp_path, capsys):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    ckpt.chmod(0)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--checkpoint", str(ckpt)])
    assert e.value.code == 2 and "permission denied" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("hailstream ")


def test_every_flag_is_described():
    from stream.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"hailstream {name} {action.option_strings[0]} has no description"


def test_help_imports_neither_torch_nor_faust():
    """--help stays fast (timings: bench/RESULTS.md): building the parsers imports no heavy library."""
    code = ("import sys; from stream.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'faust', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_backfill_takes_a_count_or_all():
    from stream.cli.main import _backfill

    assert (_backfill("0"), _backfill("500"), _backfill("all"), _backfill("ALL")) == (0, 500, None, None)
