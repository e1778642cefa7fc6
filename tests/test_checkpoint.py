from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from condvae import MLPVAE, CheckpointError, ConvVAE, from_pretrained, load, save_pretrained
from condvae.checkpoint import atomic_save_tensors, read_tensors
from condvae.classifier import CLASSIFIERS, SmallCNN, load_classifier, save_classifier
from condvae.loop import CHECKPOINT, PREVIOUS, LoopConfig, Phase, Trainee, run
from condvae.partial import ENCODERS
from condvae.pyramid import PYRAMIDS
from condvae.store import KINDS, VAES, bundled, describe


@pytest.fixture
def saved(tmp_path: Path) -> tuple[MLPVAE, Path]:
    torch.manual_seed(0)
    model = MLPVAE((1, 6, 6), latent_dim=3, hidden=[12])
    return model, save_pretrained(model, tmp_path / "m", card={"name": "tiny", "metrics": {"elbo": -1}})


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, likelihood: str) -> None:
    torch.manual_seed(1)
    model = ConvVAE((1, 8, 8), latent_dim=3, channels=[4], hidden=8, likelihood=likelihood).eval()
    if likelihood == "gaussian":
        with torch.no_grad():
            model.likelihood.log_scale.normal_()
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    clone = from_pretrained(tmp_path / "m")
    x, z = torch.rand(4, 1, 8, 8), torch.randn(5, 4, 3)
    with torch.no_grad():
        for a, b in (
            (model.encode(x).mean, clone.encode(x).mean),
            (model.decode(z).mean, clone.decode(z).mean),
        ):
            assert torch.equal(a, b)
    assert load(str(tmp_path / "m")).config() == model.config()


def test_card_is_written(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    card = (path / "README.md").read_text()
    assert card.startswith("# tiny") and "| elbo | -1 |" in card
    assert from_pretrained(path).card["metrics"] == {"elbo": -1}  # type: ignore[attr-defined]


def test_truncated_weights(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    raw = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is corrupt, truncated"):
        from_pretrained(path)


def test_garbage_and_pickle_weights(saved: tuple[MLPVAE, Path]) -> None:
    model, path = saved
    (path / "model.safetensors").write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a safetensors file"):
        from_pretrained(path)
    torch.save(model.state_dict(), path / "weights.pt")
    with pytest.raises(CheckpointError, match="looks like a pickle file"):
        read_tensors(path / "weights.pt")
    with pytest.raises(CheckpointError, match="is a file; pass the directory"):
        from_pretrained(path / "weights.pt")


def test_mismatched_config(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["model"]["hidden"] = [13]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'encoder.0.weight' has shape \[12, 36\], the config needs \[13, 36\]",
    ):
        from_pretrained(path)
    config["model"]["hidden"] = [12, 12]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match its config .*missing tensors"):
        from_pretrained(path)
    config["model"]["architecture"] = "conv"
    config["model"].pop("activation")
    config["model"]["channels"] = [3]
    config["model"]["hidden"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="holds a 'mlp' model, config.json describes 'conv'"):
        from_pretrained(path)


def test_foreign_files(saved: tuple[MLPVAE, Path], tmp_path: Path) -> None:
    model, path = saved
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="was not written by condvae"):
        from_pretrained(path)
    (path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="is not a condvae config"):
        from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json' is not valid JSON"):
        from_pretrained(path)
    (path / "config.json").write_text(
        json.dumps({"format": "condvae-pretrained", "format_version": 99, "model": {}})
    )
    with pytest.raises(CheckpointError, match="format_version 99"):
        from_pretrained(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        from_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json' not found"):
        from_pretrained(tmp_path / "empty")


def test_nan_weights_rejected(saved: tuple[MLPVAE, Path]) -> None:
    model, path = saved
    state = model.state_dict()
    state["decoder.0.bias"] = torch.full_like(state["decoder.0.bias"], float("nan"))
    atomic_save_tensors(
        path / "model.safetensors", state, {"format": "condvae-pretrained", "architecture": "mlp"}
    )
    with pytest.raises(CheckpointError, match="'decoder.0.bias' contains NaN"):
        from_pretrained(path)


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(3)}, {"k": "v"})
    atomic_save_tensors(tmp_path / "a.safetensors", {"w": torch.zeros(3)}, {"k": "v2"})
    tensors, meta = read_tensors(tmp_path / "a.safetensors")
    assert torch.equal(tensors["w"], torch.zeros(3)) and meta == {"k": "v2"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_unknown_model_name() -> None:
    from condvae.errors import CondVAEError

    with pytest.raises(CondVAEError, match="model: unknown model name 'mnist-gan'"):
        load("mnist-gan")


def test_classifier_config_is_checked_like_any_artifact(tmp_path: Path) -> None:
    path = save_classifier(SmallCNN((1, 8, 8), classes=3, width=16), tmp_path / "clf")
    assert load_classifier(path).classes == 3
    config = json.loads((path / "config.json").read_text())
    for text, message in (
        ("{not json", "config.json' is not valid JSON"),
        (json.dumps({**config, "format": "condvae-pretrained"}), "is not a condvae config"),
        (json.dumps({**config, "format_version": 7}), "has format_version 7, this condvae reads up to 1"),
    ):
        (path / "config.json").write_text(text)
        with pytest.raises(CheckpointError, match=message) as info:
            load_classifier(path)
        assert "\n" not in str(info.value)


def test_other_kinds_are_pointed_to_their_loader(tmp_path: Path) -> None:
    path = save_classifier(SmallCNN((1, 8, 8), classes=3, width=16), tmp_path / "clf")
    with pytest.raises(
        CheckpointError, match="is a 'small-cnn' model, not a VAE; load it with .*load_classifier"
    ):
        from_pretrained(path)
    with pytest.raises(
        CheckpointError, match="is a 'mlp' model, not a classifier; load it with condvae.load"
    ):
        load_classifier(VAES.directory / "mnist-mlp-z2")


def test_the_listing_covers_every_kind() -> None:
    text = describe()
    assert {"model", "encoder", "pyramid", "classifier"} <= set(KINDS)
    for kind in (VAES, ENCODERS, PYRAMIDS, CLASSIFIERS):
        assert f"bundled {kind.title}s ({kind.loader}):" in text and bundled(kind)
        assert all(f"\n{name}: " in text for name in bundled(kind))


# Keeping the previous checkpoint: a tiny linear trainee on 8 fixed items, through the real loop.
# With checkpoint_every 2 and no validation before the phase's end, a 6-step run checkpoints at
# steps 2, 4 and 6.


class Killed(Exception):
    """Stands in for a kill: the run stops mid-way and nothing after it runs."""


def _trainee(steps: int = 6, kill_at: int | None = None, seen: list[int] | None = None) -> Trainee:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    x = torch.linspace(-1, 1, 24).reshape(8, 3)

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if t == kill_at:
            raise Killed
        if seen is not None:
            seen.append(t)
        return ((module(x[batch]) - x[batch].sum(1, keepdim=True)) ** 2).mean()

    phases = [Phase(list(module.parameters()), steps)]
    return Trainee(module=module, phases=phases, items=8, step=step, save=lambda *_: None, valid_every=100)


def _run(out: Path, trainee: Trainee, resume: bool = False) -> Trainee:
    cfg = LoopConfig(out=str(out), batch_size=2, lr=1e-2, checkpoint_every=2)
    run(cfg, trainee, resume=resume, progress=False)
    return trainee


def _written_step(path: Path) -> int:
    return json.loads(read_tensors(path)[1]["loop"])["step"]


def _same_weights(a: Trainee, b: Trainee) -> bool:
    pairs = zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True)
    return all(torch.equal(u, v) for u, v in pairs)


def _truncate(path: Path, keep: int | None = None) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 if keep is None else keep])


def test_a_checkpoint_keeps_the_one_it_replaces(tmp_path: Path) -> None:
    _run(tmp_path, _trainee())
    assert _written_step(tmp_path / CHECKPOINT) == 6 and _written_step(tmp_path / PREVIOUS) == 4
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keeping_never_replaces_a_good_file_with_a_truncated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, keep = tmp_path / "c.safetensors", tmp_path / "c.prev.safetensors"
    for value in (1.0, 2.0):
        atomic_save_tensors(path, {"w": torch.full((50,), value)}, {}, keep=keep)
    _truncate(path)
    atomic_save_tensors(path, {"w": torch.full((50,), 3.0)}, {}, keep=keep)
    assert float(read_tensors(keep)[0]["w"][0]) == 1.0 and float(read_tensors(path)[0]["w"][0]) == 3.0

    def no_links(src: object, dst: object) -> None:
        raise OSError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)  # then the old file is renamed to ``keep`` instead
    atomic_save_tensors(path, {"w": torch.full((50,), 4.0)}, {}, keep=keep)
    assert float(read_tensors(keep)[0]["w"][0]) == 3.0 and float(read_tensors(path)[0]["w"][0]) == 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.prev.safetensors", "c.safetensors"]


@pytest.mark.parametrize(
    ("cut", "retrained"),
    [("half", "the steps after it"), ("tail", "steps 5 to 6")],  # a tail cut leaves the header whole
)
def test_a_truncated_checkpoint_resumes_from_the_previous_one(
    tmp_path: Path, cut: str, retrained: str
) -> None:
    whole = _run(tmp_path / "whole", _trainee())
    _run(tmp_path / "run", _trainee())
    size = (tmp_path / "run" / CHECKPOINT).stat().st_size
    _truncate(tmp_path / "run" / CHECKPOINT, None if cut == "half" else size - 16)
    seen: list[int] = []
    with pytest.warns(UserWarning) as record:
        resumed = _run(tmp_path / "run", _trainee(seen=seen), resume=True)
    (message,) = [str(w.message) for w in record]
    assert "\n" not in message
    assert message.startswith(f"checkpoint: {str(tmp_path / 'run' / CHECKPOINT)!r} is corrupt, truncated")
    assert message.endswith(
        f"resuming from {str(tmp_path / 'run' / PREVIOUS)!r} at step 4 ({retrained} are trained again)"
    )
    assert seen == [4, 5] and _same_weights(resumed, whole)  # the lost steps retrained bit for bit
    # the truncated file was replaced, not kept: the previous checkpoint is still the good one
    assert _written_step(tmp_path / "run" / CHECKPOINT) == 6
    assert _written_step(tmp_path / "run" / PREVIOUS) == 4


def test_both_checkpoints_unreadable_is_a_one_line_error(tmp_path: Path) -> None:
    _run(tmp_path, _trainee())
    _truncate(tmp_path / CHECKPOINT)
    (tmp_path / PREVIOUS).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        _run(tmp_path, _trainee(), resume=True)
    message, newest = str(info.value), str(tmp_path / CHECKPOINT)
    assert "\n" not in message and message.startswith(f"checkpoint: {newest!r} is corrupt")
    assert f"the previous checkpoint is unusable too: checkpoint: {str(tmp_path / PREVIOUS)!r}" in message
    (tmp_path / PREVIOUS).unlink()  # with no previous checkpoint, the newest's own error
    with pytest.raises(
        CheckpointError, match=r"^checkpoint: .*checkpoint\.safetensors' is corrupt, truncated"
    ):
        _run(tmp_path, _trainee(), resume=True)


@pytest.mark.parametrize("moment", ["temp file written", "old file renamed"])
def test_a_kill_inside_a_checkpoint_write_leaves_a_resumable_run(tmp_path: Path, moment: str) -> None:
    whole = _run(tmp_path / "whole", _trainee())
    out = tmp_path / "run"
    with pytest.raises(Killed):  # killed during step 5, after the checkpoint at step 4
        _run(out, _trainee(kill_at=4))
    assert _written_step(out / CHECKPOINT) == 4 and _written_step(out / PREVIOUS) == 2
    # the write of a later checkpoint, killed after its temp file (here half written) and before
    # its rename; "old file renamed" is the moment inside it where hard links are unsupported
    stray = out / f".{CHECKPOINT}.k1ll3d.tmp"
    shutil.copy(out / CHECKPOINT, stray)
    _truncate(stray)
    if moment == "old file renamed":
        os.replace(out / CHECKPOINT, out / PREVIOUS)
    seen: list[int] = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        resumed = _run(out, _trainee(seen=seen), resume=True)
    assert seen == [4, 5] and _same_weights(resumed, whole)
    assert not stray.exists()
    messages = [str(w.message) for w in record]
    if moment == "temp file written":
        assert messages == []
    else:
        assert len(messages) == 1 and "does not exist; resuming from" in messages[0]
    assert _written_step(out / CHECKPOINT) == 6
