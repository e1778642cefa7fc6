"""The README's first two commands are the set-up; CI must run exactly the second one."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.strip().splitlines()]


def test_readme_starts_with_demo_and_test_commands() -> None:
    demo, test = _setup_commands()[:2]
    assert "torch==2.13.0" in demo and demo.endswith("python -m condvae demo")
    assert "torch==2.13.0" in test and test.endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command() -> None:
    test = _setup_commands()[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_own_vae_example_runs() -> None:
    """The README's "Your own VAE" block, executed as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own VAE", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    completions = namespace["completions"]
    x, mask = namespace["x"], namespace["mask"]
    assert completions.shape == (16, 4, 1, 16, 16)  # type: ignore[attr-defined]
    assert bool((completions[:, mask] == x[mask]).all())  # type: ignore[index]
