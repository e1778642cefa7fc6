"""Your own VAE: lend a plain PyTorch decoder (and optionally encoder) the model protocol.

Every conditioning method needs only the prior p(z) = N(0, I), the per-dimension decoder
likelihood p(x_d | z) and, for some methods, an encoder q(z | x) (Kingma & Welling,
"Auto-Encoding Variational Bayes", 2014). :func:`wrap` supplies the protocol around a user's
``nn.Module`` or callable, converting the common output conventions (Bernoulli probabilities,
(mu, log-variance) encoders) and checking the contract once, at wrap time, so that a
convention mistake is refused in one line instead of giving silently wrong numbers.

A wrapped model is saved *by reference* to the user's code, never pickled: ``config.json``
records an importable ``"package.module:factory"`` (a callable returning the user's module),
its JSON keyword arguments and which attributes are the decoder and encoder;
``model.safetensors`` holds the module's ``state_dict``. Loading imports that factory like any
``import`` statement would (only modules on ``sys.path``; nothing in the model's directory is
ever executed) and loads the weights into what it returns.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from condvae.errors import CondVAEError
from condvae.models.base import VAE, diagonal_normal
from condvae.models.source import build_source, first_line, import_factory, locate, owner_of, resolve_path
from condvae.streams import seeded

# What a decoder may return, per likelihood (and "distribution": a torch Distribution).
DECODER_OUTPUTS: dict[str, tuple[str, ...]] = {
    "bernoulli": ("logits", "probs", "distribution"),
    "gaussian": ("mean", "distribution"),
}
OTHER_DECODER_OUTPUTS = ("raw", "distribution")  # the likelihood head's own raw parameters
ENCODER_OUTPUTS = ("loc_scale", "mu_logvar", "loc_logscale", "distribution")
ENCODER_INPUTS = ("shaped", "flat")
PROBS_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit: log p >= -13.8
PROBE_SIZE = 4  # prior draws z used to check the contract at wrap time
LARGE_SCALE = 3.0  # an encoder scale above this (the prior's is 1) is more likely a log-variance


def decoder_outputs(likelihood: str) -> tuple[str, ...]:
    """The ``decoder_output`` names accepted for ``likelihood`` (the first is the default)."""
    return DECODER_OUTPUTS.get(likelihood, OTHER_DECODER_OUTPUTS)


def _shape(t: torch.Size | Sequence[int]) -> str:
    return f"[{', '.join(map(str, t))}]"


class WrappedVAE(VAE):
    """A user's decoder (and optional encoder) with the model protocol; built by :func:`wrap`.

    Constructed from its ``config()`` (``build_model``), it imports ``source`` and builds the
    user's module with ``source_kwargs``; ``decoder`` and ``encoder`` are attribute paths inside
    it ("" is the module itself, "decode" its method). :func:`wrap` is the user-facing entry.
    """

    architecture = "wrapped"

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        likelihood: str = "bernoulli",
        *,
        decoder: str | None = "",
        encoder: str | None = None,
        decoder_output: str | None = None,
        encoder_output: str | None = None,
        encoder_input: str = "shaped",
        scale: float = 0.1,
        source: str | None = None,
        source_kwargs: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        functions: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(tuple(data_shape), latent_dim, likelihood)
        allowed = decoder_outputs(likelihood)
        if decoder_output is not None and decoder_output not in allowed:
            raise CondVAEError(
                f"decoder_output: {decoder_output!r} does not fit a {likelihood} likelihood; "
                f"expected one of {list(allowed)}"
            )
        if encoder_output is not None and encoder_output not in ENCODER_OUTPUTS:
            raise CondVAEError(
                f"encoder_output: expected one of {list(ENCODER_OUTPUTS)}, got {encoder_output!r}"
            )
        if encoder_input not in ENCODER_INPUTS:
            raise CondVAEError(
                f"encoder_input: expected one of {list(ENCODER_INPUTS)}, got {encoder_input!r}"
            )
        if source_kwargs is not None:
            try:
                source_kwargs = json.loads(json.dumps(source_kwargs))
            except (TypeError, ValueError) as exc:
                raise CondVAEError(f"source_kwargs: expected JSON-able keyword arguments ({exc})") from None
            if not isinstance(source_kwargs, dict):
                raise CondVAEError(f"source_kwargs: expected a dict, got {type(source_kwargs).__name__}")
        if source is not None:
            import_factory(source)  # a malformed or unimportable source is refused now, not at save
        if model is None and source is not None and not functions:
            model = build_source(source, source_kwargs)
        self.model = model  # registered: its weights are this VAE's state_dict under "model."
        self.functions = dict(functions or {})  # plain callables (no module): not saveable
        self.decoder_path, self.encoder_path = decoder, encoder
        self.decoder_output, self.encoder_output = decoder_output, encoder_output
        self.encoder_input, self.scale = encoder_input, float(scale)
        self.source, self.source_kwargs = source, source_kwargs
        self.synthetic_root = False  # set by wrap when decoder and encoder live in two modules
        if self.decoder_path is None and "decoder" not in self.functions:
            raise CondVAEError("decoder: expected a callable, got None")
        if self.model is not None:
            for which, path in (("decoder", decoder), ("encoder", encoder)):
                if path is not None and not callable(_safe_resolve(self.model, path)):
                    raise CondVAEError(f"{which}: {path!r} is not a callable attribute of the source module")
        if likelihood == "gaussian":
            if not scale > 0:
                raise CondVAEError(f"scale: expected a positive Gaussian noise scale, got {scale!r}")
            with torch.no_grad():
                self.likelihood.log_scale.fill_(math.log(scale))
            self.likelihood.min_scale = min(self.likelihood.min_scale, scale)  # type: ignore[assignment]

    # -- configuration ---------------------------------------------------------------------
    @property
    def has_encoder(self) -> bool:
        return self.encoder_path is not None or "encoder" in self.functions

    def config(self) -> dict[str, Any]:
        """The reference to the user's code that rebuilds this model (``build_model``)."""
        if self.functions:
            which = sorted(self.functions)[0]
            raise CondVAEError(
                f"{which}: a plain function cannot be saved by reference; pass a method or submodule "
                "of the module your source factory returns (e.g. model.decode)"
            )
        if self.synthetic_root:
            raise CondVAEError(
                "model: the decoder and encoder belong to two different modules; pass model=<the "
                "module your source factory returns> to condvae.wrap"
            )
        if self.source is None:
            raise CondVAEError(
                "source: a wrapped model is saved by reference to your code, never pickled; pass "
                "source='package.module:factory' (an importable callable returning your nn.Module) "
                "to condvae.wrap"
            )
        return {
            "architecture": self.architecture,
            "source": self.source,
            "source_kwargs": self.source_kwargs or {},
            "decoder": self.decoder_path,
            "encoder": self.encoder_path,
            "decoder_output": self.decoder_output,
            "encoder_output": self.encoder_output,
            "encoder_input": self.encoder_input,
            "latent_dim": self.latent_dim,
            "data_shape": list(self.data_shape),
            "likelihood": self.likelihood.name,
            "scale": self.scale,
        }

    def verify_source(self) -> None:
        """Refuse (one line) a source that does not rebuild a module with these weights' names
        and shapes: what ``save_pretrained`` checks before writing anything."""
        config = self.config()
        assert self.model is not None
        rebuilt = build_source(config["source"], config["source_kwargs"])
        mine = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        if mine != theirs:
            missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            shapes = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
            raise CondVAEError(
                f"source: {self.source}(**{config['source_kwargs']}) builds a module that does not "
                f"match the wrapped one (missing {missing[:3]}, unexpected {extra[:3]}, other shapes "
                f"{shapes[:3]}); "
                "pass the factory and source_kwargs that build your model"
            )
        for which, path in (("decoder", self.decoder_path), ("encoder", self.encoder_path)):
            if path is not None and not callable(_safe_resolve(rebuilt, path)):
                raise CondVAEError(
                    f"{which}: {path!r} is not a callable attribute of what {self.source} builds"
                )

    # -- calling the user's code -------------------------------------------------------------
    def _call(self, which: str, value: torch.Tensor) -> Any:
        if which in self.functions:
            return self.functions[which](value)
        return resolve_path(self.model, self.decoder_path if which == "decoder" else self.encoder_path)(value)  # type: ignore[arg-type]

    def _encoder_input(self, x: torch.Tensor, flat: bool) -> torch.Tensor:
        # contiguous: user encoders often call x.view(-1, D), which needs it
        x = x.reshape(-1, *self.data_shape)
        return (x.reshape(len(x), -1) if flat else x).contiguous()

    # -- the protocol ------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> Distribution:
        lead = z.shape[:-1]
        out = self._call("decoder", z.reshape(-1, self.latent_dim))
        if isinstance(out, Distribution):
            if tuple(out.batch_shape[1:]) != self.data_shape:
                raise CondVAEError(
                    f"decoder: returned a distribution with batch shape {list(out.batch_shape)}, "
                    f"expected [N, {', '.join(map(str, self.data_shape))}]"
                )
            # Reshape by re-indexing the leading axis: expand() and view() are not generic.
            return _LeadingReshape(out, lead)
        if not isinstance(out, torch.Tensor):
            raise CondVAEError(
                f"decoder: returned a {type(out).__name__}, expected a tensor [N, "
                f"{', '.join(map(str, self.data_shape))}] or a torch distribution"
            )
        expected = (self.likelihood.params_per_dim * self.data_shape[0], *self.data_shape[1:])
        if tuple(out.shape[1:]) != expected:
            if out.dim() >= 1 and math.prod(out.shape[1:]) == math.prod(expected):
                out = out.reshape(out.shape[0], *expected)
            else:
                raise CondVAEError(
                    f"decoder: returned shape {list(out.shape)}, expected "
                    f"[N, {', '.join(map(str, expected))}] for a {self.likelihood.name} likelihood"
                )
        if self.decoder_output == "probs":  # logit(p) with p clamped: finite for saturated sigmoids
            out = torch.logit(out, eps=PROBS_EPS)
        return self.likelihood(out.reshape(*lead, *expected))

    def encode(self, x: torch.Tensor) -> Distribution:
        if not self.has_encoder:
            raise CondVAEError(
                "encoder: this wrapped model has none; use a method that needs only the decoder "
                "(gvi, planar, spline, hmc, rejection, grid, or importance with proposal='prior')"
            )
        lead = x.shape[: x.dim() - len(self.data_shape)]
        out = self._call("encoder", self._encoder_input(x, self.encoder_input == "flat"))
        if isinstance(out, Distribution):
            if len(lead) != 1:
                raise CondVAEError(
                    f"x: an encoder returning a distribution takes [B, *data_shape], got {list(x.shape)}"
                )
            return out
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise CondVAEError(
                f"encoder: returned a {type(out).__name__}, expected two tensors ({self._pair()}) "
                "or a torch distribution"
            )
        loc, second = (t.reshape(*lead, self.latent_dim) for t in out)
        if self.encoder_output == "mu_logvar":
            scale = torch.exp(0.5 * second)
        elif self.encoder_output == "loc_logscale":
            scale = torch.exp(second)
        else:
            scale = second
        return diagonal_normal(loc, scale)

    def _pair(self) -> str:
        return {"mu_logvar": "mu, logvar", "loc_logscale": "loc, log_scale"}.get(
            self.encoder_output or "", "loc, scale"
        )

    # -- the contract, checked once ----------------------------------------------------------
    @torch.no_grad()
    def probe(self) -> None:
        """Check the contract on a few prior draws z (and, with an encoder, on samples decoded
        from them) in eval mode; refuse a mismatch in one line naming the argument, warn where
        a value is suspicious but may be legitimate. Fixes ``decoder_output`` and
        ``encoder_output`` when they were left to be detected."""
        with seeded(0, self.device):  # the probe leaves the user's RNG untouched
            z = torch.randn(PROBE_SIZE, self.latent_dim).to(self.device)
            first = self._probe_decoder(z)
            second = self._try("decoder", z)
            if not _same(first, second):
                raise CondVAEError(
                    "decoder: two calls on the same z gave different outputs in eval mode; it must be "
                    "a deterministic function of z (return the likelihood's parameters, not a sample; "
                    "no dropout or noise at eval time)"
                )
            x = self.decode(z).sample()
            if self.has_encoder:
                self._probe_encoder(x.to(z.dtype))

    def _check_first_layer(self, which: str) -> None:
        """After a failed decoder call, name the commonest cause plainly: a first layer whose
        input size is not ``latent_dim`` (rather than a matmul error from inside torch)."""
        if which != "decoder" or which in self.functions:
            return
        decoder = resolve_path(self.model, self.decoder_path)  # type: ignore[arg-type]
        if not isinstance(decoder, nn.Module):
            return
        first = next((m for m in decoder.modules() if isinstance(m, nn.Linear)), None)
        if first is not None and first.in_features != self.latent_dim:
            raise CondVAEError(
                f"latent_dim: the decoder's first layer takes {first.in_features} inputs, "
                f"latent_dim is {self.latent_dim}; pass latent_dim={first.in_features}"
            )

    def _try(self, which: str, value: torch.Tensor, flat: bool | None = None) -> Any:
        if which == "encoder":
            value = self._encoder_input(value, self.encoder_input == "flat" if flat is None else flat)
        try:
            return self._call(which, value)
        except CondVAEError:
            raise
        except Exception as exc:
            self._check_first_layer(which)
            raise CondVAEError(
                f"{which}: calling it on {_shape(value.shape)} {str(value.dtype).replace('torch.', '')} "
                f"input failed ({first_line(exc)})"
            ) from None

    def _probe_decoder(self, z: torch.Tensor) -> Any:
        out = self._try("decoder", z)
        if isinstance(out, Distribution):
            if self.decoder_output not in (None, "distribution"):
                raise CondVAEError(
                    f"decoder_output: {self.decoder_output!r} but the decoder returned a "
                    f"{type(out).__name__} distribution; pass decoder_output='distribution'"
                )
            self.decoder_output = "distribution"
            self.decode(z)  # the batch-shape check
            return out
        if self.decoder_output == "distribution":
            raise CondVAEError(
                f"decoder: decoder_output='distribution' but it returned a {type(out).__name__}"
            )
        self.decoder_output = self.decoder_output or decoder_outputs(self.likelihood.name)[0]
        if not isinstance(out, torch.Tensor):
            self.decode(z)  # raises the one-line type error
        if out.dtype != z.dtype:
            raise CondVAEError(
                f"decoder: returned dtype {str(out.dtype).replace('torch.', '')} for "
                f"{str(z.dtype).replace('torch.', '')} z; condvae runs in float32 "
                "(convert your module with .float())"
            )
        if out.shape[:1] != z.shape[:1]:
            raise CondVAEError(
                f"decoder: returned shape {list(out.shape)} for z of shape {list(z.shape)}; expected "
                f"[{len(z)}, {', '.join(map(str, self.data_shape))}] (one row per z)"
            )
        self.decode(z)  # the shape check
        if not torch.isfinite(out).all():
            raise CondVAEError("decoder: returned NaN or inf for prior draws z ~ N(0, I)")
        lo, hi = float(out.min()), float(out.max())
        if self.decoder_output == "logits" and 0 <= lo and hi <= 1 and lo < hi:
            raise CondVAEError(
                f"decoder: its outputs all lie in [0, 1] (min {lo:.3g}, max {hi:.3g}): probabilities, "
                "not Bernoulli logits; pass decoder_output='probs' (or return logits, e.g. drop the sigmoid)"
            )
        if self.decoder_output == "probs" and not (0 <= lo and hi <= 1):
            raise CondVAEError(
                f"decoder: decoder_output='probs' but it returned values outside [0, 1] "
                f"(min {lo:.3g}, max {hi:.3g}); for logits pass decoder_output='logits'"
            )
        return out

    def _probe_encoder(self, x: torch.Tensor) -> None:
        try:
            out = self._try("encoder", x)
        except CondVAEError as exc:
            if self.encoder_input == "flat":
                raise
            try:  # say so when it only wants flat input, as x.view(-1, D) encoders do
                self._try("encoder", x, flat=True)
            except CondVAEError:
                raise exc from None
            raise CondVAEError(
                f"{exc}; it works on flat x of shape [{len(x)}, {math.prod(self.data_shape)}]: "
                "pass encoder_input='flat'"
            ) from None
        n, d = len(x), self.latent_dim
        if isinstance(out, Distribution):
            if self.encoder_output not in (None, "distribution"):
                raise CondVAEError(
                    f"encoder_output: {self.encoder_output!r} but the encoder returned a "
                    f"{type(out).__name__} distribution; pass encoder_output='distribution'"
                )
            self.encoder_output = "distribution"
            if tuple(out.batch_shape) != (n,) or tuple(out.event_shape) != (d,):
                raise CondVAEError(
                    f"encoder: returned a distribution with batch shape {list(out.batch_shape)} and event "
                    f"shape {list(out.event_shape)}, expected [{n}] and [{d}] (use Independent(..., 1))"
                )
            return
        if self.encoder_output == "distribution":
            raise CondVAEError(
                f"encoder: encoder_output='distribution' but it returned a {type(out).__name__}"
            )
        self.encoder_output = self.encoder_output or "loc_scale"
        pair = self._pair()
        pair_of_tensors = isinstance(out, tuple | list) and len(out) == 2
        if not pair_of_tensors or not all(isinstance(t, torch.Tensor) for t in out):
            kind = f"{len(out)} values" if isinstance(out, tuple | list) else f"a {type(out).__name__}"
            raise CondVAEError(
                f"encoder: returned {kind}, expected two tensors ({pair}) or a torch distribution"
            )
        for name, t in zip(pair.split(", "), out, strict=True):
            if t.dtype != x.dtype:
                raise CondVAEError(
                    f"encoder: returned {name} of dtype {str(t.dtype).replace('torch.', '')} for "
                    f"{str(x.dtype).replace('torch.', '')} x; condvae runs in float32"
                )
            if t.dim() == 0 or t.shape[0] != n or t.numel() != n * d:
                raise CondVAEError(
                    f"encoder: returned {name} of shape {list(t.shape)}, expected [{n}, {d}] "
                    f"for latent_dim {d}"
                )
            if not torch.isfinite(t).all():
                raise CondVAEError(f"encoder: returned NaN or inf in {name}")
        second = out[1]
        lo, median = float(second.min()), float(second.median())
        if self.encoder_output == "loc_scale" and lo <= 0:
            raise CondVAEError(
                f"encoder: its second output has values <= 0 (min {lo:.3g}), so it is not a scale; "
                "for (mu, logvar) as in the PyTorch examples pass encoder_output='mu_logvar' "
                "(a log standard deviation: 'loc_logscale')"
            )
        if self.encoder_output == "loc_scale" and median > LARGE_SCALE:
            warnings.warn(
                f"encoder: its scales are large (median {median:.3g}; the prior's is 1); if the second "
                "output is a log-variance pass encoder_output='mu_logvar'",
                UserWarning,
                stacklevel=5,
            )
        if self.encoder_output in ("mu_logvar", "loc_logscale") and lo > 0:
            warnings.warn(
                f"encoder: every {pair.split(', ')[1]} is positive (min {lo:.3g}): q(z | x) wider than the "
                "prior N(0, I) in every direction; if the second output is a scale pass "
                "encoder_output='loc_scale'",
                UserWarning,
                stacklevel=5,
            )
        self.encode(x)  # the adapter itself on the checked outputs


def _safe_resolve(root: Any, path: str) -> Any:
    try:
        return resolve_path(root, path)
    except AttributeError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal decoder outputs (tensors, or the means of distributions where they have one)."""
    if isinstance(a, Distribution) and isinstance(b, Distribution):
        try:
            a, b = a.mean, b.mean
        except NotImplementedError:
            return True  # nothing comparable without sampling
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    return True


def wrap(
    decoder: nn.Module | Callable[[torch.Tensor], Any],
    latent_dim: int,
    data_shape: Sequence[int],
    likelihood: str = "bernoulli",
    *,
    encoder: nn.Module | Callable[[torch.Tensor], Any] | None = None,
    decoder_output: str | None = None,
    encoder_output: str | None = None,
    encoder_input: str = "shaped",
    scale: float = 0.1,
    model: nn.Module | None = None,
    source: str | None = None,
    source_kwargs: dict[str, Any] | None = None,
    check: bool = True,
) -> WrappedVAE:
    """Lend your own decoder (and encoder) the condvae model protocol; returns a ``VAE``.

    The model is ``p(z) p(x | z)`` with ``p(z) = N(0, I)`` and a likelihood that factorises over
    data dimensions, ``log p(x_o | z) = sum_{d observed} log p(x_d | z)`` (what makes conditioning
    on any subset possible), plus optionally an encoder ``q(z | x)`` (Kingma & Welling,
    "Auto-Encoding Variational Bayes", 2014). Example, the PyTorch-examples MNIST VAE::

        vae = condvae.wrap(model.decode, 20, (1, 28, 28), decoder_output="probs",
                           encoder=model.encode, encoder_input="flat", encoder_output="mu_logvar",
                           source="my_package.vae:VAE")

    Contract:
        decoder(z): ``z`` is ``[N, latent_dim]`` (float32, on your module's device); returns
            ``[N, *data_shape]`` (or any shape with as many numbers per row; ``[N, 2C, H, W]``
            for the discretised logistic) per ``decoder_output``, or a ``torch.distributions``
            object with batch shape ``[N, *data_shape]``. It must be deterministic in eval mode.
        encoder(x): ``x`` is ``[N, *data_shape]`` (``encoder_input="flat"``: ``[N, prod(data_shape)]``,
            contiguous); returns two ``[N, latent_dim]`` tensors per ``encoder_output``, or a
            distribution with batch shape ``[N]`` and event shape ``[latent_dim]``.

    Arguments:
        decoder: an ``nn.Module`` or any callable, bound methods included (``model.decode``).
        latent_dim: the size of z. data_shape: one item's shape, e.g. ``(1, 28, 28)`` or ``(D,)``.
        likelihood: "bernoulli" (binary data), "gaussian" (a learned per-dimension scale,
            initialised to ``scale``) or "logistic" (256-level discretised logistic).
        encoder: optional, as ``decoder``. Methods that need one: importance with the encoder
            proposal, IPA training with the forward objective, ``evaluate``.
        decoder_output: what the decoder's tensor is. Bernoulli: "logits" (default) or "probs"
            (probabilities, turned into logits after clamping to [1e-6, 1 - 1e-6]); Gaussian:
            "mean" (default); logistic: "raw" (means before the sigmoid and log-scales); any:
            "distribution". None: the default, or "distribution" if it returns one.
        encoder_output: "loc_scale" (default: a standard deviation), "mu_logvar" (a log-variance:
            scale = exp(logvar / 2)), "loc_logscale" (scale = exp(log_scale)) or "distribution".
        encoder_input: "shaped" (default) or "flat".
        scale: the initial Gaussian noise scale (Gaussian likelihood only).
        model: the whole module your ``source`` factory returns, when ``decoder`` and ``encoder``
            are two of its submodules (default: the module ``decoder`` is or belongs to).
        source: ``"package.module:factory"``, an importable callable that returns your module
            (a class is fine), needed by ``save_pretrained``: a wrapped model is saved by
            reference to your code (``config.json``) plus its weights (``model.safetensors``),
            never pickled. Loading it imports that module, as an ``import`` statement would.
        source_kwargs: JSON-able keyword arguments for the factory.
        check: probe the contract now (default). It runs your module in eval mode (and leaves it
            there: conditioning treats the VAE as frozen) on a few prior draws z under
            ``torch.no_grad``, without touching the global RNG, and refuses in one line: Bernoulli
            "logits" all in [0, 1] (probabilities), a scale that is not positive (a log-variance),
            wrong output shapes or dtypes, and a decoder that differs between two calls on the same
            z; it warns where a value is suspicious but may be legitimate (scales far above the
            prior's 1, log-variances all positive).
    """
    if decoder is None or not callable(decoder):
        raise CondVAEError(f"decoder: expected an nn.Module or a callable, got {type(decoder).__name__}")
    if encoder is not None and not callable(encoder):
        raise CondVAEError(f"encoder: expected an nn.Module or a callable, got {type(encoder).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise CondVAEError(
            f"model: expected the torch.nn.Module your factory returns, got {type(model).__name__}"
        )
    dec_owner, enc_owner = owner_of(decoder), owner_of(encoder) if encoder is not None else None
    synthetic = False
    if model is not None:
        root: nn.Module | None = model
    elif dec_owner is None and enc_owner is None:
        root = None  # plain functions only
    elif dec_owner is not None and (enc_owner is None or locate(encoder, dec_owner) is not None):
        root = dec_owner
    elif enc_owner is not None and (dec_owner is None or locate(decoder, enc_owner) is not None):
        root = enc_owner
    else:  # two unrelated modules: hold both (conditioning works; saving asks for model=)
        root, synthetic = nn.ModuleDict({"decoder": dec_owner, "encoder": enc_owner}), True
    paths: dict[str, str | None] = {"decoder": None, "encoder": None}
    functions: dict[str, Callable[..., Any]] = {}
    for which, part in (("decoder", decoder), ("encoder", encoder)):
        if part is None:
            continue
        path = locate(part, root)
        if path is None and synthetic:
            path = locate(part, root[which])  # type: ignore[index]
            path = which if not path else f"{which}.{path}"
        if path is None:
            if model is not None and owner_of(part) is not None:
                raise CondVAEError(f"{which}: not a submodule or method of the module passed as model=")
            functions[which] = part  # a plain callable: held as is
        else:
            paths[which] = path
    vae = WrappedVAE(
        latent_dim,
        data_shape,
        likelihood,
        decoder=paths["decoder"],
        encoder=paths["encoder"],
        decoder_output=decoder_output,
        encoder_output=encoder_output,
        encoder_input=encoder_input,
        scale=scale,
        source=source,
        source_kwargs=source_kwargs,
        model=root,
        functions=functions,
    )
    vae.synthetic_root = synthetic
    if root is not None:
        where = next(iter(root.parameters()), None)
        where = where if where is not None else next(iter(root.buffers()), None)
        if where is not None and where.is_floating_point():
            vae.to(where.device)  # the adapter's own tensors go where the user's module lives
    vae.eval()
    if check:
        vae.probe()
    return vae


class _LeadingReshape(Distribution):
    """A decoder distribution over [N, *data_shape] seen as [*lead, *data_shape]."""

    has_rsample = False

    def __init__(self, base: Distribution, lead: torch.Size) -> None:
        self.base, self.lead = base, tuple(lead)
        super().__init__(batch_shape=torch.Size((*self.lead, *base.batch_shape[1:])), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Broadcasts like any torch distribution: axes where the decoder's leading shape is 1
        and ``value``'s is not are moved in front, so the base sees its own N rows last."""
        tail = tuple(self.base.batch_shape[1:])
        value_lead = tuple(value.shape[: value.dim() - len(tail)])
        full = torch.broadcast_shapes(self.lead, value_lead)
        lead = (1,) * (len(full) - len(self.lead)) + self.lead
        extra = [i for i, (a, s) in enumerate(zip(lead, full, strict=True)) if a == 1 and s > 1]
        own = [i for i in range(len(full)) if i not in extra]
        value = value.expand(*full, *tail).permute(*extra, *own, *range(len(full), len(full) + len(tail)))
        flat = value.reshape(*[full[i] for i in extra], -1, *tail)
        out = self.base.log_prob(flat).reshape(*[full[i] for i in extra], *[full[i] for i in own], *tail)
        order = [*extra, *own]
        inverse = [order.index(i) for i in range(len(full))]
        return out.permute(*inverse, *range(len(full), len(full) + len(tail)))

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean.reshape(self.batch_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        if sample_shape:
            raise CondVAEError("decoder: sample_shape is not supported for wrapped distributions")
        return self.base.sample().reshape(self.batch_shape)
