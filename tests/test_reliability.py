"""Bad input, tried as a new user would: every case is one line naming the argument, exit
status 2 (CLI) or a ``CondVAEError`` (API), decided before any work; a few are inputs that
once failed and now work. The corpus ``CLI_CASES`` is also the table of docs/reliability.md:
``python tests/test_reliability.py`` rewrites it from what each case gets today.
"""

from __future__ import annotations

import contextlib
import io
import math
import resource
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import condvae
from condvae.cli import main
from condvae.conditioning import METHODS
from condvae.errors import CondVAEError, MemoryLimitError
from condvae.evaluate import load_query_image
from condvae.guards import memory_limit, set_memory_limit
from condvae.masks import make_mask, sample_masks

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
M = "--model mnist-mlp-z2"
IMG = "--image {tmp}/digit.png"

# (what a user tried, the command after ``condvae``, the argument the one-line error must name)
CLI_CASES: list[tuple[str, str, str]] = [
    ("an existing folder as --out", f"inpaint {M} {IMG} --out {{tmp}}", "out:"),
    ("a text format as --out", f"inpaint {M} {IMG} --out {{tmp}}/o.txt", "out:"),
    ("--out inside a file", f"inpaint {M} {IMG} --out {{tmp}}/digit.png/o.png", "out:"),
    ("demo --out inside a file", "demo --out {tmp}/digit.png/demo.png", "out:"),
    ("train --out inside a file", "train --dataset mnist --out {tmp}/digit.png/run", "out:"),
    ("impute --out not a CSV", "impute {tmp}/t.csv --out {tmp}/t.png", "out:"),
    ("an empty PNG", f"inpaint {M} --image {{tmp}}/empty.png --out {{tmp}}/o.png", "image:"),
    ("a text file named .png", f"inpaint {M} --image {{tmp}}/text.png --out {{tmp}}/o.png", "image:"),
    ("an image of another size", f"inpaint {M} --image {{tmp}}/face.png --out {{tmp}}/o.png", "image:"),
    (
        "another dataset's image",
        "inpaint --model frey-conv-z10 --image mnist:test:0 --data-dir {data}",
        "image:",
    ),
    ("a dataset index past the split", f"inpaint {M} --image mnist:test:99999 --data-dir {{data}}", "image:"),
    ("a malformed image spec", f"inpaint {M} --image mnist:test", "image:"),
    ("--method ''", f"inpaint {M} {IMG} --method '' --out {{tmp}}/o.png", "method:"),
    ("--method ','", f"inpaint {M} {IMG} --method , --out {{tmp}}/o.png", "method:"),
    ("an unknown method", f"inpaint {M} {IMG} --method gvii --out {{tmp}}/o.png", "method:"),
    ("--device cuda without a GPU", f"inpaint {M} {IMG} --device cuda", "--device"),
    ("--device meta", f"inpaint {M} {IMG} --device meta", "--device"),
    ("--device banana", f"inpaint {M} {IMG} --device banana", "--device"),
    ("--samples 0", f"inpaint {M} {IMG} --samples 0", "--samples"),
    ("--samples -3", f"inpaint {M} {IMG} --samples -3", "--samples"),
    ("--steps 0", f"inpaint {M} {IMG} --steps 0", "--steps"),
    ("an option without a method", f"inpaint {M} {IMG} --option budget=5", "--option"),
    (
        "an option of a method not run",
        f"inpaint {M} {IMG} --option hmc.chains=2 --out {{tmp}}/o.png",
        "option:",
    ),
    ("an option a method lacks", f"inpaint {M} {IMG} --option gvi.chains=2 --out {{tmp}}/o.png", "option:"),
    (
        "an option value out of range",
        f"inpaint {M} {IMG} --option gvi.lr=-1 --out {{tmp}}/o.png",
        "method: 1 of 2 failed (gvi)",
    ),
    ("a mask observing everything", f"inpaint {M} {IMG} --mask random:1 --out {{tmp}}/o.png", "mask:"),
    ("an unknown mask spec", f"inpaint {M} {IMG} --mask banana --out {{tmp}}/o.png", "mask:"),
    ("a mask rate above 1", f"inpaint {M} {IMG} --mask random:1.5 --out {{tmp}}/o.png", "mask:"),
    ("an empty mask PNG", f"inpaint {M} {IMG} --mask {{tmp}}/empty.png --out {{tmp}}/o.png", "mask:"),
    ("demo --n 0", "demo --n 0", "--n"),
    (
        "demo --n beyond the test split",
        "demo --model frey-conv-z10 --n 500 --data-dir {data} --out {tmp}/d.png",
        "n:",
    ),
    ("demo --n 100000", "demo --n 100000 --data-dir {data} --out {tmp}/d.png", "n:"),
    ("demo with an unknown mask", "demo --mask banana --out {tmp}/d.png", "mask:"),
    ("an unknown model", f"inpaint --model mnist-mlp-z3 {IMG}", "model"),
    ("train --limit-train 0", "train --dataset mnist --limit-train 0 --out {tmp}/run", "limit"),
    ("train --limit-train -5", "train --dataset mnist --limit-train -5 --out {tmp}/run", "limit"),
    ("train --lr nan", "train --dataset mnist --lr nan --out {tmp}/run", "--lr"),
    ("train --epochs x", "train --dataset mnist --epochs x --out {tmp}/run", "--epochs"),
    ("evaluate --k 0", f"evaluate {M} --k 0", "--k"),
    ("pyramid sample --n 0", "pyramid sample --model mnist-pyramid --n 0", "--n"),
    ("design: a patch larger than the image", f"design {M} {IMG} --patch 40", "patch:"),
    ("design: more steps than candidates", f"design {M} {IMG} --patch 14 --steps 5", "steps:"),
    ("design: an image of another size", f"design {M} --image {{tmp}}/face.png", "image:"),
    (
        "design: a classifier of another dataset",
        f"design {M} {IMG} --classifier fashion_mnist-partial",
        "classifier:",
    ),
    (
        "design: a target not in the table",
        "design --model wine-tab-z4 --row wine+target:test:0 --target colour",
        "target:",
    ),
    ("design: an unknown strategy", f"design {M} {IMG} --strategy best", "strategy:"),
    ("design: a row for an image model", f"design {M} --row wine+target:test:0", "row:"),
    ("design: neither image nor row", f"design {M}", "image:"),
    ("design: costs of the wrong length", f"design {M} {IMG} --costs 1,2", "costs:"),
    ("a misspelt flag", f"inpaint {M} {IMG} --sample 3", "unrecognized"),
    ("no subcommand", "", "required"),
]


def _files(tmp: Path) -> None:
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "text.png").write_text("not an image\n")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(tmp / "digit.png")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp / "face.png")
    (tmp / "t.csv").write_text("a,b\n1,2\n3,\n")


def run_cli(command: str, tmp: Path, data: Path) -> tuple[int, str]:
    """(exit status, stderr) of ``condvae COMMAND`` run in-process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(shlex.split(command.format(tmp=tmp, data=data)))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, err.getvalue().strip()


@pytest.mark.parametrize(("what", "command", "argument"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_is_one_line(
    what: str, command: str, argument: str, tmp_path: Path, synthetic_data: Path
) -> None:
    _files(tmp_path)
    status, err = run_cli(command, tmp_path, synthetic_data)
    assert status == 2, f"{what}: exit {status}, stderr {err!r}"
    lines = [line for line in err.splitlines() if "Warning" not in line and not line.startswith(" ")]
    assert len(lines) == 1 and lines[0].startswith("condvae: error: "), err
    assert argument in lines[0], lines[0]


def test_output_without_extension_is_written_and_named(tmp_path: Path) -> None:
    _files(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(
            shlex.split(f"inpaint {M} {IMG.format(tmp=tmp_path)} --method gvi --steps 5 --out {tmp_path}/o")
        )
    assert status == 0 and (tmp_path / "o.png").is_file()
    assert f"wrote {tmp_path}/o.png" in out.getvalue()


def test_a_failing_method_keeps_the_others(tmp_path: Path) -> None:
    """rejection cannot reach 1000 draws of a 50-d posterior within its budget; gvi's line,
    picture and rejection's error are all reported, and the status says something failed."""
    _files(tmp_path)
    command = f"inpaint --model mnist-mlp-z50 {IMG} --method gvi,rejection --steps 5 --mask random:0.3"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(shlex.split(command.format(tmp=tmp_path) + f" --out {tmp_path}/o.png"))
    assert status == 2
    lines = out.getvalue().splitlines()
    assert any(line.startswith("gvi ") and "failed" not in line for line in lines)
    assert any(line.startswith("rejection") and "failed: budget:" in line for line in lines)
    assert (tmp_path / "o.png").is_file()
    assert "method: 1 of 2 failed (rejection)" in err.getvalue()


def test_a_mask_observing_nothing_is_noted(tmp_path: Path) -> None:
    _files(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(
            shlex.split(
                f"inpaint {M} {IMG.format(tmp=tmp_path)} --mask random:0 --method gvi --steps 5 "
                f"--out {tmp_path}/o.png"
            )
        )
    assert status == 0 and "observes nothing" in out.getvalue()


def test_method_options_reach_the_method(tmp_path: Path) -> None:
    """``--option METHOD.KEY=VALUE`` is the CLI's door to every option (the budget of rejection)."""
    _files(tmp_path)
    out = io.StringIO()
    command = (
        f"inpaint {M} {IMG.format(tmp=tmp_path)} --method rejection,importance --option rejection.samples=20"
    )
    command += f" --option importance.particles=300 --option rejection.budget=1e6 --out {tmp_path}/o.png"
    with contextlib.redirect_stdout(out):
        assert main(shlex.split(command)) == 0, out.getvalue()


def test_a_malformed_memory_limit_is_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path)
    monkeypatch.setenv("CONDVAE_MEMORY_LIMIT", "banana")
    status, err = run_cli(f"inpaint {M} {IMG} --out {{tmp}}/o.png", tmp_path, tmp_path)
    assert status == 2 and err.startswith("condvae: error: CONDVAE_MEMORY_LIMIT: expected a positive size")
    assert not (tmp_path / "o.png").exists()
    for bad in ("abc", 0, -5, True, "inf"):
        with pytest.raises(CondVAEError, match="limit: expected a positive size"):
            set_memory_limit(bad)  # type: ignore[arg-type]


def test_help_is_plain_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "train-partial-encoder" in text
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = capsys.readouterr().out
    assert "(default: 8)" in text and "--option" in text and "--device" in text


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae() -> condvae.VAE:
    return condvae.load("mnist-mlp-z2")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 28, 28, generator=g) > 0.5).float()
    return x, torch.rand(4, 1, 28, 28, generator=g) < 0.2


@pytest.fixture
def small_limit() -> object:
    set_memory_limit("512MB")
    yield
    set_memory_limit(None)


API_CASES: list[tuple[str, Callable[..., object], type[CondVAEError]]] = [
    ("an empty batch", lambda v, x, m: condvae.condition(v, x[:0], m[:0]), CondVAEError),
    ("meta tensors", lambda v, x, m: condvae.condition(v, x.to("meta"), m.to("meta")), CondVAEError),
    ("sample(-1)", lambda v, x, m: condvae.condition(v, x, m, steps=2).sample(-1), CondVAEError),
    (
        "sample(1.5)",
        lambda v, x, m: condvae.condition(v, x, m, method="hmc", warmup=2, draws=2).sample(1.5),
        CondVAEError,
    ),
    (
        "x_true of another batch",
        lambda v, x, m: condvae.condition(v, x, m, steps=2).query_log_likelihood(x[:2]),
        CondVAEError,
    ),
    ("sample_masks n=-1", lambda v, x, m: sample_masks("mixture", -1, (1, 28, 28)), CondVAEError),
    (
        "load on cuda without a GPU",
        lambda v, x, m: condvae.load("mnist-mlp-z2", device="cuda:7"),
        CondVAEError,
    ),
    ("load on banana", lambda v, x, m: condvae.load("mnist-mlp-z2", device="banana"), CondVAEError),
    (
        "a decoder of another input size",
        lambda v, x, m: condvae.wrap(
            torch.nn.Linear(5, 784), latent_dim=3, data_shape=(1, 28, 28), likelihood="bernoulli"
        ),
        CondVAEError,
    ),
    (
        "sample(10**9)",
        lambda v, x, m: condvae.condition(v, x, m, method="gvi", steps=2).sample(10**9),
        MemoryLimitError,
    ),
    (
        "complete(10**6)",
        lambda v, x, m: condvae.condition(v, x, m, method="gvi", steps=2).complete(10**6),
        MemoryLimitError,
    ),
    (
        "importance particles=10**7",
        lambda v, x, m: condvae.condition(v, x, m, method="importance", particles=10**7),
        MemoryLimitError,
    ),
    (
        "gvi samples=10**7",
        lambda v, x, m: condvae.condition(v, x, m, method="gvi", samples=10**7),
        MemoryLimitError,
    ),
    (
        "grid size=10**5",
        lambda v, x, m: condvae.condition(v, x, m, method="grid", size=10**5),
        MemoryLimitError,
    ),
    (
        "hmc chains=10**7",
        lambda v, x, m: condvae.condition(v, x, m, method="hmc", chains=10**7),
        MemoryLimitError,
    ),
]


@pytest.mark.usefixtures("small_limit")
@pytest.mark.parametrize(("what", "call", "error"), API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_condvae_error(
    what: str,
    call: Callable[..., object],
    error: type[CondVAEError],
    vae: condvae.VAE,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    with pytest.raises(error) as info:
        call(vae, *batch)
    assert "\n" not in str(info.value) and ":" in str(info.value)


@pytest.mark.usefixtures("small_limit")
def test_metrics_over_many_draws_run_in_bounded_memory(
    vae: condvae.VAE, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """c_elbo and query_log_likelihood split large draw counts into blocks instead of refusing."""
    x, m = batch
    post = condvae.condition(vae, x, m, method="gvi", steps=20)
    set_memory_limit("20MB")  # blocks of ~1500 draws for 4 queries of 784 pixels
    assert len(post._chunks(5000)) > 1
    assert (
        torch.isfinite(post.c_elbo(5000)).all() and torch.isfinite(post.query_log_likelihood(x, 5000)).all()
    )


def test_a_reference_that_fails_is_unavailable_not_a_number(
    monkeypatch: pytest.MonkeyPatch, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """When no proposal can be fitted (or the importance weights rest on a few particles) the
    reference is NaN with the reason, and the gap is reported as n/a, never as -1e28."""
    from condvae import metrics

    vae50 = condvae.load("mnist-mlp-z50")
    x, m = batch

    def diverge(*args: object, method: str = "gvi", **kwargs: object) -> object:
        raise CondVAEError(f"lr: {method} diverged (non-finite C-ELBO); lower lr")

    monkeypatch.setattr(metrics, "condition", diverge)
    ref = metrics.reference_query_log_likelihood(vae50, x, m, particles=100)
    assert torch.isnan(ref.value).all() and "mixture proposal: lr: mixture diverged" in (ref.why or "")
    monkeypatch.undo()
    weak = metrics.reference_query_log_likelihood(
        vae50, x, torch.zeros_like(m).bool() | (torch.arange(784).reshape(1, 1, 28, 28) < 392), particles=20
    )
    assert weak.why is None or "effective sample size" in weak.why
    assert bool((torch.isnan(weak.value) | torch.isfinite(weak.value)).all())


# -- property-based: any spec, option or tensor either works or is one line -----------------


def _one_line(exc: CondVAEError) -> None:
    text = str(exc)
    assert text and "\n" not in text and ":" in text, repr(text)


SPEC_WORDS = [
    "random",
    "box",
    "band",
    "top-half",
    "quadrant",
    "freeform",
    "~",
    ":",
    ",",
    "0",
    "1",
    "0.5",
    "-1",
    "1e9",
    "nan",
    "tl",
    "br",
    "x",
    "",
    "27",
    "28",
    "99",
    "inf",
    "half",
    "mixture",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(SPEC_WORDS), max_size=6).map("".join) | st.text(max_size=12))
def test_any_mask_spec_is_a_mask_or_one_line(spec: str) -> None:
    try:
        mask = make_mask(spec, (1, 28, 28))
    except CondVAEError as exc:
        _one_line(exc)
        return
    assert mask.dtype == torch.bool and mask.shape == (1, 28, 28)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["mnist", "fashion_mnist", "frey", "olivetti", "banana", "", "folder:/nope", "wine"]),
    st.sampled_from(["train", "valid", "test", "", "x", "TEST"]),
    st.sampled_from(["0", "-1", "1e3", "999999", "", "a", "1:2"]),
)
def test_any_image_spec_is_an_image_or_one_line(dataset: str, split: str, index: str) -> None:
    vae = condvae.load("mnist-mlp-z2")
    try:
        x = load_query_image(vae, f"{dataset}:{split}:{index}", data_dir="/nonexistent")
    except CondVAEError as exc:
        _one_line(exc)
        return
    assert x.shape == (1, 1, 28, 28)


VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.sampled_from(
        [
            0,
            1,
            2,
            -1,
            10**9,
            0.5,
            -0.5,
            math.nan,
            math.inf,
            -math.inf,
            1e-30,
            1e30,
            True,
            None,
            "",
            "x",
            "prior",
            "encoder",
            [],
            [1],
            "1",
        ]
    ),
)
QUICK = {"steps": 2, "warmup": 2, "draws": 2, "particles": 50, "samples": 4, "budget": 5000}


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(sorted(m for m in METHODS if m not in ("ipa", "semi"))), st.data())
def test_any_option_value_works_or_is_one_line(method: str, data: st.DataObject) -> None:
    vae = condvae.load("mnist-mlp-z2")
    x = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    m = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2)) < 0.3
    options = {k: v for k, v in QUICK.items() if k in METHODS[method].options()}
    key = data.draw(st.sampled_from(METHODS[method].options()))
    options[key] = data.draw(VALUES)
    # counts of work (not memory) that are huge would legitimately run for hours
    work = (
        "steps",
        "warmup",
        "draws",
        "budget",
        "leapfrog",
        "layers",
        "components",
        "hidden",
        "bins",
        "temperatures",
    )
    work += ("rejuvenate",)
    assume(not (key in work and isinstance(options[key], int) and options[key] > 64))
    set_memory_limit("512MB")
    try:
        post = condvae.condition(vae, x, m, method=method, **options)
        assert post.sample(3).shape == (3, 2, 2)
    except CondVAEError as exc:
        _one_line(exc)
    finally:
        set_memory_limit(None)


TENSORS = st.tuples(
    st.sampled_from([(2, 1, 28, 28), (1, 28, 28), (2, 784), (0, 1, 28, 28), (2, 1, 28, 20), (3, 1, 28, 28)]),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.float16]),
    st.sampled_from(["binary", "nan", "inf", "2", "negative", "half"]),
    st.sampled_from(["bool", "float01", "float", "all", "none", "shape", "int"]),
)


@settings(max_examples=120, deadline=None)
@given(TENSORS)
def test_any_tensor_input_works_or_is_one_line(case: tuple[tuple[int, ...], torch.dtype, str, str]) -> None:
    shape, dtype, values, mask_kind = case
    vae = condvae.load("mnist-mlp-z2")
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(shape, generator=g) > 0.5).float()
    x = {
        "nan": x.masked_fill(x > 0, math.nan),
        "inf": x * math.inf,
        "2": x * 2,
        "negative": -x,
        "half": x * 0.5,
    }.get(values, x).to(dtype)
    u = torch.rand(shape, generator=g)
    mask = {
        "bool": u < 0.3,
        "float01": (u < 0.3).float(),
        "float": u,
        "all": torch.ones(shape, dtype=torch.bool),
        "none": torch.zeros(shape, dtype=torch.bool),
        "shape": torch.ones(2, 5, dtype=torch.bool),
        "int": (u < 0.3).long(),
    }[mask_kind]
    try:
        post = condvae.condition(vae, x, mask, steps=2)
        assert torch.isfinite(post.sample(2)).all()
    except CondVAEError as exc:
        _one_line(exc)


def test_the_fuzzing_stayed_within_the_memory_limit() -> None:
    """Peak resident memory of this process (every case above ran in it) stays far below the
    default limit: the guards refused the huge requests before allocating them."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    assert peak < min(memory_limit(), 6 * 2**30), f"peak RSS {peak / 2**30:.1f} GiB"


def test_the_doc_lists_every_case() -> None:
    text = DOC.read_text()
    missing = [what for what, _, _ in CLI_CASES if f"| {what} |" not in text]
    assert not missing, f"docs/reliability.md lacks {missing}; rerun python tests/test_reliability.py"


def write_doc(tmp: Path, data: Path) -> str:
    """The table of docs/reliability.md, from what each case gets now."""
    _files(tmp)
    rows = ["| input | command | what it gets |", "| --- | --- | --- |"]
    for what, command, _ in CLI_CASES:
        status, err = run_cli(command, tmp, data)
        line = err.splitlines()[-1] if err else "(no error)"
        shown = line.replace(str(tmp), "DIR").replace(str(data), "DATA").replace("|", "\\|")
        rows.append(
            f"| {what} | `condvae {command.format(tmp='DIR', data='DATA')}` | exit {status}: {shown} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # rewrite the table in docs/reliability.md
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    import conftest

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = conftest.synthetic_data.__wrapped__(root)  # the fixture's synthetic data folder
        table = write_doc(root, data)
    head = DOC.read_text().split("<!-- table -->")[0] if DOC.exists() else ""
    DOC.write_text(f"{head}<!-- table -->\n{table}\n")
    print(f"wrote {DOC}")


BUNDLED = sorted(p.parent.name for p in (REPO / "src" / "condvae" / "pretrained").glob("*/config.json"))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED)
def test_inpaint_works_on_every_bundled_model(
    name: str, tmp_path: Path, real_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bundled model completes its own test item with each method's line (or error)
    printed; the olivetti-conv-z160 reference, which no importance sampler can trust in 160
    dimensions, is reported as n/a. The reference runs with fewer particles to stay quick."""
    import functools

    from condvae import inpaint as module
    from condvae.partial.pretrained import find_bundled

    real = module.reference_query_log_likelihood
    monkeypatch.setattr(module, "reference_query_log_likelihood", functools.partial(real, particles=500))
    dataset = condvae.load(name).card["dataset"]
    methods = "gvi,ipa" if find_bundled(condvae.load(name)) is not None else "gvi,planar"
    command = f"inpaint --model {name} --image {dataset}:test:0 --mask random:0.3 --method {methods} "
    command += f"--steps 20 --samples 2 --data-dir {real_data} --out {tmp_path}/o.png"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(shlex.split(command))
    assert status == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    for method in methods.split(","):
        assert any(line.split()[:1] == [method] for line in lines), out.getvalue()
    assert (tmp_path / "o.png").is_file()
    for line in lines[1:3]:
        gap = line.split()[3]
        assert gap == "n/a" or abs(float(gap)) < 1e4, line
