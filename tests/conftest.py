"""Shared fixtures. Everything runs offline, on the CPU, on real C-NMC cells in tests/fixtures/."""

import os

# Before any Hugging Face library is imported: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "cnmc"
CNMC_ROOT = FIXTURES / "C-NMC_Leukemia"


@pytest.fixture
def cnmc_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture download (Kaggle layout), for tests that damage it."""
    target = tmp_path / "download"
    shutil.copytree(FIXTURES, target)
    return target / "C-NMC_Leukemia"


@pytest.fixture(scope="session")
def cnmc():
    from training.data import load_cnmc

    return load_cnmc(FIXTURES, progress=False)
