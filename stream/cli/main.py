"""The ``hailstream`` command line. Thin: one parser per command (every setting is a flag there, see
:mod:`stream.cli.flags`), build the one :class:`~stream.settings.Settings`, call one function.

Errors of the project (``ModelsError``, ``StreamError``) end the command with exit status 2 and one line
that says what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.errors import ModelsError
from models.names import HISTORY, MED_FORMS, MODELS, OPTIMIZERS, POSITIONS, SCHEDULES, TRANS_MODES
from stream.cli.flags import add_settings_flags, settings_from_args
from stream.errors import StreamError
from stream.settings import Settings, settings_fields

#: Settings the demo sets itself, per run directory (not flags of ``hailstream demo``).
DEMO_OWN = ("checkpoint", "stats_file", "timeline", "datadir", "trainer_checkpoint", "trainer_stats_file")


def _count(text: str) -> int:
    """An argparse type: a whole number >= 1 (usage errors exit 2 before anything starts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _backfill(text: str) -> int | None:
    """An argparse type: a whole number >= 0 of backfill events, or ``all`` (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (or all), got {value}")
    return value


BACKFILL_HELP = ("first publish the N newest earlier events the replay leaves out ('all': every one; with "
                 "--from-block T1 that is the training block), marked as backfill: they fill the users' histories "
                 "and the baselines without being scored, so model and baselines see the same past (default 0)")


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _nonnegative(text: str) -> float:
    """An argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _readable(text: str) -> str:
    """An argparse type: a checkpoint that exists and can be read (a file, or a folder holding
    model.safetensors)."""
    path = Path(text)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {path} (permission denied)")
    return str(path)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hailstream")
    except Exception:  # not installed: the source tree
        return "unknown"


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    return settings_from_args(args, **extra)


def _cmd_train(args: argparse.Namespace) -> int:
    from models.transitions import NEIGHBOURS
    from stream.cli.offline import print_table, train_command

    model_overrides = {
        k: v
        for k, v in {
            "hidden": args.hidden, "layers": args.layers, "dropout": args.dropout, "max_len": args.max_len,
            "med_weight": args.med_weight, "med_topk": args.med_topk, "med_form": args.med_form,
            "med_aggregate": args.med_aggregate, "med_warmup_epochs": args.med_warmup, "seed": args.seed,
            "encoders": tuple(args.encoders.split(",")) if args.encoders else None,
            "med_alpha": args.med_alpha, "med_beta": args.med_beta, "med_gamma": args.med_gamma,
            "history": args.history, "heads": args.heads, "positions": args.positions,
            "contrast": args.contrast, "contrast_tau": args.contrast_tau, "transitions": args.transitions,
            **(NEIGHBOURS if args.neighbours else {}), "trans_mode": args.trans_mode,
            "share_embedding": True if args.share_embedding else None,
            "output_bias": True if args.share_embedding else None,
        }.items()
        if v is not None
    }
    train_overrides = {
        k: v
        for k, v in {
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
            "threads": args.threads, "seed": args.seed, "progress": not args.quiet,
            "optimizer": args.optimizer, "schedule": args.schedule, "warmup_steps": args.warmup_steps,
            "clip_norm": args.clip_norm, "weight_decay": args.weight_decay,
        }.items()
        if v is not None
    }
    metrics = train_command(
        args.dataset, Path(args.out), args.model, args.peers, args.data_dir, args.limit,
        model_overrides, train_overrides,
    )
    print(f"best epoch {metrics['best_epoch']}, {metrics['seconds_per_epoch']:.1f} s/epoch; "
          f"checkpoint {Path(args.out) / 'model.safetensors'}")
    print_table({f"{args.model} (valid)": metrics["valid"], f"{args.model} (test)": metrics["test"]}, args.json)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stream.cli.offline import evaluate_command, print_table

    rows = evaluate_command(Path(args.checkpoint), args.dataset, args.stage, args.data_dir, args.limit,
                            args.baselines)
    print_table(rows, args.json)
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from stream.kafka.broker import run_broker

    return run_broker(port=args.port)


def _cmd_replay(args: argparse.Namespace) -> int:
    from stream.cli.replay import run_replay

    run_replay(args.dataset, _settings(args), speed=args.speed, max_rate=args.max_rate,
               from_block=args.from_block, limit=args.limit, backfill=args.backfill)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from stream.kafka.topics import run_topics

    run_topics(_settings(args), delete=args.delete)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from stream.worker.process import run_worker

    settings = _settings(args)
    if settings.worker.checkpoint is None:
        raise StreamError("hailstream worker needs the model to serve: --checkpoint PATH (or HAILSTREAM_CHECKPOINT)")
    run_worker(settings)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from stream.observe.report import report_command

    print(report_command(Path(args.run), Path(args.out) if args.out else None, args.title))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream.cli.demo import run_demo

    settings = _settings(args)
    # what the user chose (a flag, or a variable set to another value than the default) wins over
    # the demo's trainer sizing
    now, defaults = settings.flat(), Settings().flat()
    chosen = {n for n in settings_fields() if getattr(args, n, None) is not None or now[n] != defaults[n]}
    from stream.lifeline import stop_signals_raise

    # SIGTERM/SIGHUP (and a second Ctrl-C) unwind like Ctrl-C: every process the demo started is stopped.
    with stop_signals_raise((signal.SIGTERM, signal.SIGHUP, signal.SIGINT)):
        summary = _run_demo(run_demo, settings, args, chosen)
    return 0 if summary.get("complete", False) else 1


def _run_demo(run_demo: Any, settings: Settings, args: argparse.Namespace, chosen: set[str]) -> dict[str, Any]:
    return run_demo(
        settings,
        dataset=args.dataset,
        limit=args.limit,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        epochs=args.epochs,
        max_rate=args.max_rate,
        summary_json=Path(args.summary_json) if args.summary_json else None,
        live=not args.quiet,
        embedded=False if args.bootstrap_servers else None,
        trainer=not args.no_trainer,
        drift=args.drift or args.drift_at is not None,
        drift_at=args.drift_at,
        backfill=args.backfill,
        drift_seed=args.drift_seed,
        linger=args.linger,
        chosen=chosen,
    )


def _cmd_trainer(args: argparse.Namespace) -> int:
    from stream.trainer.process import run_trainer

    run_trainer(_settings(args))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from stream.cli.model_admin import models_command

    print(models_command(_settings(args), args.action, args.version, announce=not args.no_announce))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hailstream", description="Streaming next-item / next-POI recommendation with HAIL on Kafka.")
    p.add_argument("--version", action="version", version=f"hailstream {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, kafka: bool = False) -> None:
        if kafka:
            add_settings_flags(sp, ["shared"])
        else:
            add_settings_flags(sp, ["shared"], only=["data_dir"])

    t = sub.add_parser("train", help="train a model offline and write a checkpoint")
    common(t)
    t.add_argument("--dataset", required=True, help="foursquare-nyc, amazon-beauty, or a CSV/TSV/.inter path")
    t.add_argument("--model", choices=MODELS, default="hail", help="the model to train (default hail)")
    t.add_argument("--peers", type=_count, default=2, help="K, the number of peer networks (hail/ensemble/dml; default 2)")
    t.add_argument("--encoders", help="comma-separated encoder per peer, cycled: sasrec,gru4rec")
    t.add_argument("--out", required=True,
                   help="output folder for model.safetensors (the best so far, saved as it improves), "
                        "history.json and metrics.json")
    t.add_argument("--limit", type=_count, help="use only the first N events (quick runs; recorded in the checkpoint)")
    flags: list[tuple[str, Callable[[str], Any], str]] = [
        ("--hidden", _count, "embedding and hidden size (default 64)"),
        ("--layers", _count, "encoder layers per peer (default 2)"),
        ("--dropout", _nonnegative, "dropout rate (default 0.2)"),
        ("--max-len", _count, "longest history a peer reads (default 50)"),
        ("--med-weight", _nonnegative, "weight of the MED distillation loss"),
        ("--med-topk", _count, "items per peer that MED treats as that peer's claims"),
        ("--med-warmup", int, "epochs before MED starts"),
        ("--epochs", _count, "training epochs at most (default 30)"),
        ("--batch-size", _count, "training windows per step (default 64)"),
        ("--lr", _positive, "learning rate (default 0.002)"),
        ("--patience", _count, "stop after this many epochs without a better validation NDCG@10 (default 5)"),
        ("--threads", _count, "torch threads (default: torch's choice)"),
        ("--seed", int, "seed of initialisation, shuffling and dropout (default 0)"),
        ("--heads", _count, "attention heads per layer (default 1; hidden must divide by it)"),
        ("--med-alpha", float, "coded MED: α, the mix of its positive terms (default 0.5; < 0: DESIGN §3's schedule)"),
        ("--med-beta", _nonnegative, "coded MED: β, the share of jointly hardest samples dropped (default 0.02)"),
        ("--med-gamma", _nonnegative, "coded MED: γ, the exponent of the peer weights (default 1)"),
        ("--warmup-steps", int, "optimizer steps of linear learning-rate warm-up (with --schedule linear)"),
        ("--clip-norm", _positive, "clip the gradient norm to this value (default: no clipping)"),
        ("--weight-decay", _nonnegative, "weight decay (default 0)"),
        ("--contrast", _nonnegative, "weight of a contrastive term with same-target positives on each peer's "
                                     "sequence representation (models.contrast, after DuoRec; default 0 = off)"),
        ("--contrast-tau", _positive, "temperature of that contrastive term (default 1)"),
        ("--transitions", int, "successors kept per item for a learned output over every user's item-to-item "
                               "transitions (models.transitions; best on sparse data such as Beauty; default 0 = off)"),
    ]
    for name, typ, text in flags:
        t.add_argument(name, type=typ, help=text)
    t.add_argument("--med-form", choices=MED_FORMS,
                   help="the form of the MED loss: coded (the authors' code, DESIGN §3; default) or an earlier "
                        "reconstruction (ablations)")
    t.add_argument("--history", choices=HISTORY,
                   help="output of every peer: none (softmax over items; default) or copy (a learned gate mixing "
                        "it with the user's own past items and their successors; best on revisit-heavy data)")
    t.add_argument("--positions", choices=POSITIONS,
                   help="where self-attention peers count positions from: start (default; the worker's "
                        "HAILSTREAM_STATE_CACHE then serves them incrementally, one step per event) or end")
    t.add_argument("--neighbours", action="store_true",
                   help="with --transitions: count items up to two steps after and (at half weight) before each "
                        "item, and read the rows of the user's last three items (the co-occurrence baseline's "
                        "settings; Beauty: a better output than successors alone)")
    t.add_argument("--trans-mode", choices=TRANS_MODES,
                   help="with --transitions: mix (a gated mixture component beside the softmax; default) or bias "
                        "(the counts added to the logits as evidence, log(1 + count) times a learned scale)")
    t.add_argument("--share-embedding", action="store_true",
                   help="one item table and output bias shared by all peers (the authors' layout)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default adam)")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate: constant (default) or linear warm-up then linear decay to 0")
    t.add_argument("--med-aggregate", choices=("mean", "max"), help="how MED aggregates the other peers")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print metrics as JSON")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="full-ranking evaluation of a checkpoint")
    common(e)
    e.add_argument("checkpoint", help="a checkpoint file, or the folder hailstream train --out wrote")
    e.add_argument("--dataset", help="data set to evaluate on (default: the one the checkpoint records)")
    e.add_argument("--stage", choices=("valid", "test"), default="test",
                   help="which held-out item of each user to rank (default test)")
    e.add_argument("--limit", type=_count,
                   help="use only the first N events (default: the --limit the checkpoint was trained with)")
    e.add_argument("--baselines", action="store_true", help="also evaluate the baselines")
    e.add_argument("--json", action="store_true", help="print metrics as JSON")
    e.set_defaults(func=_cmd_evaluate)

    b = sub.add_parser("broker", help="run the embedded Kafka-wire broker (Tansu) until Ctrl-C")
    b.add_argument("--port", type=int, help="port on 127.0.0.1 (default: 9092 when free, else a free one)")
    b.set_defaults(func=_cmd_broker)

    r = sub.add_parser("replay", help="publish a data set's events to the interactions topic in time order")
    common(r, kafka=True)
    r.add_argument("--dataset", required=True, help="foursquare-nyc, amazon-beauty, or a CSV/TSV/.inter path")
    r.add_argument("--speed", type=_positive, help="event-time speed-up factor (e.g. 3600 = an hour per second)")
    r.add_argument("--max-rate", type=_positive, help="at most N events per second")
    r.add_argument("--from-block", help="start at this block (Foursquare NYC: T1..T5)")
    r.add_argument("--limit", type=_count, help="publish only the first N events")
    r.add_argument("--backfill", type=_backfill, default=0, metavar="N|all", help=BACKFILL_HELP)
    r.set_defaults(func=_cmd_replay)

    tp = sub.add_parser("topics", help="create the topics (or --delete them) and list them")
    common(tp, kafka=True)
    tp.add_argument("--delete", action="store_true", help="delete the topics instead of creating them")
    tp.set_defaults(func=_cmd_topics)

    w = sub.add_parser("worker", help="run the Faust worker (needs --checkpoint)")
    add_settings_flags(w, ["shared", "worker"])
    w.set_defaults(func=_cmd_worker)

    tr = sub.add_parser("trainer", help="run the incremental trainer: fine-tune on the stream, gate, promote, announce")
    add_settings_flags(tr, ["shared", "trainer"])
    tr.set_defaults(func=_cmd_trainer)

    ms = sub.add_parser("models", help="list the model store's versions, promote one, or roll back the live one")
    common(ms, kafka=True)
    ms.add_argument("action", choices=("list", "promote", "rollback"))
    ms.add_argument("version", nargs="?", type=int, help="version number to promote (3 for v3)")
    ms.add_argument("--no-announce", action="store_true",
                    help="do not tell running workers on the model-updates topic (they read the store on restart)")
    ms.set_defaults(func=_cmd_models)

    d = sub.add_parser("demo", help="one command: embedded broker + HAIL + worker + replay, live view, summary")
    add_settings_flags(d, ["shared", "worker", "trainer"], trainer_prefix="trainer_", skip=DEMO_OWN)
    d.add_argument("--dataset", default="foursquare-nyc", choices=("foursquare-nyc", "amazon-beauty"),
                   help="the data set to train on and replay (default foursquare-nyc)")
    d.add_argument("--limit", type=_count, help="replay only the first N events after the training block")
    d.add_argument("--backfill", type=_backfill, default=0, metavar="N|all",
                   help="seed the worker with the N newest events of the training block ('all': all of it) before "
                        "the replay: histories and baselines only, not scored, so the baselines see the past the "
                        "model was trained on (default 0: the baselines start empty)")
    d.add_argument("--checkpoint", type=_readable,
                   help="serve this checkpoint (file or train --out folder) instead of training the small demo model")
    d.add_argument("--epochs", type=_count, default=None, help="training epochs for the demo model")
    d.add_argument("--max-rate", type=_positive, help="replay at most N events per second")
    d.add_argument("--summary-json", help="also write the final summary as JSON here")
    d.add_argument("--quiet", action="store_true", help="no live view")
    d.add_argument("--no-trainer", action="store_true", help="serve the initial model only: no fine-tunes")
    d.add_argument("--drift", action="store_true",
                   help="rename every item (seeded permutation) from the middle of the replay on: a real shift "
                        "the run detects, fine-tunes on and recovers from (default --limit 10000 --max-rate 100)")
    d.add_argument("--drift-at", type=_count, help="start the shift at this replayed event (implies --drift)")
    d.add_argument("--drift-seed", type=int, default=7, help="seed of the item permutation (default 7)")
    d.add_argument("--linger", type=_nonnegative, default=0.0,
                   help="keep the worker and trainer serving (and /metrics scrapable) SECONDS after the replay")
    d.set_defaults(func=_cmd_demo)

    rp = sub.add_parser("report", help="plot a run's timeline (windowed HR@10, drift, model versions) as a PNG")
    rp.add_argument("run", help="a run directory holding timeline.jsonl (the demo's), or a timeline file")
    rp.add_argument("--out", help="PNG to write (default: <run dir>/report.png)")
    rp.add_argument("--title", help="plot title (default: the run's name)")
    rp.set_defaults(func=_cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ModelsError, StreamError) as e:
        print(f"hailstream {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hailstream {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
