from __future__ import annotations

import pytest
import torch

from fitstream import ensemble_stream, epoch_stream, iter_batches, steps_per_epoch, take


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.arange(2 * n, dtype=torch.float32).reshape(n, 2)
    y = torch.arange(n)
    return X, y


def test_unshuffled_batches_follow_the_rows_in_order_and_keep_the_short_last_batch() -> None:
    X, y = _data(7)
    batches = list(iter_batches(X, y, batch_size=3, shuffle=False))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(torch.equal(xb, X[yb]) for xb, yb in batches)


def test_unshuffled_batches_are_views_of_the_inputs() -> None:
    X, y = _data(6)
    xb, yb = next(iter_batches(X, y, batch_size=4, shuffle=False))
    assert xb.data_ptr() == X.data_ptr()
    assert yb._base is y


def test_shuffled_batches_cover_every_row_once_and_keep_rows_aligned() -> None:
    X, y = _data(11)
    batches = list(iter_batches(X, y, batch_size=4, generator=torch.Generator().manual_seed(3)))
    assert [len(yb) for _, yb in batches] == [4, 4, 3]
    order = torch.cat([yb for _, yb in batches])
    assert sorted(order.tolist()) == list(range(11))
    assert order.tolist() != list(range(11))
    assert torch.equal(torch.cat([xb for xb, _ in batches]), X[order])


def test_shuffled_batches_are_slices_of_one_gathered_copy() -> None:
    X, y = _data(12)
    batches = list(iter_batches(X, y, batch_size=4, generator=torch.Generator().manual_seed(0)))
    bases = {xb._base.data_ptr() for xb, _ in batches if xb._base is not None}
    assert len(bases) == 1
    assert batches[0][0]._base is batches[2][0]._base


def test_same_generator_seed_gives_same_order() -> None:
    X, y = _data(20)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([yb for _, yb in iter_batches(X, y, batch_size=6, generator=g)]).tolist()

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_each_call_draws_a_new_permutation() -> None:
    X, y = _data(30)
    g = torch.Generator().manual_seed(1)
    first = torch.cat([yb for _, yb in iter_batches(X, y, batch_size=30, generator=g)])
    second = torch.cat([yb for _, yb in iter_batches(X, y, batch_size=30, generator=g)])
    assert first.tolist() != second.tolist()


def test_single_tensor_and_batch_larger_than_data() -> None:
    (only,) = next(iter_batches(torch.arange(3), batch_size=10, shuffle=False))
    assert only.tolist() == [0, 1, 2]


def test_arguments_are_checked_at_the_call_not_at_first_next() -> None:
    X, y = _data(4)
    with pytest.raises(
        ValueError, match=r"iter_batches: 'batch_size' must be a positive int, got 0"
    ):
        iter_batches(X, y, batch_size=0)
    with pytest.raises(TypeError, match=r"'batch_size' must be a positive int, got float"):
        iter_batches(X, y, batch_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"same first dimension.*\[4, 3\]"):
        iter_batches(X, y[:3])
    with pytest.raises(TypeError, match=r"'tensors\[1\]' must be a torch.Tensor, got list"):
        iter_batches(X, [1, 2, 3, 4])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'tensors' must hold at least one tensor"):
        iter_batches()
    with pytest.raises(ValueError, match=r"holds no samples"):
        iter_batches(torch.zeros(0, 2))


def test_tensors_on_different_devices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'tensors\[1\]' is on device meta but 'tensors\[0\]'"):
        iter_batches(torch.zeros(3), torch.zeros(3, device="meta"))


def test_bad_generator_is_refused() -> None:
    X, y = _data(4)
    with pytest.raises(TypeError, match=r"'generator' must be a torch.Generator or None, got int"):
        iter_batches(X, y, generator=0)  # type: ignore[arg-type]


def test_nothing_is_shuffled_before_the_first_batch_is_asked_for() -> None:
    X, y = _data(8)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    batches = iter_batches(X, y, batch_size=2, generator=g)
    assert torch.equal(g.get_state(), state)
    next(batches)
    assert not torch.equal(g.get_state(), state)


# --- steps_per_epoch: the count a per-step schedule needs, as the sources take the steps ----


def _counted_steps(n: int, batch_size: int, accumulate: int = 1) -> int:
    """The optimizer steps one epoch of ``epoch_stream`` really takes (its scheduler counts)."""
    X, y = torch.randn(n, 3), torch.randn(n)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    counter = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((pred.squeeze(-1) - target) ** 2).mean()

    events = epoch_stream(
        (X, y), model, optimizer, loss_fn,
        batch_size=batch_size, accumulate=accumulate, schedulers=counter,
    )  # fmt: skip
    next(iter(events))
    return int(counter.last_epoch)


@pytest.mark.parametrize(
    ("n", "batch_size", "accumulate"),
    [(1400, 32, 1), (1400, 32, 4), (64, 32, 1), (65, 32, 3), (5, 8, 2)],
)
def test_steps_per_epoch_counts_the_steps_an_epoch_really_takes(
    n: int, batch_size: int, accumulate: int
) -> None:
    expected = _counted_steps(n, batch_size, accumulate)
    assert steps_per_epoch(n, batch_size, accumulate=accumulate) == expected
    data = (torch.zeros(n, 2), torch.zeros(n))
    assert steps_per_epoch(data, batch_size, accumulate=accumulate) == expected


def test_steps_per_epoch_keeps_the_short_last_batch() -> None:
    assert steps_per_epoch(1400, 32) == 44  # not 1400 // 32 == 43
    assert steps_per_epoch(1408, 32) == 44


def test_one_cycle_over_steps_per_epoch_runs_every_epoch_where_the_floor_count_raises() -> None:
    X, y = torch.randn(1400, 3), torch.randn(1400)

    def run(steps: int) -> None:
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=2 * steps)
        events = epoch_stream(
            (X, y), model, optimizer, lambda p, t: ((p.squeeze(-1) - t) ** 2).mean(),
            batch_size=32, schedulers=schedule,
        )  # fmt: skip
        assert [event["step"] for event in take(2)(events)] == [1, 2]

    run(steps_per_epoch((X, y), 32))
    with pytest.raises(ValueError, match=r"Tried to step"):
        run(1400 // 32)


def test_steps_per_epoch_counts_each_members_rows() -> None:
    n = 100
    rows = [torch.arange(100), torch.arange(40), torch.arange(33)]
    X, y = torch.randn(n, 3), torch.randn(n)
    models = [torch.nn.Linear(3, 1) for _ in rows]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01) for m in models]
    counters = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0) for o in optimizers]
    events = ensemble_stream(
        (X, y), models, optimizers, lambda p, t: ((p.squeeze(-1) - t) ** 2).mean(),
        batch_size=16, rows=rows, schedulers=counters,
    )  # fmt: skip
    next(iter(events))
    counted = [int(c.last_epoch) for c in counters]
    assert steps_per_epoch((X, y), 16, rows=rows) == counted == [7, 3, 3]


def test_steps_per_epoch_refuses_bad_arguments_naming_them() -> None:
    with pytest.raises(
        ValueError, match=r"steps_per_epoch: 'batch_size' must be a positive int, got 0"
    ):
        steps_per_epoch(10, 0)
    with pytest.raises(ValueError, match=r"'accumulate' must be a positive int, got -1"):
        steps_per_epoch(10, 2, accumulate=-1)
    with pytest.raises(ValueError, match=r"'train_data' must be a positive int, got 0"):
        steps_per_epoch(0, 2)
    with pytest.raises(TypeError, match=r"'train_data'"):
        steps_per_epoch(True, 2)
    with pytest.raises(TypeError, match=r"'train_data'"):
        steps_per_epoch("rows", 2)
    with pytest.raises(ValueError, match=r"same first dimension"):
        steps_per_epoch((torch.zeros(4), torch.zeros(3)), 2)
    with pytest.raises((TypeError, ValueError), match=r"rows"):
        steps_per_epoch(10, 2, rows=[torch.tensor([11])])
