"""One store for every saved artifact: VAEs, partial encoders, pyramids, classifiers.

An artifact is a directory: ``config.json`` ({"format", "format_version", "model": constructor
arguments, "card": how trained and test scores}), ``model.safetensors`` (its tensors, the format
tag in the header) and ``README.md`` (the card). Nothing is unpickled: safetensors holds raw
tensors and a JSON header only, so a file from an untrusted source cannot run code.

Each package declares its :class:`Kind` (format tag, folder of bundled ones, how to build the
module from its config) and registers it here; the VAE kind is declared below. Bundled artifacts
live in ``condvae/pretrained/<folder>/<name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condvae.checkpoint import PICKLE_SUFFIXES, atomic_save_tensors, atomic_write_bytes, read_tensors
from condvae.errors import CheckpointError, CondVAEError
from condvae.guards import check_device
from condvae.models import ARCHITECTURES, VAE, build_model
from condvae.models.source import source_origin

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


@dataclass(frozen=True)
class Kind:
    """How one kind of artifact is stored; the store does the reading, checking and writing."""

    key: str  # prefixes its error messages: "model", "encoder", ...
    format: str  # the tag in config.json and in the weights' header
    folder: str  # bundled ones live in pretrained/<folder>/<name>
    cls: type[nn.Module]  # what save_pretrained recognises
    build: Callable[[dict[str, Any], Any], nn.Module]  # (config, vae) -> module shaped by the config
    loader: str  # the function that loads it, named in messages
    title: str = ""  # what it is, in messages and listings: "VAE", "partial encoder" (default: key)
    noun: str = ""  # "unknown <noun> 'name'" (default: the title)
    architectures: Collection[str] = ()  # the model architectures it claims (empty: any)
    entries: Callable[[Any], dict[str, Any]] = lambda module: {"model": module.config()}
    header: Callable[[Any], dict[str, str]] = lambda module: {}  # checked against the weights
    check: Callable[[Any, Any, str], None] | None = None  # (module, vae, where): refuse a wrong VAE
    describe: Callable[[dict[str, Any]], str] = lambda config: str(config["model"].get("architecture"))
    verify: Callable[[Any, dict[str, Any]], None] | None = None  # (module, config): before any write
    version: int = 1

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.key)

    @property
    def directory(self) -> Path:
        return PRETRAINED_DIR / self.folder


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.key] = kind
    return kind


def bundled(kind: Kind) -> list[str]:
    """Names of the bundled artifacts of ``kind``."""
    if not kind.directory.is_dir():
        return []
    return sorted(p.name for p in kind.directory.iterdir() if (p / CONFIG_FILE).is_file())


def resolve(kind: Kind, name: str | Path) -> Path:
    """A bundled name or a directory; anything else is refused in one line."""
    if str(name) in bundled(kind):
        return kind.directory / str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        never = " (condvae never unpickles)" if path.suffix in PICKLE_SUFFIXES else ""
        if never and kind is VAES:  # a user's own torch.save'd model: say how to bring it in
            never = (
                " (condvae never unpickles; for your own model, condvae.wrap(..., source="
                "'package.module:factory') then condvae.save_pretrained(vae, DIR))"
            )
        raise CheckpointError(
            f"{kind.key}: {str(path)!r} is a file; pass the directory holding config.json and "
            f"model.safetensors{never}"
        )
    raise CheckpointError(
        f"{kind.key}: unknown {kind.noun or kind.title} {str(name)!r}; no {kind.title} of that name is "
        f"bundled ({bundled(kind)}) and the directory {str(path)!r} does not exist"
    )


def _owner(config: dict[str, Any]) -> Kind | None:
    architecture = config["model"].get("architecture")
    for kind in KINDS.values():
        if kind.format == config.get("format") and (
            not kind.architectures or architecture in kind.architectures
        ):
            return kind
    return None


def read_config(kind: Kind, name: str | Path) -> dict[str, Any]:
    """The checked ``config.json`` of a bundled name or a directory."""
    directory = resolve(kind, name)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{kind.key}: {str(path)!r} not found (expected a directory from save_pretrained)"
        )
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"config: {str(path)!r} is not valid JSON ({exc})") from None
    valid = isinstance(config, dict) and isinstance(config.get("model"), dict)
    owner = _owner(config) if valid else None
    if owner is not None and owner is not kind:
        raise CheckpointError(
            f"{kind.key}: {str(directory)!r} is a {config['model'].get('architecture')!r} model, "
            f"not a {kind.title}; load it with {owner.loader}"
        )
    if not valid or config.get("format") != kind.format:
        raise CheckpointError(f"config: {str(path)!r} is not a condvae config (no format {kind.format!r})")
    if config.get("format_version", 0) > kind.version:
        raise CheckpointError(
            f"config: {str(path)!r} has format_version {config['format_version']}, "
            f"this condvae reads up to {kind.version}; upgrade condvae"
        )
    return config


def _check_state(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} does not match its config "
            f"(missing tensors {missing[:4]}, unexpected tensors {unexpected[:4]})"
        )
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"checkpoint: {str(path)!r} tensor {key!r} has shape {list(tensors[key].shape)}, "
                f"the config needs {list(value.shape)}"
            )
        if not torch.isfinite(tensors[key]).all():
            raise CheckpointError(f"checkpoint: {str(path)!r} tensor {key!r} contains NaN or inf")


def _refuse_code_inside(directory: Path, config: dict[str, Any]) -> None:
    """A wrapped model names an importable factory; should that resolve to a file inside the
    model's own folder (it is the working directory, say), refuse: a downloaded folder's code
    is never run. Any other module is imported as an ``import`` statement would."""
    source = config["model"].get("source")
    if not isinstance(source, str):
        return
    origin = source_origin(source)
    if origin is not None and origin.is_relative_to(directory.resolve()):
        raise CheckpointError(
            f"config: source {source!r} resolves to {str(origin)!r} inside the model directory; "
            "condvae never runs code from a model's folder (install the package that defines it)"
        )


def load(kind: Kind, name: str | Path, device: str | torch.device | None = "cpu", vae: Any = None) -> Any:
    """An artifact of ``kind`` by bundled name or directory, checked against its config (and ``vae``)."""
    if device is not None:
        device = check_device(device)
    if kind.check is not None and vae is None:
        raise CondVAEError(f"vae: a {kind.title} is loaded for the VAE it was trained for; pass that VAE")
    directory = resolve(kind, name)
    config = read_config(kind, directory)
    _refuse_code_inside(directory, config)
    try:
        module = kind.build(config, vae)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"config: {str(directory / CONFIG_FILE)!r} has invalid settings ({exc})"
        ) from None
    module.card = {"name": directory.name, **config.get("card", {})}
    if kind.check is not None:
        kind.check(module, vae, str(directory))
    weights = directory / WEIGHTS_FILE
    tensors, header = read_tensors(weights)
    if header.get("format") != kind.format:
        raise CheckpointError(
            f"checkpoint: {str(weights)!r} was not written by condvae (no {kind.format!r} tag in its header)"
        )
    for key, wanted in kind.header(module).items():
        if header.get(key) != wanted:
            raise CheckpointError(
                f"checkpoint: {str(weights)!r} holds a {header.get(key)!r} model, "
                f"config.json describes {wanted!r} ({key})"
            )
    _check_state(module, tensors, weights)
    module.load_state_dict(tensors)
    return module.to(device).eval()


def _cell(value: object) -> str:
    """A markdown table cell: pipes inside (as in KL(q || r)) would split it."""
    return str(value).replace("|", "\\|")


def render_card(config: dict[str, Any]) -> str:
    """The README.md model card from the config's ``card`` entry (how trained, test scores)."""
    card = config.get("card", {})
    lines = [f"# {card.get('name', 'condvae model')}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    lines += ["## Model", "", "```json", json.dumps(config["model"]), "```", ""]
    if card.get("usage"):
        lines += ["```python", card["usage"], "```", ""]
    if card.get("training"):
        lines += ["## Training", "", *(f"- {k}: {v}" for k, v in card["training"].items()), ""]
    if card.get("command"):
        lines += ["Command:", "", "```bash", card["command"], "```", ""]
    if card.get("metrics"):
        lines += ["## Test scores", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in card["metrics"].items()]
        lines.append("")
    if card.get("evaluation_command"):
        lines += ["Evaluation command:", "", "```bash", card["evaluation_command"], "```", ""]
    if card.get("machine"):
        lines += [f"Measured on: {card['machine']}.", ""]
    if card.get("notes"):
        lines += ["## Notes", "", card["notes"], ""]
    return "\n".join(lines)


def save_pretrained(module: nn.Module, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` for any kind.

    The card defaults to the module's own ``card``. Everything is checked first (the kind, its
    config and card as JSON, the kind's own ``verify``), so a refusal creates nothing. A new
    directory is written as a hidden temporary one beside it and renamed into place (atomic on
    POSIX): a crash leaves no directory or a complete one, never an empty or half-written one.
    Into an existing directory (other files in it are kept) each file is replaced atomically.
    """
    kind = next((k for cls in type(module).__mro__ for k in KINDS.values() if k.cls is cls), None)
    if kind is None:
        raise CondVAEError(f"module: cannot save a {type(module).__name__}; condvae saves {sorted(KINDS)}")
    directory, card = Path(directory), dict(card or getattr(module, "card", {}))
    if directory.exists() and not directory.is_dir():
        raise CondVAEError(f"directory: {str(directory)!r} is a file; pass a directory to save into")
    config = {"format": kind.format, "format_version": kind.version, **kind.entries(module)}
    if card:
        config["card"] = card
    try:
        text = json.dumps(config, indent=2) + "\n"
    except (TypeError, ValueError) as exc:
        raise CondVAEError(f"card: the config and card must be JSON-serialisable ({exc})") from None
    files = {CONFIG_FILE: text.encode(), CARD_FILE: render_card(config).encode()}
    if kind.verify is not None:
        kind.verify(module, config)
    state, header = module.state_dict(), {"format": kind.format, **kind.header(module)}
    if directory.is_dir():
        atomic_save_tensors(directory / WEIGHTS_FILE, state, header)  # weights first: the config
        for name, data in files.items():  # describing them appears only once they are complete
            atomic_write_bytes(directory / name, data)
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        atomic_save_tensors(staging / WEIGHTS_FILE, state, header)
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        staging.chmod(0o755)  # mkdtemp's folders are 0700; the saved one should read like any other
        os.rename(staging, directory)  # refuses (OSError) if someone created it meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def describe() -> str:
    """The bundled artifacts of every registered kind, one line each with its recorded test scores."""
    blocks = []
    for kind in KINDS.values():
        lines = [f"bundled {kind.title}s ({kind.loader}):"]
        for name in bundled(kind):
            config = read_config(kind, name)
            scores = ", ".join(f"{k} {v}" for k, v in config.get("card", {}).get("metrics", {}).items())
            lines.append(f"{name}: {kind.describe(config)}; {scores}")
        blocks.append("\n".join(lines if len(lines) > 1 else [*lines, "none"]))
    return "\n\n".join(blocks)


def fingerprint(vae: nn.Module) -> str:
    """A short hash of a VAE's config and weights: what a partial encoder is tied to.

    Cached on the VAE against the tensors' version counters, which any in-place change bumps.
    """
    state = vae.state_dict()
    versions = tuple((name, t._version, t.data_ptr()) for name, t in state.items())
    cached = getattr(vae, "_condvae_fingerprint", None)
    if cached is not None and cached[0] == versions:
        return cached[1]
    try:
        described = repr(sorted(vae.config().items()))  # type: ignore[operator]
    except CondVAEError:  # a wrapped user model has no config: its class and weights identify it
        described = f"{type(vae).__qualname__} {vae.architecture} {vae.data_shape} {vae.latent_dim}"
    digest = hashlib.sha256(described.encode())
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    value = digest.hexdigest()[:16]
    vae._condvae_fingerprint = (versions, value)  # type: ignore[attr-defined]
    return value


def _verify_vae(model: VAE, config: dict[str, Any]) -> None:
    """Before saving: the config must rebuild a model with the same tensors (names and shapes);
    a wrapped model's source must import and build the user's module."""
    # Building initialises weights from the global RNG: fork it, so that saving mid-training
    # (the best model so far) leaves the run's random stream, and so its resume, untouched.
    with torch.random.fork_rng(devices=[]):
        verify_source = getattr(model, "verify_source", None)
        if verify_source is not None:
            verify_source()  # a wrapped model: one-line errors about its source, not its config
        rebuilt = build_model(config["model"]).state_dict()
    state = model.state_dict()
    differ = sorted(k for k in set(state) | set(rebuilt) if k not in state or k not in rebuilt)
    differ += sorted(k for k in set(state) & set(rebuilt) if state[k].shape != rebuilt[k].shape)
    if differ:
        raise CondVAEError(
            f"model: its config() does not rebuild it ({len(differ)} tensors differ, e.g. {differ[:3]}); "
            "config() must return every constructor argument"
        )


def _describe_vae(config: dict[str, Any]) -> str:
    m = config["model"]
    latent = m.get("latent_dim") or f"{sum(m['groups'])} in groups {m['groups']}"
    return f"{m['architecture']} {m.get('likelihood', '')} latent {latent}, data {m['data_shape']}"


VAES = register(
    Kind(
        key="model",
        title="VAE",
        noun="model name",
        format="condvae-pretrained",
        folder="",
        cls=VAE,
        build=lambda config, vae: build_model(config["model"]),
        loader="condvae.load",
        architectures=ARCHITECTURES,
        header=lambda model: {"architecture": model.architecture},
        describe=_describe_vae,
        verify=_verify_vae,
    )
)


def from_pretrained(name: str | Path, device: str | torch.device = "cpu") -> VAE:
    """A bundled VAE by name (``condvae models`` lists them) or a directory from save_pretrained."""
    return load(VAES, name, device)
