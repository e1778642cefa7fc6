"""Command line: ``condvae train | evaluate | inpaint | demo | pyramid | models | download``.

Each subcommand mirrors a Python function. Mistakes in the arguments or the input are reported
as one line, ``condvae: error: <argument>: <what was expected>``, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from condvae.errors import CondVAEError


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


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE (resumable)")
    p.add_argument("--dataset", required=True, help="mnist | fashion_mnist | frey | olivetti | folder:PATH")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log, model/)")
    p.add_argument("--arch", default="mlp", choices=["mlp", "conv", "hierarchical", "linear_gaussian"])
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument(
        "--groups",
        type=_int_list,
        default=None,
        help="hierarchical: latent group sizes, top first, e.g. 4,8,16",
    )
    p.add_argument("--state", type=int, default=None, help="hierarchical: width of the top-down state")
    p.add_argument("--hidden", type=_int_list, default=None, help="MLP widths, e.g. 512,512; conv: one width")
    p.add_argument("--channels", type=_int_list, default=None, help="conv channels, e.g. 32,64")
    p.add_argument("--likelihood", default=None, choices=["bernoulli", "gaussian", "logistic"])
    p.add_argument("--activation", default=None, choices=["relu", "tanh", "elu"])
    p.add_argument("--image-size", type=_size, default=None, help="HxW for folder datasets")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=1e-4)
    p.add_argument("--kl-warmup", type=int, default=0, help="steps of linear KL annealing")
    p.add_argument(
        "--augment", action="store_true", help="random flips and shifts of up to 2 px (small sets)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument(
        "--valid-every", type=int, default=None, help="steps between validations (default: 1 epoch)"
    )
    p.add_argument("--patience", type=int, default=0, help="validations without improvement before stopping")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


LOOP_SETTINGS = (
    "dataset",
    "out",
    "data_dir",
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "augment",
    "seed",
    "checkpoint_every",
    "limit_train",
    "device",
)


def _loop_settings(args: argparse.Namespace) -> dict[str, object]:
    """The options ``train`` and ``pyramid train`` share, by their config field names."""
    return {name: getattr(args, name) for name in LOOP_SETTINGS}


def _run_train(args: argparse.Namespace) -> None:
    from condvae.train import TrainConfig, train

    model: dict[str, object] = {"architecture": args.arch, "latent_dim": args.latent_dim}
    if args.likelihood:
        model["likelihood"] = args.likelihood
    if args.arch == "hierarchical":
        del model["latent_dim"]  # the sum of the groups
        for key in ("groups", "hidden", "state", "activation"):
            if getattr(args, key):
                model[key] = getattr(args, key)
    elif args.arch == "mlp":
        if args.hidden:
            model["hidden"] = args.hidden
        if args.activation:
            model["activation"] = args.activation
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
    cfg = TrainConfig(
        model=model,
        max_steps=args.max_steps,
        lr_min=args.lr_min,
        kl_warmup_steps=args.kl_warmup,
        valid_every=args.valid_every,
        patience=args.patience,
        **_loop_settings(args),
    )
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    best = "n/a" if result.best_valid_elbo is None else f"{result.best_valid_elbo:.3f}"
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s; best valid ELBO {best}; "
        f"model saved to {result.out / 'model'}"
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="test ELBO and importance-weighted NLL")
    p.add_argument("--model", required=True, help="bundled model name or pretrained directory")
    p.add_argument("--dataset", default=None, help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--k", type=int, default=5000, help="importance samples per image")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch")
    p.add_argument("--chunk", type=int, default=None, help="importance samples per decoder call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--no-progress", action="store_true")


def _run_evaluate(args: argparse.Namespace) -> None:
    from condvae.evaluate import evaluate_dataset
    from condvae.zoo import load

    model = load(args.model, device=args.device)
    scores = evaluate_dataset(
        model,
        dataset=args.dataset,
        split=args.split,
        k=args.k,
        limit=args.limit,
        batch_size=args.batch_size,
        chunk=args.chunk,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(scores))
    else:
        for key, value in scores.items():
            print(f"{key}: {value}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="inpaint test images with a bundled model; writes a PNG")
    p.add_argument("--model", default="mnist-mlp-z50")
    p.add_argument("--out", default="demo.png")
    p.add_argument("--n", type=int, default=4, help="test images to complete")
    p.add_argument("--mask", default="top-half", help="evidence, as for inpaint (e.g. random:0.1)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def _run_demo(args: argparse.Namespace) -> None:
    from condvae.demo import run_demo

    run_demo(
        args.model,
        out=args.out,
        n=args.n,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
    )


def _add_inpaint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="complete an image from partial evidence; prints metrics")
    p.add_argument("--model", required=True, help="bundled model name or pretrained directory")
    p.add_argument("--image", required=True, help="a PNG/JPEG of the model's size, or dataset:split:index")
    p.add_argument(
        "--mask",
        default="random:0.1",
        help="random:P | box:r0,c0,r1,c1 | band:r0,r1 | top-half | quadrant:tl | freeform | ~SPEC | PNG",
    )
    p.add_argument("--method", default="gvi,planar", help="comma-separated methods")
    p.add_argument("--samples", type=int, default=8, help="completions to draw per method")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps of the cross-coders")
    p.add_argument(
        "--encoder",
        default=None,
        help="ipa/semi: partial encoder name or directory (default: the bundled one)",
    )
    p.add_argument("--out", default="inpaint.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")


def _run_inpaint(args: argparse.Namespace) -> None:
    from condvae.conditioning import METHODS
    from condvae.conditioning.variational import FlowPosterior
    from condvae.inpaint import format_rows, inpaint
    from condvae.zoo import load

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if args.samples < 1:
        raise CondVAEError(f"samples: expected a positive integer, got {args.samples}")
    options: dict[str, dict[str, object]] = {}
    if args.steps is not None:
        options = {
            m: {"steps": args.steps}
            for m in methods
            if m in METHODS and issubclass(METHODS[m], FlowPosterior)
        }
    if args.encoder is not None:
        for m in ("ipa", "semi"):
            options.setdefault(m, {})["encoder"] = args.encoder
    model = load(args.model, device=args.device)
    rows = inpaint(
        model,
        args.image,
        args.mask,
        methods,
        samples=args.samples,
        out=args.out,
        seed=args.seed,
        data_dir=args.data_dir,
        options=options,
    )
    print(format_rows(rows))
    print(f"wrote {args.out}")


def _add_train_partial(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-partial-encoder", help="train an amortized partial encoder r(z | x_o, m) for a VAE (resumable)"
    )
    p.add_argument("--model", required=True, help="the frozen VAE: bundled name or pretrained directory")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log, encoder/)")
    p.add_argument(
        "--objective",
        default="forward",
        choices=["forward", "reverse"],
        help="forward = IPA, reverse = IPA-R",
    )
    p.add_argument("--dataset", default=None, help="default: the dataset named in the VAE's card")
    p.add_argument("--masks", default="mixture", help="mask family: mixture | random | box | freeform | ...")
    p.add_argument("--covariance", default="diagonal", choices=["diagonal", "full"])
    p.add_argument("--hidden", type=_int_list, default=None, help="widths of a fresh MLP body")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=1, help="reverse: z draws per item")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--valid-every", type=int, default=1000)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _run_train_partial(args: argparse.Namespace) -> None:
    from condvae.partial.train import PartialTrainConfig, train_partial_encoder

    cfg = PartialTrainConfig(
        vae=args.model,
        out=args.out,
        objective=args.objective,
        dataset=args.dataset,
        data_dir=args.data_dir,
        masks=args.masks,
        covariance=args.covariance,
        hidden=args.hidden,
        steps=args.steps,
        batch_size=args.batch_size,
        samples=args.samples,
        lr=args.lr,
        lr_min=args.lr_min,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        valid_every=args.valid_every,
        limit_train=args.limit_train,
        device=args.device,
    )
    result = train_partial_encoder(cfg, resume=args.resume, progress=not args.no_progress)
    best = "n/a" if result.best_valid is None else f"{result.best_valid:.3f}"
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s; best valid loss {best}; "
        f"encoder saved to {result.out / 'encoder'}"
    )


def _add_pyramid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pyramid", help="Laplacian pyramid VAEs: train, sample, edit a painted coarse image")
    actions = p.add_subparsers(dest="action", required=True)
    t = actions.add_parser("train", help="train a pyramid greedily, coarse to fine (resumable)")
    t.add_argument("--dataset", required=True, help="olivetti | fashion_mnist | mnist | frey | folder:PATH")
    t.add_argument("--out", required=True, help="output folder (checkpoints, log, model/)")
    t.add_argument("--levels", type=int, default=2, help="finer levels below the coarse image")
    t.add_argument("--latent-dims", type=_int_list, default=None, help="one per finer level, coarse to fine")
    t.add_argument(
        "--coarse", default=None, help='the coarse VAE\'s config as JSON, e.g. \'{"architecture": "conv"}\''
    )
    t.add_argument("--channels", type=_int_list, default=None, help="conv widths of the finer levels")
    t.add_argument("--hidden", type=int, default=None, help="width of the finer levels' linear layers")
    t.add_argument("--kl-weights", default=None, help="lambda per level, coarse first, e.g. 1,1,1")
    t.add_argument("--condition", default="reconstruction", choices=["reconstruction", "truth"])
    t.add_argument("--latent", default="vector", choices=["vector", "map"], help="finer levels' latents")
    t.add_argument("--epochs", type=int, default=50, help="epochs per level")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--augment", action="store_true", help="random flips and shifts (small sets)")
    t.add_argument("--image-size", type=_size, default=None, help="HxW for folder datasets")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--limit-train", type=int, default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default="cpu")
    t.add_argument("--no-progress", action="store_true")
    for name, text in (
        ("sample", "samples, or partial samples keeping an image's coarse levels"),
        ("edit", "fine detail for a painted coarse image (PNG)"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("--model", required=True, help="bundled pyramid name or pretrained directory")
        if name == "sample":
            a.add_argument("--image", default=None, help="PNG of the model's size, or dataset:split:index")
            a.add_argument("--keep", type=_int_list, default=[1], help="coarse entries to fix, e.g. 1,2")
        else:
            a.add_argument("--painting", required=True, help="PNG of the coarse size (or a finer level's)")
        a.add_argument("--n", type=int, default=8, help="samples per row")
        a.add_argument("--draws", action="store_true", help="sample pixels too, not decoder means")
        a.add_argument(
            "--temperature", type=float, default=1.0, help="latent spread: 1 = the model, < 1 cleaner detail"
        )
        a.add_argument("--out", default=f"pyramid-{name}.png")
        a.add_argument("--seed", type=int, default=0)
        a.add_argument("--data-dir", default=None)
        a.add_argument("--device", default="cpu")


def _run_pyramid(args: argparse.Namespace) -> None:
    if args.action == "train":
        _run_pyramid_train(args)
        return
    from condvae.pyramid.edit import edit_figure, sample_figure
    from condvae.pyramid.pretrained import load_pyramid

    if args.n < 1:
        raise CondVAEError(f"n: expected a positive number of samples, got {args.n}")
    model = load_pyramid(args.model, device=args.device)
    if args.action == "sample":
        if args.image is None and args.keep != [1]:
            raise CondVAEError("keep: fixing levels needs an --image to take them from")
        path = sample_figure(
            model,
            args.out,
            args.n,
            args.image,
            args.keep,
            args.seed,
            not args.draws,
            args.data_dir,
            args.temperature,
        )
    else:
        path = edit_figure(
            model, args.painting, args.out, args.n, args.seed, not args.draws, args.temperature
        )
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
    for key, value in (
        ("latent_dims", args.latent_dims),
        ("channels", args.channels),
        ("hidden", args.hidden),
    ):
        if value is not None:
            model[key] = value
    if args.kl_weights:
        try:
            model["kl_weights"] = [float(v) for v in args.kl_weights.split(",")]
        except ValueError:
            raise CondVAEError(
                f"kl-weights: expected comma-separated numbers, got {args.kl_weights!r}"
            ) from None
    cfg = PyramidTrainConfig(model=model, **_loop_settings(args))
    result = train_pyramid(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"trained in {result.card['training']['training_seconds']} s; model saved to {args.out}/model")


def _add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the bundled pretrained models and their test scores")


def _run_models(args: argparse.Namespace) -> None:
    from condvae.partial.pretrained import describe_bundled_encoders
    from condvae.pyramid.pretrained import describe_bundled_pyramids
    from condvae.zoo import describe_bundled

    print(describe_bundled())
    print("\npartial encoders (method='ipa', encoder=NAME):")
    print(describe_bundled_encoders())
    print("\nLaplacian pyramids (condvae pyramid sample|edit --model NAME):")
    print(describe_bundled_pyramids())


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download MNIST / Fashion-MNIST (needs the internet)")
    p.add_argument("dataset", choices=["mnist", "fashion_mnist"])
    p.add_argument("--data-dir", default=None, help="default: the condvae cache folder")


def _run_download(args: argparse.Namespace) -> None:
    from condvae.data.download import download

    print(f"downloaded to {download(args.dataset, args.data_dir)}")


COMMANDS = {
    "train": (_add_train, _run_train),
    "evaluate": (_add_evaluate, _run_evaluate),
    "demo": (_add_demo, _run_demo),
    "inpaint": (_add_inpaint, _run_inpaint),
    "train-partial-encoder": (_add_train_partial, _run_train_partial),
    "pyramid": (_add_pyramid, _run_pyramid),
    "models": (_add_models, _run_models),
    "download": (_add_download, _run_download),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command][1](args)
    except CondVAEError as exc:
        print(f"condvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("condvae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
