"""Command line: demo, inpaint, models, train, train-partial-encoder, evaluate, pyramid, impute, download.

Each subcommand mirrors a Python function; the flags of the training commands are generated from
the fields of their config dataclasses, so defaults live in one place. Mistakes in the arguments
or the input are reported as one line, ``condvae: error: <argument>: <what was expected>``, with
exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from condvae.errors import CondVAEError
from condvae.guards import (
    check_count,
    check_device,
    check_output_file,
    check_output_folder,
    memory_limit,
    parse_bytes,
)


class Parser(argparse.ArgumentParser):
    """argparse with the promised error format: one line naming the argument, exit status 2
    (argparse's own prints the whole usage first). Abbreviated flags are refused: ``--sample``
    silently meaning ``--samples`` hides typos."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"condvae: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        return check_count(int(text), "value")
    except (ValueError, CondVAEError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _device(text: str) -> str:
    try:
        return str(check_device(text))
    except CondVAEError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def _option(text: str) -> tuple[str, str, object]:
    """``METHOD.KEY=VALUE`` -> (method, key, value); the value read as a Python literal."""
    import ast

    head, eq, value = text.partition("=")
    method, dot, key = head.partition(".")
    if not (eq and dot and method.strip() and key.strip()):
        raise argparse.ArgumentTypeError(
            f"expected METHOD.OPTION=VALUE (e.g. rejection.budget=10000000), got {text!r}"
        )
    try:
        parsed: object = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()  # a word, such as proposal=prior
    if isinstance(parsed, float) and parsed.is_integer() and "e" in value.lower():
        parsed = int(parsed)  # 1e7 for a count
    return method.strip(), key.strip(), parsed


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _size(text: str) -> list[int]:
    values = _int_list(text.replace("x", ","))
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}")
    return values


HELP = {  # for the shared flags, and config fields without metadata["help"]
    "dataset": "mnist | fashion_mnist | frey | olivetti | folder:PATH | a table: breast_cancer | diabetes "
    "| wine | csv:PATH (partial encoder: None = the VAE's)",
    "vae": "the frozen VAE: bundled name or pretrained directory",
    "data_dir": "dataset folder; None: the condvae cache",
    "out": "output folder: checkpoint, log, trained model",
    "image_size": "HxW for folder datasets",
    "augment": "random flips and shifts (small sets)",
    "shift": "largest shift of --augment, in pixels",
    "checkpoint_every": "steps between checkpoints",
    "valid_every": "steps between validations (train: None = once per epoch)",
    "patience": "validations without improvement before stopping; 0 = never",
    "limit_train": "use the first N training items",
    "epochs": "passes over the training images (pyramid: per level)",
    "lr": "Adam learning rate, cosine-decayed to --lr-min",
    "max_steps": "stop after this many steps",
    "lr_min": "the learning rate at the end",
    "steps": "optimisation steps",
    "valid_size": "validation images",
    "batch_size": "images per step",
    "seed": "random seed",
    "kl_warmup_steps": "steps of linear KL annealing",
    "objective": "forward (IPA) | reverse (IPA-R)",
    "masks": "mask family: mixture | random | box | freeform | ...",
    "covariance": "diagonal | full",
    "hidden": "widths of a fresh MLP body",
    "samples": "reverse: z draws per item",
    "device": "torch device: cpu, cuda or cuda:N (checked before any work)",
    "no_progress": "no progress bars",
    "micro_batches": "the global batch in this many parts, each with its own random draws; "
    "under torchrun a multiple of the processes (default: one per process)",
    "resume": "continue the checkpoint in --out",
}
ALIASES = {"kl_warmup_steps": "--kl-warmup", "vae": "--model"}  # older flag names that keep working
PARSERS: dict[str, Callable[[str], Any]] = {"image_size": _size}
ARCH = "model"  # the config field built from the explicit model-architecture flags
SHARED: dict[str, dict[str, Any]] = {
    "--device": {"default": "cpu", "type": _device},
    "--data-dir": {"default": None},
    "--seed": {"type": int, "default": 0, "help": "random seed (the same seed gives the same result)"},
    "--no-progress": {"action": "store_true"},
    "--resume": {"action": "store_true"},
}
WHERE = ("--device", "--data-dir", "--seed")
MODEL_HELP = "bundled model name or pretrained directory"


def _parent(*flags: str) -> argparse.ArgumentParser:
    """A parser holding the shared ``flags``, for ``parents=``."""
    parent = Parser(add_help=False)
    for flag in flags:
        parent.add_argument(flag, **{"help": HELP.get(flag[2:].replace("-", "_")) or " ", **SHARED[flag]})
    return parent


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    text: str,
    run: Callable[[argparse.Namespace], None],
    *flags: str,
    config: type | None = None,
) -> argparse.ArgumentParser:
    """A subcommand with the shared ``flags`` and, given a ``config`` dataclass, one flag per field."""
    p = sub.add_parser(
        name,
        help=text,
        description=text,
        parents=[_parent(*flags)],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(run=run)
    if config is not None:
        add_config_flags(p, config)
    return p


def _type(hint: Any) -> Callable[[str], Any]:
    """``int | None`` -> int; ``list[int]`` -> comma-separated integers."""
    union = typing.get_origin(hint) in (types.UnionType, typing.Union)
    (base,) = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if typing.get_origin(base) is list:
        return _int_list
    return _number(base) if base in (int, float) else base


def _number(kind: type) -> Callable[[str], Any]:
    """int or float flags that refuse NaN and say what they expected."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_config_flags(p: argparse.ArgumentParser, config: type) -> None:
    """One ``--field-name`` flag per field of the dataclass ``config``, typed and defaulted by it."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.name == ARCH:
            continue
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "help": f.metadata.get("help") or HELP.get(f.name) or f.name.replace("_", " "),
        }
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:  # no default to show
            kwargs.update(required=True, default=argparse.SUPPRESS)
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if kwargs["default"] else "store_true"
        else:
            kwargs["type"] = PARSERS.get(f.name) or _type(hints[f.name])
        aliases = [ALIASES[f.name]] if f.name in ALIASES else []
        p.add_argument(f"--{f.name.replace('_', '-')}", *aliases, **kwargs)


def _pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Keyword arguments from the parsed flags of these names."""
    return {name: getattr(args, name) for name in names}


def config_from(args: argparse.Namespace, config: type, **given: Any) -> Any:
    """The ``config`` dataclass from its flags, plus ``given`` fields."""
    return config(**_pick(args, *[f.name for f in dataclasses.fields(config) if f.name != ARCH]), **given)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from condvae.train import TrainConfig

    text = "train a VAE (resumable)"
    p = _command(sub, "train", text, _run_train, "--resume", "--no-progress", config=TrainConfig)
    p.add_argument(
        "--arch",
        default="mlp",
        choices=["mlp", "conv", "hierarchical", "linear_gaussian", "tabular"],
        help="model architecture",
    )
    p.add_argument("--latent-dim", type=_positive, default=2, help="latent size (mlp, conv, tabular)")
    p.add_argument("--groups", type=_int_list, help="hierarchical: latent group sizes, top first: 4,8,16")
    p.add_argument("--state", type=_positive, help="hierarchical: width of the top-down state")
    p.add_argument("--hidden", type=_int_list, help="MLP widths, e.g. 512,512; conv: one width")
    p.add_argument("--channels", type=_int_list, help="conv channels, e.g. 32,64")
    p.add_argument(
        "--likelihood",
        choices=["bernoulli", "gaussian", "logistic"],
        help="p(x | z); default: the architecture's",
    )
    p.add_argument(
        "--activation", choices=["relu", "tanh", "elu"], help="hidden activation; default: the architecture's"
    )


def _train_model(args: argparse.Namespace) -> dict[str, object]:
    """The model's arguments from the architecture flags, only those the architecture takes."""
    model: dict[str, object] = {"architecture": args.arch, "latent_dim": args.latent_dim}
    if args.likelihood:
        model["likelihood"] = args.likelihood
    if args.arch == "hierarchical":
        del model["latent_dim"]  # the sum of the groups
        model.update(
            {k: getattr(args, k) for k in ("groups", "hidden", "state", "activation") if getattr(args, k)}
        )
    elif args.arch in ("mlp", "tabular"):  # tabular: a table's VAE (condvae.train_vae)
        model.update({k: getattr(args, k) for k in ("hidden", "activation") if getattr(args, k)})
    elif args.arch == "conv":
        if args.channels:
            model["channels"] = args.channels
        if args.hidden:
            if len(args.hidden) != 1:
                raise CondVAEError("hidden: a conv model takes one hidden width, e.g. --hidden 256")
            model["hidden"] = args.hidden[0]
    elif args.likelihood not in (None, "gaussian"):
        raise CondVAEError("likelihood: the linear_gaussian model has a gaussian likelihood only")
    if args.arch == "linear_gaussian":
        model.pop("likelihood", None)
    return model


def _run_train(args: argparse.Namespace) -> None:
    from condvae.train import TrainConfig, train

    cfg = config_from(args, TrainConfig, model=_train_model(args))
    check_output_folder(cfg.out)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    _trained(result.steps, result.seconds, "ELBO", result.best_valid_elbo, result.out / "model")


def _trained(steps: int, seconds: float, score: str, best: float | None, saved: object) -> None:
    from condvae import distributed

    if not distributed.is_main():  # under torchrun, rank 0 reports
        return
    shown = "n/a" if best is None else f"{best:.3f}"
    print(f"trained {steps} steps in {seconds:.1f} s; best valid {score} {shown}; saved to {saved}")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    text = "test ELBO and importance-weighted NLL"
    p = _command(sub, "evaluate", text, _run_evaluate, *WHERE, "--no-progress")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--k", type=_positive, default=5000, help="importance samples per image")
    p.add_argument("--limit", type=_positive, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=_positive, help="images per batch")
    p.add_argument("--chunk", type=_positive, help="importance samples per decoder call")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")


def _run_evaluate(args: argparse.Namespace) -> None:
    from condvae import load
    from condvae.evaluate import evaluate_dataset

    scores = evaluate_dataset(
        load(args.model, device=args.device),
        **_pick(args, "dataset", "split", "k", "limit", "batch_size", "chunk", "seed", "data_dir"),
        progress=not args.no_progress,
    )
    print(json.dumps(scores) if args.json else "\n".join(f"{k}: {v}" for k, v in scores.items()))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    text = "inpaint test images with a bundled model; writes a PNG"
    p = _command(sub, "demo", text, _run_demo, *WHERE)
    p.add_argument("--model", default="mnist-mlp-z50", help=MODEL_HELP)
    p.add_argument(
        "--out", default="demo.png", help="the picture: .png, .pdf, .svg or .jpg (checked before any work)"
    )
    p.add_argument("--n", type=_positive, default=4, help="test images to complete (at most the test split)")
    p.add_argument("--mask", default="top-half", help="evidence, as for inpaint (e.g. random:0.1)")


def _run_demo(args: argparse.Namespace) -> None:
    from condvae.demo import run_demo

    run_demo(args.model, **_pick(args, "out", "n", "mask", "data_dir", "device", "seed"))


def _add_inpaint(sub: argparse._SubParsersAction) -> None:
    text = "complete an image from partial evidence; prints metrics"
    p = _command(sub, "inpaint", text, _run_inpaint, *WHERE)
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--image", required=True, help="a PNG/JPEG of the model's size, or dataset:split:index")
    p.add_argument(
        "--mask",
        default="random:0.1",
        help="random:P | box:r0,c0,r1,c1 | band:r0,r1 | top-half | quadrant:tl | freeform | ~SPEC | PNG",
    )
    p.add_argument(
        "--method", default="gvi,planar", help="comma-separated methods (condvae models lists them)"
    )
    p.add_argument("--samples", type=_positive, default=8, help="completions to draw per method")
    p.add_argument("--steps", type=_positive, help="optimisation steps of the cross-coders")
    p.add_argument("--encoder", help="ipa/semi: partial encoder name or directory (default: the bundled one)")
    p.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="any option of a method, repeatable: rejection.budget=1e7, mixture.lr=0.01, hmc.chains=8",
    )
    p.add_argument(
        "--out", default="inpaint.png", help="the picture: .png, .pdf, .svg or .jpg (checked before any work)"
    )


def _run_inpaint(args: argparse.Namespace) -> None:
    from condvae import load
    from condvae.conditioning import METHODS
    from condvae.inpaint import format_rows, inpaint, parse_methods

    methods = parse_methods(args.method)
    out = check_output_file(args.out)
    options: dict[str, dict[str, object]] = {}
    if args.steps is not None:
        flows = [m for m in methods if "steps" in METHODS[m].options()]
        options = {m: {"steps": args.steps} for m in flows}
    if args.encoder is not None:
        for m in ("ipa", "semi"):
            options.setdefault(m, {})["encoder"] = args.encoder
    for method, key, value in args.option:
        if method not in methods:
            raise CondVAEError(f"option: {method!r} is not among the methods run ({', '.join(methods)})")
        if key not in METHODS[method].options():
            raise CondVAEError(
                f"option: {method} has no option {key!r}; it takes {METHODS[method].options()}"
            )
        options.setdefault(method, {})[key] = value
    model = load(args.model, device=args.device)
    rows = inpaint(
        model,
        args.image,
        args.mask,
        methods,
        options=options,
        out=out,
        **_pick(args, "samples", "seed", "data_dir"),
    )
    print(format_rows(rows))
    if rows and rows[0].get("prior_only"):
        print(f"note: mask {args.mask!r} observes nothing; the completions are samples of the prior")
    if any("error" not in r for r in rows):
        print(f"wrote {out}")
    failed = [r["method"] for r in rows if "error" in r]
    if len(failed) == len(rows):  # nothing to show: the (first) method's own one-line error
        raise CondVAEError(rows[0]["error"])
    if failed:
        raise CondVAEError(f"method: {len(failed)} of {len(rows)} failed ({', '.join(failed)}); see above")


def _add_train_partial(sub: argparse._SubParsersAction) -> None:
    from condvae.partial.train import PartialTrainConfig

    text = "train an amortized partial encoder r(z | x_o, m) for a VAE (resumable)"
    run = _run_train_partial
    _command(sub, "train-partial-encoder", text, run, "--resume", "--no-progress", config=PartialTrainConfig)


def _run_train_partial(args: argparse.Namespace) -> None:
    from condvae.partial.train import PartialTrainConfig, train_partial_encoder

    cfg = config_from(args, PartialTrainConfig)
    check_output_folder(cfg.out)
    result = train_partial_encoder(cfg, resume=args.resume, progress=not args.no_progress)
    _trained(result.steps, result.seconds, "loss", result.best_valid, result.out / "encoder")


def _add_pyramid(sub: argparse._SubParsersAction) -> None:
    from condvae.pyramid.train import PyramidTrainConfig

    p = sub.add_parser(
        "pyramid",
        description="Laplacian pyramid VAEs",
        help="Laplacian pyramid VAEs: train, sample, edit a painted coarse image",
    )
    actions = p.add_subparsers(dest="action", required=True)
    text = "train a pyramid greedily, coarse to fine (resumable)"
    run = _run_pyramid_train
    t = _command(actions, "train", text, run, "--resume", "--no-progress", config=PyramidTrainConfig)
    t.add_argument("--levels", type=_positive, default=2, help="finer levels below the coarse image")
    t.add_argument("--latent-dims", type=_int_list, help="one per finer level, coarse to fine")
    t.add_argument("--coarse", help='the coarse VAE\'s config as JSON, e.g. \'{"architecture": "conv"}\'')
    t.add_argument("--channels", type=_int_list, help="conv widths of the finer levels")
    t.add_argument("--hidden", type=_positive, help="width of the finer levels' linear layers")
    t.add_argument("--kl-weights", help="lambda per level, coarse first, e.g. 1,1,1")
    t.add_argument("--condition", default="reconstruction", choices=["reconstruction", "truth"])
    t.add_argument("--latent", default="vector", choices=["vector", "map"], help="finer levels' latents")
    for name, text in (
        ("sample", "samples, or partial samples keeping an image's coarse levels"),
        ("edit", "fine detail for a painted coarse image (PNG)"),
    ):
        a = _command(actions, name, text, _run_pyramid, *WHERE)
        a.add_argument("--model", required=True, help="bundled pyramid name or pretrained directory")
        if name == "sample":
            a.add_argument("--image", help="PNG of the model's size, or dataset:split:index")
            a.add_argument("--keep", type=_int_list, default=[1], help="coarse entries to fix, e.g. 1,2")
        else:
            a.add_argument("--painting", required=True, help="PNG of the coarse size (or a finer level's)")
        a.add_argument("--n", type=_positive, default=8, help="samples per row")
        a.add_argument("--draws", action="store_true", help="sample pixels too, not decoder means")
        a.add_argument("--temperature", type=float, default=1.0, help="latent spread; < 1: cleaner detail")
        a.add_argument("--out", default=f"pyramid-{name}.png")


def _run_pyramid(args: argparse.Namespace) -> None:
    from condvae.pyramid import load_pyramid
    from condvae.pyramid.edit import edit_figure, sample_figure

    args.out = check_output_file(args.out)
    model = load_pyramid(args.model, device=args.device)
    common = {"mean": not args.draws, **_pick(args, "n", "seed", "temperature")}
    if args.action == "sample":
        if args.image is None and args.keep != [1]:
            raise CondVAEError("keep: fixing levels needs an --image to take them from")
        path = sample_figure(model, args.out, **_pick(args, "image", "keep", "data_dir"), **common)
    else:
        path = edit_figure(model, args.painting, out=args.out, **common)
    print(f"wrote {path}")


def _run_pyramid_train(args: argparse.Namespace) -> None:
    from condvae.pyramid.train import PyramidTrainConfig, train_pyramid

    model: dict[str, object] = {"levels": args.levels, "condition": args.condition, "latent": args.latent}
    if args.coarse:
        try:
            model["coarse"] = json.loads(args.coarse)
        except json.JSONDecodeError as exc:
            raise CondVAEError(f"coarse: expected a JSON object, got {args.coarse!r} ({exc})") from None
        if not isinstance(model["coarse"], dict):
            raise CondVAEError(f"coarse: expected a JSON object, got {args.coarse!r}")
    model.update(
        {k: getattr(args, k) for k in ("latent_dims", "channels", "hidden") if getattr(args, k) is not None}
    )
    if args.kl_weights:
        try:
            model["kl_weights"] = [float(v) for v in args.kl_weights.split(",")]
        except ValueError:
            raise CondVAEError(
                f"kl-weights: expected comma-separated numbers, got {args.kl_weights!r}"
            ) from None
    cfg = config_from(args, PyramidTrainConfig, model=model)
    check_output_folder(cfg.out)
    result = train_pyramid(cfg, resume=args.resume, progress=not args.no_progress)
    from condvae import distributed

    if distributed.is_main():  # under torchrun, rank 0 saved the model and reports
        print(f"trained in {result.card['training']['training_seconds']} s; model saved to {args.out}/model")


def _add_impute(sub: argparse._SubParsersAction) -> None:
    text = "fill the missing cells of a CSV table (a VAE trained on the table itself, MIWAE)"
    p = _command(sub, "impute", text, _run_impute, "--device", "--seed", "--no-progress")
    p.add_argument("table", help="CSV with a header row; empty, NA, NaN or ? cells are missing")
    p.add_argument("--out", required=True, help="the imputed CSV (observed cells copied verbatim)")
    p.add_argument("--draws", type=_positive, default=100, help="posterior draws per row for the imputation")
    p.add_argument("--method", default="importance", help="conditioning method (condvae.METHODS)")
    p.add_argument("--epochs", type=_positive, default=400, help="training passes over the rows")
    p.add_argument("--sample-posterior", action="store_true", help="one posterior draw, not the mean")


def _run_impute(args: argparse.Namespace) -> None:
    import csv
    from pathlib import Path

    import numpy as np

    from condvae.data.tables import MISSING_TOKENS, read_csv
    from condvae.impute import CondVAEImputer

    check_output_file(args.out, suffixes=(".csv",))
    if Path(args.out).resolve() == Path(args.table).resolve():
        raise CondVAEError(f"out: {args.out!r} is the input table; write the imputed table elsewhere")
    x, header = read_csv(args.table)
    imputer = CondVAEImputer(
        n_draws=args.draws,
        method=args.method,
        epochs=args.epochs,
        sample_posterior=args.sample_posterior,
        random_state=args.seed,
        device=args.device,
        verbose=int(not args.no_progress),
    )
    filled = imputer.fit_transform(x)
    with open(args.table, newline="") as handle:
        rows = list(csv.reader(handle))
    for i, row in enumerate(rows[1:]):  # observed cells verbatim; missing ones the shortest exact repr
        for j, cell in enumerate(row):
            if cell.strip().lower() in MISSING_TOKENS:
                row[j] = repr(float(filled[i, j]))
    with open(args.out, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    print(f"imputed {int(np.isnan(x).sum())} missing cells of {len(header)} columns; wrote {args.out}")


def _add_design(sub: argparse._SubParsersAction) -> None:
    text = "choose what to observe next: glimpses of an image or features of a table row"
    p = _command(sub, "design", text, _run_design, *WHERE)
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--image", help="image: dataset:split:index or a PNG/JPEG of the model's size")
    p.add_argument("--row", help="table row: TABLE:split:index, e.g. wine+target:test:0")
    p.add_argument("--steps", type=_positive, default=4, help="glimpses or features to acquire")
    p.add_argument("--patch", type=_positive, help="glimpse side in pixels (default: a 7 x 7 grid)")
    p.add_argument("--target", help="table column to predict (default: 'target')")
    p.add_argument(
        "--strategy",
        default="ipa",
        help="ipa | ipa-r | a method (gvi, mixture, ...) | unconditional | random | sing",
    )
    p.add_argument("--completions", type=_positive, default=16, help="completions per step")
    p.add_argument("--mask", help="evidence before the first step (mask spec; default: nothing)")
    p.add_argument("--classifier", help="partial-image classifier: bundled name or directory")
    p.add_argument("--costs", help="comma-separated cost per candidate (EIG per unit cost is maximised)")
    p.add_argument("--out", help="picture of the run (PNG); images default to design.png")


def _run_design(args: argparse.Namespace) -> None:
    from condvae.data.datasets import load_dataset
    from condvae.design import design, problem
    from condvae.design.figure import image_figure, table_figure, table_lines
    from condvae.evaluate import load_query_image
    from condvae.masks import make_mask
    from condvae.plotting import save_figure
    from condvae.store import from_pretrained

    if (args.image is None) == (args.row is None):
        raise CondVAEError("image: pass --image (image models) or --row (table models), one of them")
    out = check_output_file(args.out) if args.out else None
    vae = from_pretrained(args.model, device=args.device)
    image = len(vae.data_shape) == 3
    spec = args.image if image else args.row
    if image and args.row is not None:
        raise CondVAEError(f"row: {args.model!r} is an image model; pass --image")
    if not image and args.image is not None:
        raise CondVAEError(f"image: {args.model!r} is a table model; pass --row TABLE:split:index")
    costs = None
    if args.costs:
        try:
            costs = [float(c) for c in args.costs.split(",")]
        except ValueError:
            raise CondVAEError(f"costs: expected comma-separated numbers, got {args.costs!r}") from None
    setup = {"patch": args.patch, "classifier": args.classifier, "target": args.target, "costs": costs}
    prob = problem(vae, data_dir=args.data_dir, **{k: v for k, v in setup.items() if v is not None})
    x = load_query_image(vae, spec, args.data_dir)
    mask = make_mask(args.mask, vae.data_shape, args.seed)[None] if args.mask else None
    result = design(
        prob,
        x,
        steps=args.steps,
        strategy=args.strategy,
        mask=mask,
        completions=args.completions,
        seed=args.seed,
    )
    if image:
        label = None
        parts = spec.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            data = (
                load_dataset(parts[0], parts[1], args.data_dir)
                if parts[0] in ("mnist", "fashion_mnist")
                else None
            )
            label = int(data.labels[int(parts[2])]) if data is not None and data.labels is not None else None
        for t in range(result.steps):
            chosen = int(result.order[0, t])
            gain = float(result.gains[0, t, chosen])
            p = result.predictions["probs"][0, t + 1] if "probs" in result.predictions else None
            belief = f"; belief {int(p.argmax())} ({float(p.max()):.2f})" if p is not None else ""
            print(f"step {t + 1}: glimpse {result.candidates.names[chosen]} (EIG {gain:.3f} nats){belief}")
        path = save_figure(image_figure(result, 0, label), out or check_output_file("design.png"))
        print(f"wrote {path}")
        return
    truth = float(vae.from_model(x)[0, vae.column_names.index(prob.target)]) if prob.target else None  # type: ignore[operator, union-attr]
    print("\n".join(table_lines(result, 0, truth)))
    if out is not None:
        spec = vae.columns[vae.column_names.index(prob.target)] if prob.target else {}  # type: ignore[union-attr, operator]
        classes = [float(v) for v in spec.get("values", [])] or None
        print(f"wrote {save_figure(table_figure(result, 0, truth, classes), out)}")


def _add_models(sub: argparse._SubParsersAction) -> None:
    _command(sub, "models", "list the bundled pretrained models and their test scores", _run_models)


def _run_models(args: argparse.Namespace) -> None:
    from condvae.store import describe

    print(describe())


def _add_condition_dataset(sub: argparse._SubParsersAction) -> None:
    text = "condition every item of a dataset split into shards a rerun completes (torchrun: across ranks)"
    p = _command(
        sub,
        "condition-dataset",
        text,
        _run_condition_dataset,
        "--device",
        "--data-dir",
        "--seed",
        "--no-progress",
    )
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--dataset", required=True, help="name:split, e.g. mnist:test")
    p.add_argument(
        "--mask", required=True, help="mask spec (top, box:..., random:0.1, freeform, ...; see condvae.masks)"
    )
    p.add_argument("--method", default="auto", help="a conditioning method")
    p.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a method option (repeat)"
    )
    p.add_argument(
        "--completions", type=_number(int), default=4, help="completions per query (decoder means)"
    )
    p.add_argument("--samples", type=_number(int), default=16, help="latent draws per query")
    p.add_argument("--chunk", type=_number(int), default=64, help="queries per shard")
    p.add_argument("--limit", type=_number(int), default=None, help="only the first this many items")
    p.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        default="float32",
        help="decoder arithmetic (bfloat16: for CUDA)",
    )
    p.add_argument("--out", required=True, help="output folder (a rerun into it completes it)")


def _option_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CondVAEError(f"option: expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word: a string option


def _run_condition_dataset(args: argparse.Namespace) -> None:
    from condvae.sharded import Settings, condition_dataset, read_results

    names = (
        "model",
        "dataset",
        "mask",
        "method",
        "seed",
        "completions",
        "samples",
        "chunk",
        "limit",
        "precision",
    )
    settings = Settings(**_pick(args, *names), options=dict(_option_value(o) for o in args.option))
    out = condition_dataset(
        settings, args.out, data_dir=args.data_dir, device=args.device, progress=not args.no_progress
    )
    from condvae import distributed

    if distributed.is_main():
        results = read_results(out)
        line = f"{len(results['index'])} queries conditioned into {out}"
        if "c_elbo" in results:
            line += f"; mean C-ELBO {float(results['c_elbo'].mean()):.2f} nats"
        print(line)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    text = "start the browser app and its JSON API (a local server: the page at /, the API at /docs)"
    p = _command(sub, "serve", text, _run_serve, "--data-dir", "--device")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (another than loopback is said)"
    )
    p.add_argument("--port", type=_number(int), default=8000, help="TCP port")
    p.add_argument(
        "--models", default="", help="comma-separated bundled model names a client may use (default all)"
    )
    p.add_argument(
        "--workers", type=_number(int), default=1, help="iterative fits (gvi, hmc, ...) that run at once"
    )
    p.add_argument("--fast-workers", type=_number(int), default=1, help="one-pass answers (ipa, ...) at once")
    p.add_argument("--queue", type=_number(int), default=16, help="jobs queued or running, beyond which 503")
    p.add_argument("--time-limit", type=_number(float), default=120.0, help="seconds a fit may run")
    p.add_argument("--max-body", default="4MB", help="largest request body (bytes; K/M suffixes)")
    p.add_argument("--no-preload", action="store_true", help="load each model on first use, not at start")


def _run_serve(args: argparse.Namespace) -> None:
    import socket

    from condvae.app import ServeConfig
    from condvae.app.server import serve

    if not 0 < args.port < 65536:
        raise CondVAEError(f"port: expected 1..65535, got {args.port}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family) as probe:  # a port in use is one line now, not a uvicorn trace later
        try:
            probe.bind((args.host, args.port))
        except socket.gaierror as err:
            raise CondVAEError(
                f"host: {args.host!r} is not an address of this machine ({err.strerror})"
            ) from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise CondVAEError(f"host: {args.host!r} is not an address of this machine") from None
            raise CondVAEError(f"port: cannot listen on {args.host}:{args.port} ({err.strerror})") from None
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    config = ServeConfig(
        models=models,
        workers=args.workers,
        fast_workers=args.fast_workers,
        queue=args.queue,
        time_limit=args.time_limit,
        max_body_bytes=parse_bytes(args.max_body, "max-body"),
        data_dir=args.data_dir,
        device=str(args.device),
        preload=not args.no_preload,
    )
    serve(config, args.host, args.port)


def _add_download(sub: argparse._SubParsersAction) -> None:
    text = "download MNIST / Fashion-MNIST (needs the internet)"
    p = _command(sub, "download", text, _run_download, "--data-dir")
    p.add_argument("dataset", choices=["mnist", "fashion_mnist"])


def _run_download(args: argparse.Namespace) -> None:
    from condvae.data.download import download

    print(f"downloaded to {download(args.dataset, args.data_dir)}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="condvae",
        description="Condition a pretrained VAE on any evidence and complete the rest; "
        "mistakes are reported as one line naming the argument, exit status 2.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_evaluate,
        _add_demo,
        _add_inpaint,
        _add_train_partial,
        _add_pyramid,
        _add_models,
        _add_download,
        _add_impute,
        _add_design,
        _add_serve,
        _add_condition_dataset,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        memory_limit()  # a malformed $CONDVAE_MEMORY_LIMIT is refused before any work
        args.run(args)
    except CondVAEError as exc:
        print(f"condvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("condvae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
