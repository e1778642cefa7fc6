"""How each bundled model is trained and evaluated: the single source of the zoo's commands.

``train_zoo.py`` runs these recipes; each model card quotes the same command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The bundled tables (condvae.data.tables.TABLES) and what their target is.
TABLES = {
    "breast_cancer": "569 rows, 30 features, class target",
    "diabetes": "442 rows, 10 features, continuous target",
    "wine": "178 rows, 13 features, 3 classes",
}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    train_args: list[str]
    eval_k: int = 5000
    eval_limit: int | None = None  # None: the whole test split
    quick_args: list[str] = field(default_factory=lambda: ["--epochs", "3"])

    def train_command(self, out: str) -> str:
        return " ".join(["python -m condvae train", *self.train_args, "--out", out])

    def eval_command(self, model: str) -> str:
        limit = f" --limit {self.eval_limit}" if self.eval_limit else ""
        return f"python -m condvae evaluate --model {model} --k {self.eval_k}{limit}"


# Shared by every recipe: Adam from 1e-3 with a cosine decay to 5e-5, seed 0.
OPTIM = "--lr 1e-3 --lr-min 5e-5 --seed 0"

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="mnist-mlp-z2",
            description=(
                "MNIST, fully connected, 2-d latent, one hidden layer of 256 units, "
                "Bernoulli likelihood on dynamically binarised digits. "
                "Its 2-d latent has an exact grid posterior: the ground truth for conditioning."
            ),
            train_args=(
                "--dataset mnist --arch mlp --latent-dim 2 --hidden 256 --likelihood bernoulli "
                f"--epochs 100 --batch-size 128 {OPTIM} --checkpoint-every 2000"
            ).split(),
        ),
        Recipe(
            name="mnist-mlp-z50",
            description=(
                "MNIST, fully connected 784-512-512-50, Bernoulli likelihood on dynamically "
                "binarised digits, KL warm-up over the first 10000 steps."
            ),
            train_args=(
                "--dataset mnist --arch mlp --latent-dim 50 --hidden 512,512 --likelihood bernoulli "
                f"--epochs 400 --batch-size 128 {OPTIM} --kl-warmup 10000 --checkpoint-every 2000"
            ).split(),
        ),
        Recipe(
            name="fashion-conv-z32",
            description=(
                "Fashion-MNIST, convolutional (2 stride-2 conv layers 32-64, 256 hidden), "
                "discretised-logistic likelihood on the 256 grey levels."
            ),
            train_args=(
                "--dataset fashion_mnist --arch conv --latent-dim 32 --channels 32,64 --hidden 256 "
                f"--likelihood logistic --epochs 30 --batch-size 128 {OPTIM} --kl-warmup 2000 "
                "--checkpoint-every 1000"
            ).split(),
            eval_k=1000,
            eval_limit=2000,
            quick_args=["--epochs", "1"],
        ),
        Recipe(
            name="mnist-hier-z28",
            description=(
                "MNIST, top-down hierarchical VAE with 3 latent groups (4, 8, 16; each conditioned "
                "on the groups above through a 256-wide decoder state), MLP 784-512-256 bottom-up, "
                "Bernoulli likelihood on dynamically binarised digits, KL warm-up."
            ),
            train_args=(
                "--dataset mnist --arch hierarchical --groups 4,8,16 --hidden 512,256 --state 256 "
                f"--likelihood bernoulli --epochs 60 --batch-size 128 {OPTIM} --kl-warmup 10000 "
                "--checkpoint-every 2000"
            ).split(),
            eval_k=1000,
            eval_limit=2000,
            quick_args=["--epochs", "2"],
        ),
        Recipe(
            name="fashion-hier-z28",
            description=(
                "Fashion-MNIST, top-down hierarchical VAE with 3 latent groups (4, 8, 16) over a "
                "256-wide decoder state, MLP 784-512-256, discretised-logistic likelihood on the "
                "256 grey levels, KL warm-up."
            ),
            train_args=(
                "--dataset fashion_mnist --arch hierarchical --groups 4,8,16 --hidden 512,256 "
                f"--state 256 --likelihood logistic --epochs 40 --batch-size 128 {OPTIM} "
                "--kl-warmup 5000 --checkpoint-every 2000"
            ).split(),
            eval_k=1000,
            eval_limit=2000,
            quick_args=["--epochs", "1"],
        ),
        Recipe(
            name="frey-conv-z10",
            description=(
                "Frey faces (28x20), convolutional (32-64, 256 hidden), Gaussian likelihood with "
                "a learned per-pixel scale on pixels scaled to [0, 1] (densities, so the NLL in "
                "nats can be negative)."
            ),
            train_args=(
                "--dataset frey --arch conv --latent-dim 10 --channels 32,64 --hidden 256 "
                f"--likelihood gaussian --epochs 300 --batch-size 64 {OPTIM} --checkpoint-every 1000"
            ).split(),
            quick_args=["--epochs", "20"],
        ),
        Recipe(
            name="olivetti-conv-z160",
            description=(
                "Olivetti faces 64x64, convolutional (4 stride-2 conv layers 16-32-64-128, 192 "
                "hidden), Gaussian likelihood with a learned per-pixel scale, flips and shifts of up "
                "to 2 px: the plain-VAE baseline of the bundled olivetti-pyramid (about its number "
                "of parameters, the same data and augmentation, its 300 epochs in one model)."
            ),
            train_args=(
                "--dataset olivetti --arch conv --latent-dim 160 --channels 16,32,64,128 --hidden 192 "
                f"--likelihood gaussian --augment --epochs 300 --batch-size 32 {OPTIM} "
                "--checkpoint-every 1000"
            ).split(),
            eval_k=1000,
            quick_args=["--epochs", "20"],
        ),
        *(
            Recipe(
                name=f"{table.replace('_', '-')}-tab-z4",
                description=(
                    f"The {table} table (scikit-learn's copy, {what}) with its target as a last "
                    "column, fixed seeded 70/15/15 split: a tabular VAE 4-d latent, MLP 64-64, "
                    "per-column likelihoods (Gaussian with a learned scale on standardised "
                    "continuous columns, Bernoulli for two-valued, categorical for class codes), "
                    "trained on the MIWAE bound (K = 10) with early stopping on the valid split. "
                    "The baseline beside its scores is independent per-column distributions "
                    "fitted on the training rows."
                ),
                train_args=(
                    f"--dataset {table}+target --arch tabular --latent-dim 4 --hidden 64,64 "
                    f"--epochs 1000 --batch-size 64 --patience 30 {OPTIM} --checkpoint-every 1000"
                ).split(),
                quick_args=["--epochs", "20"],
            )
            for table, what in TABLES.items()
        ),
    ]
}
