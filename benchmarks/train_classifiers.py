"""Train and publish the small classifiers behind the Fréchet distance (condvae.classifier).

python benchmarks/train_classifiers.py              # mnist and fashion_mnist, 5 epochs each
"""

from __future__ import annotations

import argparse
import sys

from common import machine

from condvae.classifier import CLASSIFIERS_DIR, save_classifier, train_classifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    for name in args.datasets:
        out = CLASSIFIERS_DIR / f"{name}-cnn"
        model = train_classifier(name, out, epochs=args.epochs, data_dir=args.data_dir, progress=False)
        model.card["command"] = (
            f"python benchmarks/train_classifiers.py --datasets {name} --epochs {args.epochs}"
        )
        model.card["machine"] = machine()
        save_classifier(model, out)
        print(name, model.card["metrics"], model.card["training"]["training_seconds"], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
