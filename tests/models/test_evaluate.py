"""Full-ranking evaluator: equals a brute-force reference, batching-invariant, right histories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.errors import ModelsError
from models.evaluate import ModelScorer, Scorer, evaluate, format_table, target_ranks
from models.hail import HAIL, HailConfig
from models.padding import left_pad
from models.splits import SequenceSplit
from models.vocab import ItemVocab


def random_split(n_users: int = 37, n_items: int = 25, seed: int = 0) -> SequenceSplit:
    rng = np.random.default_rng(seed)
    vocab = ItemVocab(f"i{n}" for n in range(n_items))
    train = [rng.integers(1, n_items + 1, size=rng.integers(1, 8)) for _ in range(n_users)]
    valid = rng.integers(1, n_items + 1, size=n_users)
    test = rng.integers(1, n_items + 1, size=n_users)
    valid[::5] = 0  # some users are not evaluated
    test[::5] = 0
    return SequenceSplit("rand", vocab, [f"u{n}" for n in range(n_users)], train, valid, test)


class TieScorer:
    """Seeded per-user integer scores: ties everywhere. Records what it was asked."""

    def __init__(self, rows: int, n_users: int, seed: int = 1) -> None:
        self.table = np.random.default_rng(seed).integers(0, 3, size=(n_users, rows)).astype(np.float32)
        self.calls: list[tuple[list[int], list[list[int]]]] = []

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        self.calls.append((users.tolist(), [h.tolist() for h in histories]))
        return torch.from_numpy(self.table[users])


def reference(table: np.ndarray, split: SequenceSplit, stage: str, ks: tuple[int, ...]) -> dict[str, float]:
    ranks = []
    target = split.target(stage)  # type: ignore[arg-type]
    for u in split.eval_users:
        row = table[u]
        order = sorted(range(1, row.shape[0]), key=lambda i: (-row[i], i))
        ranks.append(order.index(int(target[u])))
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = sum(r < k for r in ranks) / len(ranks)
        out[f"ndcg@{k}"] = sum(1 / math.log2(r + 2) for r in ranks if r < k) / len(ranks)
    out["mrr@10"] = sum(1 / (r + 1) for r in ranks if r < 10) / len(ranks)
    out["n"] = len(ranks)
    return out


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_evaluate_equals_brute_force_with_ties(stage: str) -> None:
    split = random_split()
    scorer = TieScorer(split.vocab.rows, len(split.user_ids))
    got = evaluate(scorer, split, stage, ks=(1, 5, 10, 20), batch_size=8)  # type: ignore[arg-type]
    want = reference(scorer.table, split, stage, (1, 5, 10, 20))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key


def test_batch_size_does_not_change_results() -> None:
    split = random_split(seed=4)
    scorer = TieScorer(split.vocab.rows, len(split.user_ids), seed=5)
    results = [evaluate(scorer, split, batch_size=b) for b in (1, 3, 29, 1000)]
    assert all(r == results[0] for r in results)


def test_scorer_gets_eval_users_and_stage_histories() -> None:
    split = random_split(n_users=11)
    for stage in ("valid", "test"):
        scorer = TieScorer(split.vocab.rows, len(split.user_ids))
        evaluate(scorer, split, stage, batch_size=4)
        users = [u for call in scorer.calls for u in call[0]]
        hists = [h for call in scorer.calls for h in call[1]]
        assert users == split.eval_users.tolist()
        assert hists == [split.history(u, stage).tolist() for u in users]
        assert all(len(call[0]) <= 4 for call in scorer.calls)


def test_target_ranks_and_user_subset() -> None:
    split = random_split()
    scorer = TieScorer(split.vocab.rows, len(split.user_ids))
    users, ranks = target_ranks(scorer, split, "test", batch_size=7)
    assert users.tolist() == split.eval_users.tolist() and ranks.dtype == np.int64
    sub = split.eval_users[:3]
    assert evaluate(scorer, split, users=sub)["n"] == 3


def test_evaluate_errors_are_specific() -> None:
    split = random_split()
    scorer = TieScorer(split.vocab.rows, len(split.user_ids))
    with pytest.raises(ModelsError, match="stage"):
        evaluate(scorer, split, "train")  # type: ignore[arg-type]
    with pytest.raises(ModelsError, match="no test target"):
        evaluate(scorer, split, users=np.array([0]))  # user 0 has no target
    with pytest.raises(ModelsError, match="batch_size"):
        evaluate(scorer, split, batch_size=0)

    class Short:
        def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
            return torch.zeros(len(users), 3)

    with pytest.raises(ModelsError, match="too few columns"):
        evaluate(Short(), split)


def test_model_scorer_uses_log_probs_and_restores_mode() -> None:
    split = random_split(n_users=9, n_items=12)
    model = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, dropout=0.5), split.vocab.rows)
    model.train()
    scorer = ModelScorer(model)
    assert isinstance(scorer, Scorer) and scorer.max_len == 4
    users = split.eval_users[:3]
    hists = [split.history(int(u), "test") for u in users]
    got = scorer.scores(users, hists)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        want = model.log_probs(left_pad(hists, 4))
        peer1 = model.log_probs(left_pad(hists, 4), peer=1)
    assert torch.equal(got, want)
    assert torch.equal(ModelScorer(model, peer=1).scores(users, hists), peer1)
    m = evaluate(scorer, split, "valid", ks=(10,))
    assert m["n"] == len(split.eval_users) and 0.0 <= m["hr@10"] <= 1.0


def test_model_scorer_needs_max_len() -> None:
    with pytest.raises(ModelsError, match="max_len"):
        ModelScorer(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_format_table_aligns_columns() -> None:
    text = format_table({"a": {"hr@10": 0.5, "n": 10}, "longer-name": {"hr@10": 0.12345, "mrr@10": 0.1}})
    lines = text.splitlines()
    assert lines[0].split() == ["model", "hr@10", "n", "mrr@10"]
    assert lines[2].split() == ["a", "0.5000", "10", "-"]
    assert lines[3].split() == ["longer-name", "0.1235", "-", "0.1000"]
    # Right-aligned numeric columns: every row ends each column at the same offset.
    ends = {len(line) for line in lines}
    assert len(ends) == 1


def test_sampled_protocol_ranks_among_99_unseen_negatives() -> None:
    from models.evaluate import sampled_ranks

    vocab = ItemVocab(f"i{n}" for n in range(150))
    split = SequenceSplit("s", vocab, ["a", "b"], [np.array([1, 2, 3]), np.array([4])],
                          np.array([5, 6]), np.array([7, 8]))

    class ByIndex:  # higher index scores higher
        def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
            return torch.arange(151, dtype=torch.float32).expand(len(users), -1)

    ranks = sampled_ranks(ByIndex(), split, "test", n_negatives=99, seed=0)
    assert ranks.shape == (2,) and (ranks >= 90).all() and (ranks <= 99).all()  # targets 7, 8 are low
    assert (sampled_ranks(ByIndex(), split, "test", seed=0) == ranks).all()  # seeded
    with pytest.raises(ModelsError, match="unseen"):
        sampled_ranks(ByIndex(), split, "test", n_negatives=150)
