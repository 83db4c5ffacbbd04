"""The console commands declared in pyproject.toml exist and answer --help."""

import importlib
import tomllib
from pathlib import Path

import pytest

SCRIPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_each_command_answers_help(command, capsys):
    module, function = SCRIPTS[command].split(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_training_pipeline_and_publishing_are_all_declared():
    targets = {target.split(":")[0] for target in SCRIPTS.values()}
    publishing = {"hub.push", "hub.push_space", "hub.publish", "hub.card"}
    assert {"training.pipeline", "training.train", "training.evaluate", "training.crossval", *publishing} <= targets
