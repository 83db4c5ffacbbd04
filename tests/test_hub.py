"""Export, model card, loading and publishing: offline, on the CPU, with a tiny random MobileNetV2.

The Hub is never contacted: Hub loading is served from a cache laid out like huggingface_hub's, and uploads go
to a fake ``HfApi`` (its two network methods replaced).
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import timm
import torch
import yaml
from conftest import CNMC_ROOT
from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from PIL import Image
from safetensors import safe_open

from cnmc.backbones import BACKBONES, create_model
from cnmc.export import LABEL_NAMES, export_model, imagenet_tag, transformers_compatible, weights_tag
from cnmc.load import NETWORK_ERROR, NOT_PUBLISHED, OFFLINE, ModelLoadError, load_model
from cnmc.preprocessing import eval_transform
from hub import publish, push, push_space
from hub.card import model_card
from serving import registry, results

CELL = sorted((CNMC_ROOT / "training_data" / "fold_0" / "all").glob("*.webp"))[0]
REPO_ID = "cnmc-test/tiny-mobilenetv2"
FAKE_TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123"
RUN_CONFIG = {
    "backbone": "mobilenetv2_100",
    "preset": "thesis",
    "pretrained": False,
    "epochs": 3,
    "lr": 0.0003,
    "batch_size": 32,
    "optimizer": "adamw",
    "img_size": 64,
    "augmentation": {"hflip": 0.5, "rotation": 180},
    "train_patients": ["3", "11"],
    "val_description": "C-NMC 2019 fold_1, patients unseen in training",
    "a_new_knob": "rendered too",
}
EVAL = {
    "model": "runs/tiny/model",
    "split": "C-NMC 2019 fold_1, patients unseen in training",
    "num_cells": 16,
    "num_patients": 4,
    "accuracy": 0.8125,
    "f1_weighted": 0.80625,
    "f1_macro": 0.7833,
    "precision": 0.8333,
    "recall": 0.9091,
    "specificity": 0.6,
    "balanced_accuracy": 0.7545,
    "roc_auc": 0.8727,
    "confusion_matrix": [[3, 2], [1, 10]],
    "patient_accuracy": 0.75,
    "mean_patient_cell_accuracy": 0.8,
    "per_patient": {"3": {"label": 1, "cells": 4, "accuracy": 1.0}},
}
_REQUEST = httpx2.Request("GET", "https://huggingface.co/api/models/cnmc-test/elsewhere")
PRESENT_PLOTS = ["eval_confusion_matrix.png", "training_curves.png"]  # eval_roc.png missing on purpose
REPO_FILES = {"README.md", "config.json", "model.safetensors", "calibration.json", *PRESENT_PLOTS}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder as training leaves it: model/ (with calibration.json), run_config.json, eval.json, plots."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    torch.manual_seed(0)
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    run_dir.mkdir()
    calibration = run_dir / "calibration.json"
    calibration.write_text(json.dumps({"temperature": 1.5}))
    export_model(model, run_dir / "model", extra_files=[calibration])
    calibration.unlink()
    (run_dir / "run_config.json").write_text(json.dumps(RUN_CONFIG))
    (run_dir / "eval.json").write_text(json.dumps(EVAL))
    for plot in PRESENT_PLOTS:
        Image.new("RGB", (8, 8)).save(run_dir / plot)
    return run_dir


@pytest.fixture(scope="module")
def original(run) -> torch.nn.Module:
    """The model as training held it, rebuilt from the same seed, its weights rounded to the half precision that
    the export stores them in (and computing in full precision, as every loader does)."""
    torch.manual_seed(0)
    return create_model("mobilenetv2", pretrained=False, img_size=64).eval().half().float()


@pytest.fixture
def fake_hub(monkeypatch) -> list:
    """Replace HfApi's network calls; record (method, kwargs, uploaded file names) for each call."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}, None))

    def upload_folder(self, **kwargs):
        root = Path(kwargs["folder_path"])
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        calls.append(("upload_folder", kwargs, files))
        sha = f"{len(calls):040x}"
        url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc{sha}"
        return CommitInfo(commit_url=url, commit_message=kwargs["commit_message"], commit_description="", oid=sha)

    def add_space_variable(self, repo_id, key, value, **kwargs):
        calls.append(("add_space_variable", {"repo_id": repo_id, key: value}, None))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "add_space_variable", add_space_variable)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return calls


def front_matter(readme: Path) -> dict:
    return yaml.safe_load(readme.read_text().split("---\n")[1])


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.unsqueeze(0))[0]


# --- Export and transformers ----------------------------------------------------------------------------


def test_export_config_suits_timm_and_transformers(run):
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["dtype"] == "float32"  # transformers computes in it, though the weights are stored in float16
    assert config["num_classes"] == 2 and config["label_names"] == ["HEM (healthy)", "ALL (leukaemia)"]
    assert config["pretrained_cfg"]["tag"] == "cnmc"  # trained from scratch: not timm's ImageNet tag ra_in1k
    assert "num_classes" not in config.get("model_args", {})  # transformers passes it itself
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert sorted(p.name for p in (run / "model").iterdir()) == ["calibration.json", "config.json", "model.safetensors"]


def test_transformers_compatible_fixes_a_plain_save_for_hf_config(tmp_path):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    timm.models.save_for_hf(model, tmp_path, model_config={"label_names": ["hem", "all"]}, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_args"]["num_classes"] == 2  # what makes transformers raise
    fixed = transformers_compatible(config)
    assert "num_classes" not in fixed["model_args"] and fixed["num_classes"] == 2
    assert config["model_args"]["num_classes"] == 2  # the input is left alone


def test_transformers_pipeline_agrees_with_timm(run, original):
    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(run / "model"))
    image = Image.open(CELL).convert("RGB")
    expected = logits(original, eval_transform(original)(image)).softmax(-1)
    predictions = classifier(image)
    assert predictions[0]["label"] == [LABEL_NAMES["hem"], LABEL_NAMES["all"]][int(expected.argmax())]
    scores = {p["label"]: p["score"] for p in predictions}
    assert scores["ALL (leukaemia)"] == pytest.approx(expected[1].item(), abs=1e-4)


# --- Loading --------------------------------------------------------------------------------------------


def test_round_trip_gives_the_same_logits(run, original):
    folder = run / "model"
    loaded = load_model(str(folder))
    assert loaded.label_names == ["HEM (healthy)", "ALL (leukaemia)"]
    assert loaded.temperature == 1.5
    assert loaded.folder == folder
    assert not loaded.model.training
    image = Image.open(CELL).convert("RGB")
    x = loaded.transform(image)
    assert torch.equal(x, eval_transform(original)(image))
    expected = logits(original, x)
    assert torch.allclose(logits(loaded.model, x), expected, atol=1e-5)
    from_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert torch.allclose(logits(from_timm, x), expected, atol=1e-5)


def _cache_with(run: Path, cache: Path, repo_id: str) -> str:
    """Lay the export out as huggingface_hub caches a downloaded repo; return the revision."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in (run / "model").iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(revision)
    return revision


def test_offline_load_by_repo_id_from_the_cache(run, original, tmp_path, monkeypatch):
    assert constants.HF_HUB_OFFLINE  # conftest
    _cache_with(run, tmp_path, REPO_ID)
    # huggingface_hub read HF_HUB_CACHE at import: patch the constant the download reads at call time.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    image = Image.open(CELL).convert("RGB")
    expected = logits(original, eval_transform(original)(image))
    for source in (REPO_ID, f"hf-hub:{REPO_ID}"):
        loaded = load_model(source)
        assert loaded.folder.is_relative_to(tmp_path) and loaded.temperature == 1.5
        assert torch.allclose(logits(loaded.model, loaded.transform(image)), expected, atol=1e-5)
    assert load_model(REPO_ID, cache_dir=tmp_path).label_names == ["HEM (healthy)", "ALL (leukaemia)"]


def test_offline_without_a_cached_copy_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as caught:
        load_model("cnmc-test/not-cached")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message and "cnmc-test/not-cached" in message and "\n" not in message
    assert caught.value.kind == OFFLINE


@pytest.mark.parametrize(
    ("failure", "kind", "expected"),
    [
        (httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"), OFFLINE, "Could not reach"),
        (
            RepositoryNotFoundError("404 Repository Not Found", response=httpx2.Response(404, request=_REQUEST)),
            NOT_PUBLISHED,
            "not found",
        ),
        (
            RevisionNotFoundError("404 Revision Not Found", response=httpx2.Response(404, request=_REQUEST)),
            NOT_PUBLISHED,
            "no such revision",
        ),
        (HfHubHTTPError("502 Bad Gateway", response=httpx2.Response(502, request=_REQUEST)), NETWORK_ERROR, "HTTP 502"),
    ],
)
def test_online_failures_name_the_repo_and_what_kind_they_are(tmp_path, monkeypatch, failure, kind, expected):
    def repo_info(self, *args, **kwargs):  # the first request snapshot_download makes
        raise failure

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    with pytest.raises(ModelLoadError, match=expected) as caught:
        load_model("cnmc-test/elsewhere@0123abc", cache_dir=tmp_path)
    message = str(caught.value)
    assert caught.value.kind == kind and message.startswith(f"{kind}: ")
    assert "cnmc-test/elsewhere@0123abc" in message and "\n" not in message


def test_bad_local_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelLoadError, match="Model folder not found"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="Invalid Hub repo id"):
        load_model("hf-hub:not a repo")


# --- Model card and dry run -----------------------------------------------------------------------------


def test_dry_run_builds_exactly_the_repo_files(run, tmp_path, capsys):
    out = tmp_path / "repo"
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID, "--dry-run", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == REPO_FILES
    assert str(out) in capsys.readouterr().out
    assert (out / "model.safetensors").read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    # The run's model/ predates the record of its training patients; the repo gets them from run_config.json.
    assert "train_patients" not in json.loads((run / "model" / "config.json").read_text())
    assert load_model(str(out)).train_patients == {"3", "11"}
    readme = (out / "README.md").read_text()
    assert all(f"]({plot})" in readme for plot in PRESENT_PLOTS) and "eval_roc.png" not in readme
    # The folder must hold only what is built, so a used one is refused.
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID, "--dry-run", "--out", str(out)]) == 2


def test_card_metadata_and_numbers_come_from_the_run(run):
    card = model_card(run / "model", repo_id=REPO_ID)
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0"
    assert set(meta["tags"]) >= {"image-classification", "timm", "medical", "leukemia"}
    assert "datasets" not in meta and set(meta["metrics"]) == {"accuracy", "f1"}  # C-NMC 2019 is not on the Hub
    assert "base_model" not in meta  # trained from scratch
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == EVAL["split"] and "C-NMC 2019" in result["dataset"]["name"]
    values = {m["name"]: m["value"] for m in result["metrics"]}
    assert values == {
        "Accuracy": EVAL["accuracy"],
        "Weighted F1": EVAL["f1_weighted"],
        "ROC AUC": EVAL["roc_auc"],
        "Patient accuracy": EVAL["patient_accuracy"],
    }
    body = card.text
    assert "https://doi.org/10.7937/tcia.2019.dc64i46r" in body and "CC BY 3.0" in body
    assert "not** for diagnosis" in body and "Trained from scratch" in body
    assert f'timm.create_model("hf-hub:{REPO_ID}", pretrained=True)' in body
    assert f'pipeline("image-classification", model="{REPO_ID}")' in body
    assert "| HEM | 3 | 2 |" in body and "| ALL | 1 | 10 |" in body
    assert "| a_new_knob | rendered too |" in body and "| augmentation.hflip | 0.5 |" in body
    assert "calibration.json" in body
    assert "stores the weights in half precision (float16), 4.5 MB" in body and "model_args" not in body


def test_card_says_what_vgg19s_narrow_classifier_changes_and_why(run, tmp_path):
    for name in ("run_config.json", "eval.json"):
        shutil.copy(run / name, tmp_path / name)
    export_model(create_model("vgg19", pretrained=False, img_size=64).eval(), tmp_path / "model")
    text = model_card(tmp_path / "model", repo_id=REPO_ID).text
    assert 'timm.create_model("vgg19_bn", mlp_ratio=0.015625)' in text and "`model_args`" in text
    assert "instead of the 4096 of the thesis's VGG19" in text and "from 139.6 M to 21.9 M" in text
    assert re.search(r"stores the weights in half precision \(float16\), 4[34]\.\d MB", text)


def test_the_tag_names_weights_trained_here_and_what_they_started_from():
    assert weights_tag("ra_in1k", pretrained=False) == "cnmc" and imagenet_tag("cnmc") is None
    assert weights_tag("ra_in1k", pretrained=True) == "ra_in1k_ft_cnmc" and imagenet_tag("ra_in1k_ft_cnmc") == "ra_in1k"
    assert imagenet_tag("ra_in1k") == "ra_in1k"  # a folder exported before the tag said so


def test_card_names_the_base_model_only_when_pretrained(run, tmp_path):
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_bytes((run / "model" / "config.json").read_bytes())
    (tmp_path / "run" / "run_config.json").write_text(json.dumps({**RUN_CONFIG, "pretrained": True}))
    (tmp_path / "run" / "eval.json").write_text(json.dumps({**EVAL, "roc_auc": None}))
    card = model_card(model_dir, repo_id=REPO_ID)
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta["base_model"] == "timm/mobilenetv2_100.ra_in1k"
    assert "ROC AUC" not in {m["name"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert "Trained from scratch" not in card.text


@pytest.mark.parametrize(("matched", "verdict"), [(0.53, "largely follows the cell's size"), (0.78, "uses more than")])
def test_card_states_what_the_size_test_found(run, tmp_path, matched, verdict):
    for name in ("model", "run_config.json", "eval.json"):
        copy = shutil.copytree if (run / name).is_dir() else shutil.copy
        copy(run / name, tmp_path / name)
    size = {"cells": 7108, "rank_correlation_score_area": 0.79, "roc_auc_model": 0.852, "roc_auc_area_alone": 0.853}
    (tmp_path / "size_dependence.json").write_text(json.dumps({**size, "roc_auc_model_at_matched_size": matched}))
    text = model_card(tmp_path / "model", repo_id=REPO_ID).text
    assert verdict in text and f"about the same size the model's ROC-AUC is {matched:.3f}" in text
    assert "Its score" not in model_card(run / "model", repo_id=REPO_ID).text  # no size test, no claim


def test_dry_run_without_eval_json_is_one_line(run, tmp_path, capsys):
    model_dir = tmp_path / "run" / "model"
    model_dir.parent.mkdir()
    model_dir.mkdir()
    for file in (run / "model").iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    (model_dir.parent / "run_config.json").write_text(json.dumps(RUN_CONFIG))
    assert push.main(["--model-dir", str(model_dir), "--repo-id", REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "eval.json is missing" in err and err.count("\n") == 1


# --- Pushing --------------------------------------------------------------------------------------------


def test_push_uploads_exactly_the_export_in_one_commit(run, fake_hub, capsys):
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID, "--private"]) == 0
    (_, created, _), (_, uploaded, files) = fake_hub
    assert created == {"repo_id": REPO_ID, "private": True, "exist_ok": True, "repo_type": "model"}
    assert uploaded["repo_id"] == REPO_ID and uploaded["repo_type"] == "model"
    assert set(files) == REPO_FILES
    assert not Path(uploaded["folder_path"]).exists()  # the temporary folder is cleaned up
    assert f"{REPO_ID}/commit/abc" in capsys.readouterr().out


@pytest.mark.parametrize(("status", "advice"), [(401, "hf auth login"), (403, "write access"), (500, "HTTP 500")])
def test_http_errors_are_one_line_without_the_token(run, fake_hub, monkeypatch, capsys, status, advice):
    def refuse(self, repo_id, **kwargs):
        response = httpx2.Response(status, request=_REQUEST)
        raise HfHubHTTPError(f"{status} Client Error: Authorization: Bearer {FAKE_TOKEN} refused", response=response)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID]) == 2
    captured = capsys.readouterr()
    assert advice in captured.err and captured.err.count("\n") == 1
    assert FAKE_TOKEN not in captured.err + captured.out and "Traceback" not in captured.err


def test_network_failure_is_one_line(run, fake_hub, monkeypatch, capsys):
    def unreachable(self, **kwargs):
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "upload_folder", unreachable)
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err
    assert "network" in err and err.count("\n") == 1


def test_an_unexpected_failure_is_one_line_scrubbed_of_every_token(run, fake_hub, monkeypatch, capsys):
    def broken(self, **kwargs):
        raise RuntimeError(f"state {FAKE_TOKEN} and hf_OtherToken12345 in a repr\nsecond line")

    monkeypatch.setattr(HfApi, "upload_folder", broken)
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError" in err and err.count("\n") == 1 and "Traceback" not in err
    assert FAKE_TOKEN not in err and "hf_OtherToken12345" not in err


def test_push_without_a_token_says_how_to_log_in(run, fake_hub, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert push.main(["--model-dir", str(run / "model"), "--repo-id", REPO_ID]) == 2
    assert "hf auth login" in capsys.readouterr().err
    assert fake_hub == []


@pytest.mark.parametrize("repo_id", ["not a repo", "no-owner", "a/b/c"])
def test_invalid_repo_id_is_refused_before_anything_else(fake_hub, tmp_path, capsys, repo_id):
    out = tmp_path / "out"
    assert push.main(["--model-dir", str(tmp_path), "--repo-id", repo_id, "--dry-run", "--out", str(out)]) == 2
    assert "Invalid repo id" in capsys.readouterr().err
    assert not out.exists() and fake_hub == []


# --- The Space and the registry -------------------------------------------------------------------------


def test_space_dry_run_pins_gradio_and_lists_the_published_models(tmp_path):
    out = tmp_path / "space"
    assert push_space.main(["--repo-id", "cnmc-test/app", "--dry-run", "--out", str(out)]) == 0
    requirements = (registry.ROOT / "requirements.txt").read_text()
    gradio = re.search(r"^gradio==(\S+)$", requirements, re.MULTILINE)[1]
    meta = front_matter(out / "README.md")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio and meta["app_file"] == "app.py"
    assert meta.get("models", []) == [m.repo_id for m in registry.MODELS if m.revision]  # none before publishing
    assert meta["title"] and meta["emoji"]
    for path in ("app.py", "requirements.txt", "cnmc/backbones.py", "cnmc/load.py", "serving/predict.py",
                 "examples/UID_H6_10_1_hem.webp"):  # fmt: skip
        assert (out / path).is_file()
    assert not list(out.rglob("__pycache__"))
    assert not (out / "training").exists() and not (out / "hub").exists()  # the app imports neither
    # Of results/, exactly what the Models & results tab reads, and the Docker image is cut to the same list.
    shipped = sorted(str(p.relative_to(out)) for p in (out / "results").rglob("*") if p.is_file())
    root = registry.ROOT
    expected = sorted(str(p.relative_to(root)) for pattern in results.READS for p in root.glob(pattern))
    assert shipped == expected and all(p in shipped for p in results.READS if "*" not in p)
    dockerignore = (root / ".dockerignore").read_text().splitlines()
    assert all(f"!{pattern}" in dockerignore for pattern in results.READS)


def test_space_push_creates_a_gradio_space(fake_hub):
    assert push_space.main(["--repo-id", "cnmc-test/app"]) == 0
    (_, created, _), (_, variable, _), (_, uploaded, files) = fake_hub
    assert created["repo_type"] == "space" and created["space_sdk"] == "gradio"
    assert variable == {"repo_id": "cnmc-test/app", "CNMC_HUB_ORG": registry.HUB_ORG}  # whose models its app loads
    assert uploaded["repo_type"] == "space" and {"app.py", "requirements.txt", "README.md"} <= set(files)


def test_registry_has_the_four_backbones():
    assert [m.display_name for m in registry.MODELS] == ["MobileNetV2", "VGG19", "InceptionV3", "ResNet101V2"]
    assert [m.timm_name for m in registry.MODELS] == [b.timm_name for b in BACKBONES]
    assert [m.local_dir for m in registry.MODELS] == [registry.MODELS_DIR / b.thesis_name for b in BACKBONES]
    assert len({m.repo_id for m in registry.MODELS}) == 4
    assert all(m.repo_id.startswith(f"{registry.HUB_ORG}/") for m in registry.MODELS)
    assert registry.registered_model("mobilenetv2").source == str(registry.MODELS_DIR / "mobilenetv2")  # shipped


def test_a_model_neither_shipped_nor_pinned_is_not_published_and_never_fetched(monkeypatch):
    def repo_info(self, *args, **kwargs):
        raise AssertionError("an unpinned repo must not be looked up: anyone could own it")

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    (vgg19,) = [m for m in registry.registered_models(revisions={}) if m.display_name == "VGG19"]
    assert not vgg19.shipped and vgg19.source is None and vgg19.origin == vgg19.repo_id
    with pytest.raises(ModelLoadError) as caught:
        vgg19.load()
    assert caught.value.kind == NOT_PUBLISHED and vgg19.repo_id in str(caught.value)


def test_a_published_model_loads_at_its_pinned_revision_offline(run, original, tmp_path, monkeypatch):
    revision = _cache_with(run, tmp_path, "cnmc-test/cnmc-vgg19")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    models = registry.registered_models(org="cnmc-test", revisions={"cnmc-test/cnmc-vgg19": revision})
    (vgg19,) = [m for m in models if m.display_name == "VGG19"]
    assert vgg19.source == f"hf-hub:cnmc-test/cnmc-vgg19@{revision}"
    assert vgg19.origin == f"cnmc-test/cnmc-vgg19@{revision}"
    loaded = vgg19.load()
    assert loaded.folder.name == revision and loaded.temperature == 1.5
    image = Image.open(CELL).convert("RGB")
    assert torch.allclose(logits(loaded.model, loaded.transform(image)), logits(original, loaded.transform(image)))
    unknown = registry.RegisteredModel("VGG19", "vgg19_bn", tmp_path / "none", "cnmc-test/cnmc-vgg19", "f" * 40)
    with pytest.raises(ModelLoadError) as caught:  # a revision the cache lacks: offline, not served from another
        unknown.load()
    assert caught.value.kind == OFFLINE


def test_one_setting_names_the_organisation():
    code = "from serving import registry; print(*(m.repo_id for m in registry.MODELS))"
    env = {**os.environ, "CNMC_HUB_ORG": "someone-else"}
    ids = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert ids.split() == [f"someone-else/cnmc-{b.thesis_name}" for b in BACKBONES]


def test_start_up_logs_one_line_per_model(run, tmp_path, caplog):
    from serving.predict import load_models

    shipped = registry.RegisteredModel("Tiny", "mobilenetv2_100", run / "model", "cnmc-test/cnmc-tiny")
    missing = registry.RegisteredModel("Gone", "vgg19_bn", tmp_path / "gone", "cnmc-test/cnmc-gone")
    with caplog.at_level(logging.INFO, logger="serving.predict"):
        load_models([shipped, missing], precision="fp32")
    assert [r.getMessage() for r in caplog.records] == [
        f"Tiny: available (fp32, T = 1.50), from {run / 'model'}",
        "Gone: unavailable: not published yet: gone/ holds no weights and no Hub revision of cnmc-test/cnmc-gone "
        "is recorded (serving/hub_revisions.json; `python -m hub.publish` records it)",
    ]


def test_channels_last_model_exports_and_loads_back(tmp_path):
    """GPU training runs channels_last; the export must still hold plain weights that load back identically."""
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    fast = model.to(memory_format=torch.channels_last)
    export_model(fast, tmp_path / "model", dtype=None)
    loaded = load_model(str(tmp_path / "model"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), fast(x), atol=1e-5)


def test_weights_half_precision_cannot_hold_are_stored_in_full(tmp_path):
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    with torch.no_grad():
        model.classifier.bias[0] = 1e6  # beyond float16's 65504
    with pytest.warns(UserWarning, match="beyond the range of torch.float16"):
        export_model(model, tmp_path / "model")
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("classifier.bias").dtype == torch.float32
    assert load_model(str(tmp_path / "model")).model.classifier.bias[0] == 1e6


# --- Publishing everything ------------------------------------------------------------------------------

SHIPPED = [m for m in registry.MODELS if m.shipped]
UNSHIPPED = [m for m in registry.MODELS if not m.shipped]


def test_publish_dry_run_writes_every_repo_and_reports_the_models_without_weights(tmp_path, capsys):
    out = tmp_path / "publish"
    assert publish.main(["--org", "cnmc-test", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = {f"cnmc-{m.local_dir.name}" for m in SHIPPED}
    assert SHIPPED and {p.name for p in out.iterdir()} == names | {"cnmc-all-detector"}
    for model in SHIPPED:
        repo = out / f"cnmc-{model.local_dir.name}"
        plots = {p.name for p in model.local_dir.glob("*.png")}
        assert {p.name for p in repo.iterdir()} == {"README.md", "config.json", "model.safetensors", *plots} | {
            p.name for p in model.local_dir.glob("*.json") if p.name != "config.json"
        }
        assert (repo / "model.safetensors").read_bytes() == (model.local_dir / "model.safetensors").read_bytes()
        card = (repo / "README.md").read_text()
        assert f'load_model("cnmc-test/cnmc-{model.local_dir.name}")' in card and "cnmc-all-detector/" not in card
        assert all(f"]({plot})" in card for plot in plots)  # relative links, resolved beside the card
        assert f"cnmc-test/cnmc-{model.local_dir.name}: would get" in printed
    for model in UNSHIPPED:  # reported, not silently dropped
        assert f"cnmc-test/cnmc-{model.local_dir.name}: skipped: models/{model.local_dir.name} holds no" in printed
    space = out / "cnmc-all-detector"
    meta = front_matter(space / "README.md")
    assert meta["sdk"] == "gradio" and meta["models"] == [f"cnmc-test/cnmc-{m.local_dir.name}" for m in SHIPPED]
    assert (space / "app.py").is_file() and (space / "serving" / "hub_revisions.json").is_file()
    assert not (space / "Dockerfile").exists() and "Space cnmc-test/cnmc-all-detector: would get" in printed


def test_publish_dry_run_of_a_docker_space(tmp_path):
    out = tmp_path / "publish"
    assert publish.main(["--org", "cnmc-test", "--dry-run", "--out", str(out), "--docker", "--space", "app"]) == 0
    meta = front_matter(out / "app" / "README.md")
    assert meta["sdk"] == "docker" and meta["app_port"] == 7860 and "sdk_version" not in meta
    assert (out / "app" / "Dockerfile").read_bytes() == (registry.ROOT / "Dockerfile").read_bytes()


def test_publish_uploads_each_model_pins_its_commit_then_the_space(fake_hub, tmp_path, capsys):
    revisions = tmp_path / "hub_revisions.json"
    assert publish.main(["--org", "not an org!", "--dry-run"]) == 2  # refused before anything is built
    assert "Invalid repo id" in capsys.readouterr().err
    print(publish.publish("cnmc-test", revisions_file=revisions))
    uploads = [(kwargs["repo_id"], kwargs["repo_type"], files) for name, kwargs, files in fake_hub if files]
    assert [(repo, kind) for repo, kind, _ in uploads] == [
        *((f"cnmc-test/cnmc-{m.local_dir.name}", "model") for m in SHIPPED),
        ("cnmc-test/cnmc-all-detector", "space"),
    ]
    assert all("model.safetensors" in files for _, kind, files in uploads if kind == "model")
    pinned = json.loads(revisions.read_text())
    assert set(pinned) == {f"cnmc-test/cnmc-{m.local_dir.name}" for m in SHIPPED}
    models = registry.registered_models("cnmc-test", pinned)
    assert all(m.revision == pinned[m.repo_id] for m in models if m.repo_id in pinned)
    assert (
        "add_space_variable",
        {"repo_id": "cnmc-test/cnmc-all-detector", "CNMC_HUB_ORG": "cnmc-test"},
        None,
    ) in fake_hub
    printed = capsys.readouterr().out
    assert all(f"pinned at {sha}" in printed for sha in pinned.values()) and "skipped" in printed
