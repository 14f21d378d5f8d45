"""`<NAME>_FILE` → `<NAME>` at the runtime's start (the Swarm backend's secrets, issue 14 §2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from molecule_agent import config


def secrets_dir(tmp_path: Path) -> Path:
    root = tmp_path / "run-secrets"
    root.mkdir()
    (root / "OPENAI_API_KEY").write_bytes(b"sk-from-file\n")  # the content exactly, newline and all
    (root / "OTHER").write_text("other-value")
    return root


def test_file_under_the_secrets_dir_sets_the_variable(tmp_path: Path) -> None:
    root = secrets_dir(tmp_path)
    env = {"OPENAI_API_KEY_FILE": str(root / "OPENAI_API_KEY"), "PLAIN": "x"}
    assert config.env_from_secret_files(env, root) == ["OPENAI_API_KEY"]
    assert env["OPENAI_API_KEY"] == "sk-from-file\n"
    assert env["PLAIN"] == "x" and env["OPENAI_API_KEY_FILE"] == str(root / "OPENAI_API_KEY")


def test_a_set_variable_wins_over_its_file(tmp_path: Path) -> None:
    root = secrets_dir(tmp_path)
    env = {"OPENAI_API_KEY": "from-env", "OPENAI_API_KEY_FILE": str(root / "OPENAI_API_KEY")}
    assert config.env_from_secret_files(env, root) == []
    assert env["OPENAI_API_KEY"] == "from-env"


def test_files_elsewhere_missing_or_not_files_are_left_alone(tmp_path: Path) -> None:
    root = secrets_dir(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.write_text("not a secret of ours")
    (root / "adir").mkdir()
    env = {
        "GOOGLE_CREDENTIALS_FILE": str(outside),  # a _FILE variable meant for something else
        "ESCAPE_FILE": f"{root}/../elsewhere",
        "MISSING_FILE": str(root / "MISSING"),
        "DIR_FILE": str(root / "adir"),
        "_FILE": str(root / "OTHER"),
    }
    before = dict(env)
    assert config.env_from_secret_files(env, root) == []
    assert env == before


def test_the_process_env_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = secrets_dir(tmp_path)
    monkeypatch.setenv("OTHER_FILE", str(root / "OTHER"))
    monkeypatch.delenv("OTHER", raising=False)
    assert config.env_from_secret_files(root=root) == ["OTHER"]
    assert os.environ["OTHER"] == "other-value"
    monkeypatch.delenv("OTHER")
