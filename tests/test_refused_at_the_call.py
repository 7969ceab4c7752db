"""Inputs found late before, refused at the call now, naming the argument (hardening round 3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    checkpoint,
    ensemble_stream,
    epoch_stream,
    evaluate,
    pipe,
    progress,
    reduce_lr_on_plateau,
    resumable,
    resume,
    validation_loss,
)
from fitstream.bridge import PushStream

X = torch.randn(12, 3)
Y = torch.randn(12, 1)


def _models(k: int = 2) -> list[nn.Module]:
    return [nn.Linear(3, 1) for _ in range(k)]


class Duck:
    """An optimizer in shape only: step and zero_grad, no param_groups or state."""

    def step(self) -> None: ...

    def zero_grad(self) -> None: ...


# -- objects where an optimizer belongs ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("sgd", r"'optimizer' must be a torch optimizer .*got str: 'sgd'"),
        (torch.optim.SGD, r"'optimizer' must be a torch optimizer .*got the class SGD"),
        (Duck(), r"'optimizer' has no param_groups, so it has no learning rates to change"),
        ([Duck()], r"'optimizer\[0\]' has no param_groups"),
    ],
)
def test_reduce_lr_on_plateau_refuses_what_is_not_an_optimizer(given: Any, match: str) -> None:
    with pytest.raises(TypeError, match=f"^reduce_lr_on_plateau: {match}"):
        reduce_lr_on_plateau("val_loss", optimizer=given)


def test_reduce_lr_on_plateau_refuses_an_events_optimizer_without_rates() -> None:
    events = [{"step": 1, "val_loss": 1.0, "optimizer": Duck()}]
    with pytest.raises(TypeError, match=r"'event\['optimizer'\]' has no param_groups"):
        list(pipe(events, reduce_lr_on_plateau("val_loss")))


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("sgd", r"'optimizer' must be a torch optimizer .*got str: 'sgd'"),
        (Duck(), r"'optimizer' has no state_dict, so it has no state to save"),
    ],
)
def test_checkpoint_refuses_what_is_not_an_optimizer(given: Any, match: str) -> None:
    with pytest.raises(TypeError, match=f"^checkpoint: {match}"):
        checkpoint("run.ckpt", optimizer=given)


@pytest.mark.parametrize("source", ["epoch_stream", "ensemble_stream"])
def test_an_optimizer_that_needs_a_closure_is_refused(source: str) -> None:
    models = _models()
    opts = [torch.optim.LBFGS(m.parameters()) for m in models]
    arg = "optimizer" if source == "epoch_stream" else r"optimizers\[0\]"

    def call() -> Any:
        if source == "epoch_stream":
            return epoch_stream((X, Y), models[0], opts[0], nn.MSELoss())
        return ensemble_stream((X, Y), models, opts, nn.MSELoss())

    with pytest.raises(TypeError, match=rf"^{source}: '{arg}' \(LBFGS\) steps only with a closure"):
        call()


def test_one_optimizer_over_every_member_is_named_as_such() -> None:
    models = _models(3)
    shared = torch.optim.SGD([p for m in models for p in m.parameters()], lr=0.1)
    with pytest.raises(ValueError, match=r"over the parameters of several models \(models\[0\]"):
        ensemble_stream((X, Y), models, [shared] * 3, nn.MSELoss())
    mine = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(
        ValueError, match=r"'optimizers\[2\]' is the same object as 'optimizers\[0\]'"
    ):
        ensemble_stream((X, Y), models, [mine[0], mine[1], mine[0]], nn.MSELoss())


def test_members_with_an_extra_module_name_it() -> None:
    models = [nn.Sequential(nn.Linear(3, 1)), nn.Sequential(nn.Linear(3, 1), nn.ReLU())]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(
        ValueError, match=r"it has 3 modules, models\[0\] has 2; the first one only models\[1\] "
        r"has is '1' \(ReLU\)",
    ):  # fmt: skip
        ensemble_stream((X, Y), models, opts, nn.MSELoss())


# -- callables of the wrong arity -------------------------------------------------------------


@pytest.mark.parametrize("source", ["epoch_stream", "ensemble_stream"])
def test_a_loss_fn_of_the_wrong_arity_is_refused(source: str) -> None:
    models = _models()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]

    def call(loss_fn: Any, **kw: Any) -> Any:
        if source == "epoch_stream":
            return epoch_stream((X, Y), models[0], opts[0], loss_fn, **kw)
        return ensemble_stream((X, Y), models, opts, loss_fn, **kw)

    with pytest.raises(TypeError, match=rf"^{source}: 'loss_fn' must accept 2 positional .*labels"):
        call(lambda pred: pred.mean())
    with pytest.raises(TypeError, match=rf"^{source}: 'loss_fn' must accept 1 positional"):
        call(nn.MSELoss(), last_label=False)
    call(lambda pred: pred.pow(2).mean(), last_label=False)  # right arity: accepted


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        (lambda pred: pred.mean(), r"'metrics\['m'\]' must accept 2 positional argument\(s\)"),
        (nn.MSELoss, r"'metrics\['m'\]' is the class MSELoss, not a metric: pass an instance"),
    ],
)
def test_evaluate_refuses_a_metric_class_or_a_wrong_arity(metric: Any, match: str) -> None:
    with pytest.raises(TypeError, match=f"^evaluate: {match}"):
        evaluate((X, Y), metrics={"m": metric})


def test_a_stateful_metric_whose_update_has_the_wrong_arity_is_refused() -> None:
    class OneArgument:
        def update(self, pred: torch.Tensor) -> None: ...

        def compute(self) -> float:
            return 0.0

        def reset(self) -> None: ...

    with pytest.raises(TypeError, match=r"'metrics\['m'\].update' must accept 2 positional"):
        evaluate((X, Y), metrics={"m": OneArgument()})
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"'train_metrics\['m'\].update' must accept 2 positional"):
        epoch_stream((X, Y), model, opt, nn.MSELoss(), train_metrics={"m": OneArgument()})


def test_push_stream_refuses_a_producer_of_the_wrong_arity() -> None:
    with pytest.raises(TypeError, match=r"^PushStream: 'run' must accept 1 positional .*Emitter"):
        PushStream(lambda: None)


# -- files ------------------------------------------------------------------------------------


def test_checkpoint_paths_that_cannot_be_files_are_refused_at_the_call(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(IsADirectoryError, match=r"^checkpoint: path '.*' is a folder"):
        checkpoint(tmp_path)
    with pytest.raises(NotADirectoryError, match=r"^checkpoint: path '.*' cannot be created"):
        checkpoint(a_file / "run.ckpt")
    with pytest.raises(IsADirectoryError, match=r"^resumable: path '.*' is a folder"):
        resumable(tmp_path, model, opt)
    with pytest.raises(IsADirectoryError, match=r"^resume: path '.*' is a folder"):
        resume(tmp_path)


def test_progress_refuses_a_closed_or_read_only_file(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    closed = io.StringIO()
    closed.close()
    with pytest.raises(ValueError, match=r"^progress: file is a closed file"):
        progress(file=closed)
    path = tmp_path / "log.txt"
    path.write_text("")
    with (
        path.open("r") as read_only,
        pytest.raises(ValueError, match=r"^progress: file is not open for writing \(mode 'r'\)"),
    ):
        progress(file=read_only)


# -- data that does not fit the model ---------------------------------------------------------


def test_data_that_does_not_fit_the_model_is_named_by_each_source_and_evaluator() -> None:
    wide = torch.randn(8, 4)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    named = r"the model cannot run on the inputs of '{}' \(a batch of shapes and dtypes \({}, 4\)"
    with pytest.raises(RuntimeError, match="^epoch_stream: " + named.format("train_data", 1)):
        next(epoch_stream((wide, Y[:8]), model, opt, nn.MSELoss()))
    with pytest.raises(RuntimeError, match="^epoch_stream: " + named.format("train_data", 1)):
        next(epoch_stream((wide, Y[:8]), model, opt, nn.MSELoss(), accumulate=2))
    models = _models()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(RuntimeError, match="^ensemble_stream: " + named.format("train_data", 1)):
        next(ensemble_stream((wide, Y[:8]), models, opts, nn.MSELoss()))
    validate = validation_loss((wide, Y[:8]), nn.MSELoss())
    with pytest.raises(RuntimeError, match="^validation_loss: " + named.format("val_data", 8)):
        validate({"step": 1, "model": model})
    score = evaluate((X.double(), Y), metrics={"mse": nn.MSELoss()})
    with pytest.raises(RuntimeError, match=r"^evaluate: .*'val_data' .*float64; the model's param"):
        score({"step": 1, "model": model})


def test_an_error_of_the_model_itself_passes_unchanged() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("my own bug")

    model = Broken()
    with pytest.raises(RuntimeError, match=r"^my own bug$"):
        validation_loss((X, Y), nn.MSELoss())({"step": 1, "model": model})


def test_a_loss_class_not_called_is_refused_by_every_taker_of_a_loss_fn() -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    named = r"'loss_fn' is the class MSELoss, not a loss function: pass an instance"
    with pytest.raises(TypeError, match=f"^epoch_stream: {named}"):
        epoch_stream((X, Y), model, opt, nn.MSELoss)
    models = _models()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(TypeError, match=f"^ensemble_stream: {named}"):
        ensemble_stream((X, Y), models, opts, nn.MSELoss)
    with pytest.raises(TypeError, match=f"^validation_loss: {named}"):
        validation_loss((X, Y), nn.MSELoss)
    with pytest.raises(TypeError, match=r"^validation_loss: 'loss_fn' must accept 2 positional"):
        validation_loss((X, Y), lambda pred: pred.mean())


# -- hardening round 4: named at the call, or named where it is found --------------------------


def test_a_tensorboard_folder_that_takes_no_new_folder_is_refused_at_the_call() -> None:
    from fitstream import log_tensorboard

    pytest.importorskip("tensorboard")
    # /proc takes no new folder, even for root, whom permissions alone never refuse
    with pytest.raises(PermissionError, match=r"log_tensorboard: log_dir '/proc/fitstream_run'"):
        log_tensorboard("/proc/fitstream_run")


@pytest.mark.parametrize("source", ["epoch_stream", "ensemble_stream"])
def test_a_rate_that_is_no_number_set_between_epochs_is_named(source: str) -> None:
    models = _models()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    events = (
        epoch_stream((X, Y), models[0], opts[0], nn.MSELoss())
        if source == "epoch_stream"
        else ensemble_stream((X, Y), models, opts, nn.MSELoss())
    )
    next(events)
    opts[0].param_groups[0]["lr"] = "abc"  # was: could not convert string to float
    arg = "optimizer" if source == "epoch_stream" else r"optimizers\[0\]"
    with pytest.raises(
        TypeError, match=rf"{source}: '{arg}' has param_groups\[0\]\['lr'\] = 'abc'"
    ):
        next(events)


def test_resume_of_a_step_that_is_not_a_whole_number_names_it(tmp_path: Path) -> None:
    from fitstream import take

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.ckpt"
    list(take(pipe(epoch_stream((X, Y), model, opt, nn.MSELoss()), checkpoint(path)), 1))
    content = torch.load(path, weights_only=True)
    content["step"] = "three"
    torch.save(content, path)
    with pytest.raises(ValueError, match=r"holds step='three' \(str\), where a checkpoint holds"):
        resume(path, model, opt)


def test_collect_jsonl_names_the_key_of_a_scalar_meta_tensor_and_of_a_deep_cycle() -> None:
    from fitstream import collect, collect_jsonl, collect_pd

    meta = {"step": 1, "x": torch.tensor(1.0, device="meta")}
    with pytest.raises(TypeError, match=r"cannot write key 'x': a tensor on the meta device"):
        collect_jsonl([meta], io.StringIO())
    deep: list[Any] = []
    deep.append([deep])  # holds itself one level down: was a RecursionError
    with pytest.raises(ValueError, match=r"cannot write key 'x': its list holds itself"):
        collect_jsonl([{"step": 1, "x": deep}], io.StringIO())
    assert collect([{"step": 1, "x": deep}])[0]["x"][0][0] is deep
    pytest.importorskip("pandas")
    assert len(collect_pd([{"step": 1, "x": deep}])) == 1


def test_best_model_load_into_another_architecture_names_the_tensor_and_both_shapes() -> None:
    from fitstream import best_model

    best = best_model("val_loss")
    best({"step": 1, "model": nn.Linear(3, 2), "val_loss": 0.5})
    with pytest.raises(ValueError, match=r"'weight' is \(2, 3\) there, \(4, 3\) in the model"):
        best.load_into(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"the model has \['0.weight', '0.bias'\] that it lacks"):
        best.load_into(nn.Sequential(nn.Linear(3, 2)))


def test_kfold_refuses_labels_on_the_meta_device() -> None:
    from fitstream import kfold

    with pytest.raises(ValueError, match=r"'stratify' is a tensor on the meta device"):
        kfold(6, 2, stratify=torch.zeros(6, dtype=torch.long, device="meta"))


def test_plot_history_names_its_own_argument_for_a_single_models_history() -> None:
    pytest.importorskip("matplotlib")
    from fitstream import plot_history

    history = [{"step": 1, "train_loss": 0.5}, {"step": 2, "train_loss": 0.4}]
    lacking = r"plot_history: group_by groups .* a single model's: its events have no members'"
    with pytest.raises(ValueError, match=lacking):
        plot_history(history, "train_loss", group_by="lr")
