"""Offline training of a HAIL model on a leave-last-out split, and bounded fine-tuning.

Each user's training sequence is cut into windows of ``max_len + 1`` items, from the end (the
latest window is full), stride ``max_len``, so every training target is predicted exactly once
per epoch; window ``w`` gives inputs ``w[:-1]`` and targets ``w[1:]``. The windows are built once
as one LongTensor; each epoch a seeded generator shuffles them into batches of similar length
(:func:`batch_order`) whose all-padding columns are dropped (:func:`trim_padding`): on short-
sequence data (Amazon Beauty: 13% of a 51-wide window is items) the encoder stops paying for
``max_len``. Adam; early stopping on
validation NDCG@10 (full ranking, :func:`models.evaluate.evaluate`); the best weights are kept in
memory and restored at the end. Options for converging runs: AdamW (``optimizer="adamw"``), a
learning rate that warms up linearly over ``warmup_steps`` and then decays linearly to 0 at the
epoch budget (``schedule="linear"``), and gradient-norm clipping (``clip_norm``).
:class:`TrainResult` records the best epoch, the epochs run, the budget and whether the budget
stopped a run that was still improving (``budget_bound``).

>>> left_pad([np.array([1, 2, 3]), np.array([4])], 2).tolist()
[[2, 3], [0, 4]]
>>> make_windows([np.array([1, 2, 3, 4, 5, 6])], max_len=3).tolist()
[[0, 1, 2, 3], [3, 4, 5, 6]]
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from models.contrast import SameTargetIndex
from models.errors import ModelsError
from models.evaluate import ModelScorer, evaluate
from models.hail import HAIL, HailConfig
from models.names import OPTIMIZERS, SCHEDULES
from models.padding import left_pad
from models.splits import SequenceSplit
from models.transitions import TransitionHead

EARLY_STOP_METRIC = "ndcg@10"


@dataclass
class TrainConfig:
    """Optimisation settings. ``patience`` counts evaluations without a new best validation
    NDCG@10; ``threads=None`` leaves torch's thread count alone; ``max_train_windows`` keeps a
    seeded random subset of the windows (quick runs); ``calibrate_gate``: with ``config.transitions``,
    shift the transition gates after training to the best validation NDCG@10
    (:func:`calibrate_transitions`).

    Batch 64 / lr 2e-3 rather than 256 / 1e-3: on Foursquare NYC (~2.7k windows) the larger batch
    gives only ~11 Adam steps an epoch and reached valid NDCG@10 0.26 after 20 epochs, where this
    setting reaches 0.32 after 10, at about the same seconds per epoch."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 5
    eval_every: int = 1
    threads: int | None = None
    seed: int = 0
    progress: bool = True
    eval_batch_size: int = 1024
    max_train_windows: int | None = None
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float | None = None
    calibrate_gate: bool = True


@dataclass
class TrainResult:
    """The trained model (best validation weights), per-epoch history, and timing."""

    model: HAIL
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds_per_epoch: float = 0.0
    epochs_run: int = 0
    budget: int = 0
    #: with ``config.transitions``: the gate shift chosen on validation and each shift's valid NDCG@10
    calibration: dict[str, float] = field(default_factory=dict)

    @property
    def budget_bound(self) -> bool:
        """True when training ran out of epochs with its best epoch the last one: it was still
        improving, so more epochs may help (report it as such)."""
        return self.epochs_run >= self.budget and self.best_epoch == self.epochs_run


def make_windows(sequences: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """Training windows ``[N, max_len + 1]`` (left-padded) covering every next-item target once.

    A sequence of n items gives windows ending at n, n - max_len, n - 2·max_len, ...; sequences
    shorter than 2 give none.
    """
    if max_len < 1:
        raise ModelsError(f"max_len must be >= 1, not {max_len}")
    rows: list[np.ndarray] = []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for end in range(len(s), 1, -max_len):
            rows.append(s[max(0, end - max_len - 1) : end])
    rows.reverse()  # oldest first: cosmetic, the trainer shuffles
    return left_pad(rows, max_len + 1)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trim_padding(batch: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (keeps at least two columns).

    Encoders count positions from the end and mask padding, so the loss is unchanged (up to
    float rounding) while short sequences stop paying for ``max_len``.

    >>> trim_padding(torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5]])).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    real = (batch != 0).any(0)
    first = int(real.to(torch.int8).argmax()) if bool(real.any()) else 0
    return batch[:, min(first, batch.shape[1] - 2) :]


def batch_order(lengths: torch.Tensor, batch_size: int, gen: torch.Generator, pool: int = 50) -> list[torch.Tensor]:
    """One epoch of batches: a seeded shuffle, cut into pools of ``pool`` batches, each pool sorted
    by length before it is cut into batches, then the batches shuffled. Batches hold windows of
    similar length (little padding to trim) and still differ from epoch to epoch.

    >>> b = batch_order(torch.tensor([1, 9, 2, 8, 3, 7]), 2, torch.Generator().manual_seed(0))
    >>> sorted(sorted(x.tolist()) for x in b)
    [[0, 2], [1, 3], [4, 5]]
    """
    order = torch.randperm(len(lengths), generator=gen)
    batches: list[torch.Tensor] = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]




def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam (``weight_decay`` as L2 in the gradient) or AdamW (decoupled weight decay)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ModelsError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based): linear
    warm-up from ``1/warmup`` to 1 over ``warmup_steps``, then constant or (``"linear"``) a linear
    decay reaching 0 at ``total_steps``.

    >>> [round(lr_factor(s, 2, 6, "linear"), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    >>> lr_factor(3, 0, 6, "constant")
    1.0
    """
    if schedule not in SCHEDULES:
        raise ModelsError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))


def _step(
    model: HAIL, opt: torch.optim.Optimizer, batch: torch.Tensor, epoch: int, step: int = 0, total_steps: int = 0,
    clip_norm: float | None = None, positives: torch.Tensor | None = None,
) -> dict[str, float]:
    batch = trim_padding(batch)
    if positives is not None:
        positives = trim_padding(positives)
    loss, stats = model.training_loss(batch[:, :-1], batch[:, 1:], epoch=epoch, step=step, total_steps=total_steps,
                                      positives=positives)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    return stats


class _Positives:
    """The same-target positives of a training run when ``config.contrast`` > 0 (else none), drawn
    with their own seeded generator so that the batch order is the same with and without them."""

    def __init__(self, model: HAIL, windows: torch.Tensor, seed: int, device: torch.device) -> None:
        self.index = SameTargetIndex(windows.cpu()) if model.config.contrast else None
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.device = device

    def __call__(self, rows: torch.Tensor) -> torch.Tensor | None:
        if self.index is None:
            return None
        return self.index.positives(rows.cpu(), self.gen).to(self.device)


#: shifts of the transition gates' bias tried by :func:`calibrate_transitions` (then beyond an
#: edge that wins, see :func:`best_on_grid`)
GATE_SHIFTS = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def best_on_grid(score: Callable[[float], float], grid: Sequence[float], step: float = 1.0,
                 extra: int = 4) -> tuple[float, dict[float, float]]:
    """The value of ``grid`` with the highest ``score`` (ties: the one nearest 0), and every score
    computed. While the winner is an edge of what was tried, the grid grows by ``step`` beyond
    that edge, at most ``extra`` times: a best value at the edge says the optimum may lie outside.

    >>> best, tried = best_on_grid(lambda x: -(x + 3) ** 2, [-1.0, 0.0, 1.0])
    >>> best, sorted(tried)
    (-3.0, [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0])
    >>> best_on_grid(lambda x: -abs(x), [-1.0, 0.0, 1.0])[0]
    0.0
    """
    scores = {float(x): score(float(x)) for x in grid}

    def pick() -> float:
        return max(scores, key=lambda x: (scores[x], -abs(x)))

    for _ in range(extra):
        best = pick()
        if best == min(scores):
            nxt = best - step
        elif best == max(scores):
            nxt = best + step
        else:
            break
        scores[nxt] = score(nxt)
    return pick(), scores


def calibrate_transitions(
    model: HAIL, split: SequenceSplit, batch_size: int = 1024, shifts: Sequence[float] = GATE_SHIFTS,
) -> dict[str, float]:
    """Add to every transition gate's bias (:mod:`models.transitions`) the shift of ``shifts``
    with the best validation NDCG@10 (ties: the shift nearest 0; an edge that wins extends the grid,
    :func:`best_on_grid`), in place.

    Why: the gate is trained for likelihood, which hedges; ranking wants a bolder transition
    share (measured on Beauty, seed 0: a mean transition gate of 0.12 after training, and a shift
    of +1 lifted validation NDCG@10 from 0.0389 to 0.0402). Returns ``{"gate_shift": chosen,
    "valid_ndcg@10 shift S": ...}``; empty for a model without transitions.
    """
    heads = [h for h in model.trans_heads if isinstance(h, TransitionHead)]
    if not heads or not len(split.eval_users):
        return {}
    base = [h.gate.bias.detach().clone() for h in heads]

    def shift(by: float) -> None:
        with torch.no_grad():
            for head, bias in zip(heads, base, strict=True):
                head.gate.bias.copy_(bias + by)

    def score(by: float) -> float:
        shift(by)
        return _validate(model, split, batch_size)["valid_ndcg@10"]

    best, scores = best_on_grid(score, shifts)
    shift(best)
    return {"gate_shift": best, **{f"valid_ndcg@10 shift {by:g}": v for by, v in sorted(scores.items())}}


def _validate(model: HAIL, split: SequenceSplit, batch_size: int) -> dict[str, float]:
    m = evaluate(ModelScorer(model), split, "valid", ks=(10,), batch_size=batch_size)
    return {"valid_ndcg@10": float(m["ndcg@10"]), "valid_hr@10": float(m["hr@10"])}


def train(
    split: SequenceSplit,
    config: HailConfig | None = None,
    train_config: TrainConfig | None = None,
    model: HAIL | None = None,
    on_best: Callable[[HAIL, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a new HAIL (or continue ``model``) on ``split.train``; early-stop on validation NDCG@10.

    Returns the model with its best validation weights restored. ``history`` has one dict per
    epoch: epoch, loss, ce, seconds, and (when evaluated) valid_ndcg@10, valid_hr@10, plus the
    loss statistics (e.g. MED's correct/u/active shares). ``on_best(model, epoch, row)`` is called
    each time validation finds a new best (the caller can save a checkpoint, so that an interrupted
    run leaves its best model so far).
    """
    tc = train_config or TrainConfig()
    if model is None:
        model = HAIL(config or HailConfig(), split.vocab.rows)
    elif model.n_rows < split.vocab.rows:
        model.grow(split.vocab.rows)
    if tc.epochs < 1 or tc.batch_size < 1 or tc.eval_every < 1:
        raise ModelsError("epochs, batch_size and eval_every must be >= 1")
    if tc.optimizer not in OPTIMIZERS or tc.schedule not in SCHEDULES:
        raise ModelsError(f"optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}")
    if tc.warmup_steps < 0 or (tc.clip_norm is not None and tc.clip_norm <= 0):
        raise ModelsError("warmup_steps must be >= 0 and clip_norm > 0 (or None)")
    windows = make_windows(split.train, model.config.max_len)
    model.set_transitions(split.train)  # config.transitions: the table the loss leaves one out of
    if len(windows) == 0:
        raise ModelsError("no training windows: every training sequence is shorter than 2 items")
    gen = torch.Generator().manual_seed(tc.seed)
    if tc.max_train_windows is not None and len(windows) > tc.max_train_windows:
        windows = windows[torch.randperm(len(windows), generator=gen)[: tc.max_train_windows]]
    windows = windows.to(next(model.parameters()).device)
    lengths = (windows != 0).sum(1).cpu()
    can_validate = len(split.eval_users) > 0
    positives = _Positives(model, windows, tc.seed, windows.device)

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -1.0, 0, None
    stale, seconds = 0, 0.0
    with _threads(tc.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)  # dropout
        opt = make_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.weight_decay)
        steps_per_epoch = -(-len(windows) // tc.batch_size)
        total_steps, step = steps_per_epoch * tc.epochs, 0
        bar = tqdm(range(1, tc.epochs + 1), desc=f"train {split.name}", unit="epoch", disable=not tc.progress)
        for epoch in bar:
            started = time.perf_counter()
            model.train()
            sums: dict[str, float] = {}
            for idx in batch_order(lengths, tc.batch_size, gen):
                factor = lr_factor(step, tc.warmup_steps, total_steps, tc.schedule)
                for group in opt.param_groups:
                    group["lr"] = tc.lr * factor
                stats = _step(model, opt, windows[idx], epoch - 1, step, total_steps, tc.clip_norm, positives(idx))
                step += 1
                n = stats["targets"]
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + (value if key == "targets" else value * n)
            elapsed = time.perf_counter() - started
            seconds += elapsed
            row = {"epoch": float(epoch), "seconds": elapsed}
            row.update({k: v / sums["targets"] for k, v in sums.items() if k != "targets"})
            if can_validate and (epoch % tc.eval_every == 0 or epoch == tc.epochs):
                row.update(_validate(model, split, tc.eval_batch_size))
                score = row["valid_ndcg@10"]
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                    if on_best is not None:
                        model.eval()
                        on_best(model, epoch, row)
                else:
                    stale += 1
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg=f"{row.get('valid_ndcg@10', float('nan')):.4f}")
            if can_validate and stale >= tc.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    model.eval()
    with _threads(tc.threads):
        calibration = calibrate_transitions(model, split, tc.eval_batch_size) if tc.calibrate_gate else {}
    if calibration.get("gate_shift") and on_best is not None:  # the saved best model gets the shift too
        on_best(model, best_epoch, {**history[best_epoch - 1], **calibration})
    return TrainResult(model, history, best_epoch, seconds / max(len(history), 1), len(history), tc.epochs,
                       calibration)


def fine_tune(
    model: HAIL,
    data: torch.Tensor | Sequence[np.ndarray],
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 128,
    seed: int = 0,
    weight_decay: float = 0.0,
    epoch: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """A bounded number of optimisation steps (MED, or the model's loss) on ``data``, in place.

    ``data`` is a window tensor ``[N, max_len + 1]`` (see :func:`make_windows`) or raw item
    sequences (cut into windows here). Batches cycle through a seeded permutation. ``epoch`` is
    what the loss sees (default: ``config.med_warmup_epochs``, i.e. distillation on). A fresh Adam
    is used per call (no optimizer state survives a model swap or growth). The module's
    train/eval mode is restored afterwards. ``on_step(done)`` is called after each step (progress).
    With ``config.transitions`` the windows' item-to-item transitions are first added to the
    model's table (:meth:`HAIL.set_transitions`; the loss leaves each query's own one out): a
    transition in the data of two calls, or in two rows of one call, counts twice.

    Returns ``{"steps", "loss" (mean), "first_loss", "last_loss", "seconds"}``.
    """
    if steps < 0 or batch_size < 1:
        raise ModelsError(f"steps must be >= 0 and batch_size >= 1, not {steps}, {batch_size}")
    windows = data if isinstance(data, torch.Tensor) else make_windows(data, model.config.max_len)
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ModelsError(f"windows must be [N, L+1] with L >= 1, got {tuple(windows.shape)}")
    windows = windows[((windows[:, :-1] != 0) & (windows[:, 1:] != 0)).any(1)]
    if steps > 0 and model.config.transitions:  # count the windows' transitions in (twice if in two calls' data)
        model.set_transitions(list(windows.cpu().numpy()), add=True)
    if steps == 0 or len(windows) == 0:
        return {"steps": 0.0, "loss": float("nan"), "first_loss": float("nan"), "last_loss": float("nan"),
                "seconds": 0.0}
    device = next(model.parameters()).device
    at_epoch = model.config.med_warmup_epochs if epoch is None else epoch
    gen = torch.Generator().manual_seed(seed)
    positives = _Positives(model, windows, seed, device)
    order = torch.randperm(len(windows), generator=gen)
    started = time.perf_counter()
    losses: list[float] = []
    was_training = model.training
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pos = 0
            for _ in range(steps):
                if pos >= len(order):
                    order, pos = torch.randperm(len(windows), generator=gen), 0
                idx = order[pos : pos + batch_size]
                pos += batch_size
                losses.append(_step(model, opt, windows[idx].to(device), at_epoch, len(losses), steps,
                                    positives=positives(idx))["loss"])
                if on_step is not None:
                    on_step(len(losses))
    finally:
        model.train(was_training)
    return {"steps": float(steps), "loss": float(np.mean(losses)), "first_loss": losses[0],
            "last_loss": losses[-1], "seconds": time.perf_counter() - started}
