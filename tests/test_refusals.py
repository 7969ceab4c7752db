"""Bad inputs refused at the call that received them, each with a message naming the argument."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fitstream import (
    LivePlot,
    augment,
    best_model,
    collect_jsonl,
    collect_tensorboard,
    ema,
    epoch_stream,
    evaluate,
    iter_batches,
    live_plot,
    log_tensorboard,
    plot_history,
    print_keys,
    take,
    tap,
    tick,
    validation_loss,
)


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3), torch.randn(n, 1)


def _setup() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


# --- epoch_stream and iter_batches -------------------------------------------------------------


def test_training_data_that_requires_grad_is_refused() -> None:
    model, opt = _setup()
    X, y = _data()
    with pytest.raises(ValueError, match=r"epoch_stream: 'train_data\[0\]' requires grad.*detach"):
        epoch_stream((X.requires_grad_(), y), model, opt, nn.MSELoss())


def test_an_optimizer_class_is_refused_with_a_hint() -> None:
    model, _ = _setup()
    with pytest.raises(TypeError, match=r"got the class SGD; call it with model\.parameters\(\)"):
        epoch_stream(_data(), model, torch.optim.SGD, nn.MSELoss())  # type: ignore[arg-type]


def test_an_optimizer_over_another_models_parameters_is_refused() -> None:
    model, _ = _setup()
    other = nn.Linear(3, 1)
    opt = torch.optim.Adam(other.parameters())
    with pytest.raises(ValueError, match="'optimizer' updates none of the model's parameters"):
        epoch_stream(_data(), model, opt, nn.MSELoss())


def test_an_optimizer_over_part_of_the_model_or_duck_typed_is_accepted() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    head_only = torch.optim.SGD(model[1].parameters(), lr=0.1)
    assert next(epoch_stream(_data(), model, head_only, nn.MSELoss()))["step"] == 1

    class Plain:  # no param_groups: not looked into
        def step(self) -> None: ...

        def zero_grad(self) -> None: ...

    assert next(epoch_stream(_data(), model, Plain(), nn.MSELoss()))["step"] == 1  # type: ignore[arg-type]


def test_floating_data_of_another_dtype_than_the_model_is_refused() -> None:
    model, opt = _setup()
    X, y = _data()
    with pytest.raises(
        ValueError, match=r"'train_data\[0\]' has dtype torch.float64 but the model's parameters"
    ):
        epoch_stream((X.double(), y), model, opt, nn.MSELoss())
    labels = torch.randint(0, 2, (8,))  # integer labels are not floating data: accepted
    classifier = nn.Linear(3, 2)
    sgd = torch.optim.SGD(classifier.parameters(), lr=0.1)
    assert next(epoch_stream((X, labels), classifier, sgd, nn.CrossEntropyLoss()))["step"] == 1


@pytest.mark.parametrize("arg", ["shuffle", "last_label"])
def test_flags_that_are_not_bools_are_refused(arg: str) -> None:
    model, opt = _setup()
    with pytest.raises(TypeError, match=f"epoch_stream: '{arg}' must be True or False, got str"):
        epoch_stream(_data(), model, opt, nn.MSELoss(), **{arg: "no"})
    with pytest.raises(TypeError, match="iter_batches: 'shuffle' must be True or False"):
        iter_batches(torch.zeros(4), shuffle="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="validation_loss: 'last_label' must be True or False"):
        validation_loss(_data(), nn.MSELoss(), last_label=1)  # type: ignore[arg-type]


def test_a_dataloader_as_train_data_gets_a_hint_and_no_cut_address() -> None:
    model, opt = _setup()
    loader = DataLoader(TensorDataset(*_data()), batch_size=4)
    with pytest.raises(TypeError, match="tensors held in memory") as info:
        epoch_stream(loader, model, opt, nn.MSELoss())  # type: ignore[arg-type]
    message = str(info.value)
    assert "got DataLoader object" in message
    assert "0x" not in message
    assert "loader.dataset.tensors" in message


# --- files and folders ---------------------------------------------------------------------------


@pytest.fixture
def a_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "taken"
    path.write_text("x")
    return path


@pytest.mark.parametrize("sink", ["log_tensorboard", "collect_tensorboard"])
def test_a_log_dir_that_is_a_file_or_under_one_is_refused(sink: str, a_file: pathlib.Path) -> None:
    pytest.importorskip("tensorboard")

    def call(log_dir: pathlib.Path) -> Any:
        if sink == "log_tensorboard":
            return log_tensorboard(log_dir)
        return collect_tensorboard([{"step": 1}], log_dir)

    with pytest.raises(NotADirectoryError, match=rf"{sink}: log_dir .* is a file, not a folder"):
        call(a_file)
    with pytest.raises(
        NotADirectoryError, match=rf"{sink}: log_dir .* cannot be created: .* is a file"
    ):
        call(a_file / "run")


def test_a_log_dir_that_cannot_be_written_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests may run as root, who may write anywhere: stand for a read-only folder.
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if pathlib.Path(p) == locked else real_access(p, mode)
    )
    with pytest.raises(PermissionError, match=r"log_tensorboard: log_dir .* cannot write in"):
        log_tensorboard(locked)
    with pytest.raises(PermissionError, match=r"no permission to write in .*locked"):
        log_tensorboard(locked / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_a_read_only_folder_is_refused_for_real(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("tensorboard")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="log_dir"):
            log_tensorboard(tmp_path / "run")
    finally:
        tmp_path.chmod(0o700)


def test_collect_jsonl_refuses_a_handle_not_open_for_writing(
    a_file: pathlib.Path, counting_source: Any
) -> None:
    source = counting_source(n=3)
    with a_file.open() as handle, pytest.raises(ValueError, match="dest is not open for writing"):
        collect_jsonl(source, handle)
    assert source.pulled == 0
    handle = a_file.open("w")
    handle.close()
    with pytest.raises(ValueError, match="dest is a closed file"):
        collect_jsonl(source, handle)


def test_collect_jsonl_refuses_a_dest_under_a_file(
    a_file: pathlib.Path, counting_source: Any
) -> None:
    source = counting_source(n=3)
    with pytest.raises(NotADirectoryError, match=r"collect_jsonl: dest .* cannot be created"):
        collect_jsonl(source, a_file / "run.jsonl")
    assert source.pulled == 0


HISTORY = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]


def test_plot_save_that_is_a_folder_or_under_a_file_is_refused(
    tmp_path: pathlib.Path, a_file: pathlib.Path
) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(IsADirectoryError, match=r"plot_history: save .* is a folder"):
        plot_history(HISTORY, "loss", save=tmp_path)
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.*"))  # nothing written beside it
    with pytest.raises(IsADirectoryError, match=r"live_plot: save .* is a folder"):
        live_plot("loss", save=tmp_path)
    with pytest.raises(NotADirectoryError, match=r"live_plot: save .* cannot be created"):
        live_plot("loss", save=a_file / "plot.png")
    with pytest.raises(TypeError, match="plot_history: save must be a file path"):
        plot_history(HISTORY, "loss", save=3)  # type: ignore[arg-type]


def test_plot_save_that_cannot_be_written_is_refused(
    a_file: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(PermissionError, match=r"plot_history: save .* is a file you cannot write"):
        plot_history(HISTORY, "loss", save=a_file)


def test_a_bad_ax_is_refused() -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(TypeError, match="plot_history: ax must be a matplotlib Axes"):
        plot_history(HISTORY, "loss", ax="left")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="live_plot: ax must be a matplotlib Axes"):
        live_plot("loss", ax=object())  # type: ignore[call-overload]
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="live_plot: figsize applies to a new figure"):
        LivePlot("loss", ax=Figure().add_subplot(), figsize=(3, 3))


# --- best_model ----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_best_model_refuses_a_device_this_machine_lacks() -> None:
    with pytest.raises(ValueError, match="best_model: 'device' 'cuda' cannot hold tensors"):
        best_model("val_loss", device="cuda")


def test_best_model_refuses_a_device_that_is_not_one() -> None:
    with pytest.raises(ValueError, match=r"best_model: 'device' must be a torch\.device.*int: 0"):
        best_model("val_loss", device=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"best_model: 'device' must be a torch.device"):
        best_model("val_loss", device=nn.Linear(1, 1))  # type: ignore[arg-type]


# --- augmenters and the event's own keys ---------------------------------------------------------


@pytest.mark.parametrize("key", ["step", "model", "train_loss", "train_time_sec"])
def test_augmenters_may_not_name_the_events_own_keys(key: str) -> None:
    with pytest.raises(ValueError, match=rf"validation_loss: 'key' must not be .* got '{key}'"):
        validation_loss(_data(), nn.MSELoss(), key=key)
    with pytest.raises(ValueError, match=rf"evaluate: 'metrics' must not be .* got '{key}'"):
        evaluate(_data(), metrics={key: nn.MSELoss()})
    with pytest.raises(ValueError, match=rf"ema: 'out_key' must not be .* got '{key}'"):
        ema("val_loss", decay=0.5, out_key=key)


def test_augment_refuses_a_result_that_overwrites_an_own_key(counting_source: Any) -> None:
    source = counting_source(n=5, fields=lambda i: {"train_loss": 1.0 / i})
    stream = augment(source, lambda ev: {"train_loss": 0.0, "extra": 1})
    with pytest.raises(ValueError, match=r"augment: the augmenter .* returned \['train_loss'\]"):
        next(stream)
    assert source.closed
    # Keys an earlier augmenter added may still be replaced.
    events = [{"step": 1, "val_loss": 2.0}]
    assert next(augment(events, lambda ev: {"val_loss": 1.0}))["val_loss"] == 1.0


# --- callables -----------------------------------------------------------------------------------


def test_factories_passed_uncalled_get_a_hint() -> None:
    with pytest.raises(
        TypeError, match=r"tap: 'fn' got the factory itself; .*best_model\('val_loss'\)"
    ):
        tap(best_model)
    with pytest.raises(
        TypeError, match=r"augment: 'fn' got the factory itself; .*validation_loss\("
    ):
        augment(validation_loss)
    with pytest.raises(TypeError, match=r"augment: 'fn' got the factory itself; .*evaluate\("):
        augment(evaluate)
    with pytest.raises(TypeError, match=r"tap: 'fn' got the factory itself; .*print_keys\("):
        tap(print_keys)
    tap(best_model("val_loss"))  # an instance is fine


def test_wrong_arity_callbacks_are_refused_naming_the_callable() -> None:
    def two(event: Any, other: Any) -> None: ...

    with pytest.raises(
        TypeError, match=r"tap: 'fn' must accept 1 positional .*two\(event: 'Any', other"
    ):
        tap(two)
    with pytest.raises(TypeError, match=r"augment: 'fn' must accept 1 positional .*two"):
        augment(two)
    with pytest.raises(TypeError, match=r"tick: 'fn' must accept no arguments, but .*<lambda>"):
        tick(lambda event: None)
    tap(print)  # *args and built-ins are fine
    tick(print)


def test_take_with_a_list_that_is_no_stream_or_swapped_arguments_gets_a_hint() -> None:
    with pytest.raises(
        TypeError, match=r"take: the first argument looks like a stream but .*\[1, 2, 3\]"
    ):
        take([1, 2, 3], 2)  # type: ignore[call-overload]
    with pytest.raises(
        TypeError, match=r"take: the stream must come first: take\(events, \.\.\.\)"
    ):
        take(2, [{"step": 1}])  # type: ignore[call-overload]
