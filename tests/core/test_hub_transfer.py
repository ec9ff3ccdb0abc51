"""Hub traffic against a local stand-in of the Hub (tests/hub_server.py, HF_ENDPOINT), so
no call leaves the machine: engine downloads report bytes and stop on cancel; an upload
creates the repo, commits every file, reports progress, and publishes a card that names
Hub inputs by id and never a local path."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from mergestudio.engine.merge import merge
from mergestudio.errors import Cancelled, ExportError, SourceError
from mergestudio.events import CancelToken, Progress
from mergestudio.export.hub import upload_model
from mergestudio.io.hub import hub_cache_dir, hub_transfer, published_model_id
from mergestudio.io.sources import open_model

from tests.hub_server import FakeHub, serve_fake_hub


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants

    with serve_fake_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # read once at import: an earlier test (the window's set HF_HUB_OFFLINE) may have fixed it
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HOME", raising=False)
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_0123456789")
        yield hub


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_hub_cache_follows_hf_variables_then_the_studio_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_dir: Path
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert hub_cache_dir() == isolated_cache_dir / "hub"
    assert hub_cache_dir(tmp_path / "settings") == tmp_path / "settings" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hub_cache_dir(tmp_path / "settings") == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    assert hub_cache_dir(tmp_path / "settings") == tmp_path / "hf-cache"


def test_published_ids_never_name_a_local_path(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    assert published_model_id("acme/tiny@main") == "acme/tiny"
    assert published_model_id(str(snapshot)) == "acme/tiny"
    assert published_model_id(str(tmp_path)) is None
    assert published_model_id("acme/base+acme/lora") is None


def test_download_reports_bytes_into_the_studio_cache(
    fake_hub: FakeHub, make_checkpoint: Callable[..., Path], isolated_cache_dir: Path
) -> None:
    folder = make_checkpoint("published", seed=2)
    commit = fake_hub.publish("acme/tiny", _files(folder))
    events: list[object] = []
    with hub_transfer(events.append, None):
        source = open_model("acme/tiny")
    assert source.revision == commit
    assert source.root.is_relative_to(isolated_cache_dir / "hub" / "models--acme--tiny")
    downloads = [e for e in events if isinstance(e, Progress) and e.job == "download"]
    total = sum(len(b) for b in _files(folder).values())
    assert downloads and downloads[-1].bytes_done == downloads[-1].bytes_total == total
    assert all(a.bytes_done <= b.bytes_done for a, b in itertools.pairwise(downloads))
    source.close()


def test_download_stops_on_cancel(
    fake_hub: FakeHub, make_checkpoint: Callable[..., Path], isolated_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_checkpoint("big", hidden=256, intermediate=512)  # ~2.5 MB of weights
    fake_hub.publish("acme/big", _files(folder))
    fake_hub.slow_bytes_per_s = 1_000_000  # a few seconds: time to cancel mid-file
    import huggingface_hub.constants

    # huggingface_hub reports (and so can be stopped) once per chunk read, 10 MB by default
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    cancel = CancelToken()
    seen: list[Progress] = []

    def cancel_inside_the_weights(event: object) -> None:
        if isinstance(event, Progress) and event.bytes_done > 200_000:  # the other files are tiny
            seen.append(event)
            cancel.cancel()

    with pytest.raises(Cancelled), hub_transfer(cancel_inside_the_weights, cancel):
        open_model("acme/big")
    weights = len(_files(folder)["model.safetensors"])
    assert seen and seen[0].bytes_done < weights
    snapshots = list((isolated_cache_dir / "hub" / "models--acme--big").glob("snapshots/*/model.safetensors"))
    assert snapshots == []  # nothing that looks like a finished download
    with pytest.raises(SourceError, match="acme/nothing"):
        open_model("acme/nothing")


def test_upload_creates_the_repo_commits_every_file_and_publishes_hub_ids_only(
    fake_hub: FakeHub, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    base = make_checkpoint("base", seed=0)
    fake_hub.publish("acme/base", _files(base))
    local_tune = make_checkpoint("my-private-tune", seed=1)
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": "acme/base",
        "models": [{"model": str(local_tune), "parameters": {"weight": 0.5}}],
    }
    out = tmp_path / "merged"
    merge(recipe, out, device="cpu")
    assert str(local_tune) in (out / "README.md").read_text()  # the local card keeps the path
    events: list[object] = []
    result = upload_model(out, "me/tiny-merge", private=True, events=events.append)

    assert fake_hub.created == {"me/tiny-merge": True}
    uploaded = fake_hub.repos["me/tiny-merge"]
    local = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(uploaded) == set(local)
    assert uploaded["model.safetensors"] == local["model.safetensors"]  # through the LFS batch API
    assert ("PUT", f"/lfs-upload/{__import__('hashlib').sha256(local['model.safetensors']).hexdigest()}") in fake_hub.requests
    card = uploaded["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == ["acme/base"]
    assert "merge" in front["tags"]
    assert "## Recipe" in card and "task_arithmetic" in card and "my-private-tune" in card
    for name, data in uploaded.items():
        assert str(tmp_path).encode() not in data, name
    progress = [e for e in events if isinstance(e, Progress) and e.job == "upload"]
    assert progress[-1].bytes_done == progress[-1].bytes_total == sum(len(d) for d in uploaded.values())
    assert all(a.bytes_done <= b.bytes_done for a, b in itertools.pairwise(progress))
    assert result.commit and result.files == len(local)
    assert len(fake_hub.commits) == 1


def test_upload_cancel_commits_nothing_and_bad_folders_are_refused(
    fake_hub: FakeHub, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_checkpoint("model", hidden=128, intermediate=256)
    cancel = CancelToken()

    def cancel_on_first_bytes(event: object) -> None:
        if isinstance(event, Progress) and event.bytes_done > 0:
            cancel.cancel()

    with pytest.raises(Cancelled):
        upload_model(folder, "me/never", events=cancel_on_first_bytes, cancel=cancel)
    assert fake_hub.commits == []
    with pytest.raises(ExportError, match="not a Hub repo id"):
        upload_model(folder, "no-slash")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="config.json"):
        upload_model(empty, "me/empty")
    assert [r for r in fake_hub.requests if r[0] == "POST" and "create" in r[1]] == [("POST", "/api/repos/create")]


def test_cli_upload_and_export_gguf_commands(
    fake_hub: FakeHub, make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from mergestudio.cli.main import main

    folder = make_checkpoint("model")
    assert main(["upload", str(folder), "me/cli-model", "--json", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["repo_url"] == f"{fake_hub.url}/me/cli-model" and printed["files"] == 5  # + a card
    assert "base_model" not in fake_hub.repos["me/cli-model"]["README.md"].decode()  # no recipe, no inputs
    assert fake_hub.created == {"me/cli-model": False}
    assert "hf_not_a_real_token" not in json.dumps(printed)
    assert main(["export-gguf", str(folder), str(tmp_path / "m.gguf"), "-q"]) == 1  # no tokenizer: refused
    assert "no tokenizer GGUF can store" in capsys.readouterr().err
    assert not (tmp_path / "m.gguf").exists()
