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


# The README's "Your own VAE" recipe (its my_vae.py, Python block and commands) is executed by
# tests/test_wrapped_cli.py::test_readme_own_vae_recipe_runs.
