"""Model sources: resolve a reference (local folder, single file, Hub repo) to a
``ModelSource`` that knows every tensor's name, shape and dtype without reading data."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergestudio.architectures import ModelLayout, layout_of
from mergestudio.architectures.names import config_layer_count
from mergestudio.errors import SourceError
from mergestudio.io.hub import download_snapshot
from mergestudio.io.safetensors_file import MappedFiles, TensorInfo, read_header

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_INDEX_FILE = "model.safetensors.index.json"
_FINGERPRINT_BLOCKS = 64
_HUB_REFERENCE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


@dataclass
class ModelSource:
    """A model's tensors (metadata only until read) and its config.

    ``reference`` is what the user wrote; ``root`` the folder holding the files;
    ``revision`` a Hub commit hash when the model came from the Hub.
    """

    reference: str
    root: Path
    tensors: dict[str, TensorInfo]
    config: dict[str, Any] | None
    files: tuple[Path, ...]
    revision: str | None = None
    _headers: tuple[bytes, ...] = ()
    _mapped: MappedFiles = field(default_factory=MappedFiles, repr=False)
    _loaded: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _layout: ModelLayout | None = field(default=None, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    @property
    def parameter_count(self) -> int:
        return sum(info.numel for info in self.tensors.values())

    @property
    def architecture(self) -> str | None:
        architectures = (self.config or {}).get("architectures")
        if isinstance(architectures, list) and architectures:
            return str(architectures[0])
        model_type = (self.config or {}).get("model_type") or (self.config or {}).get("_class_name")
        return str(model_type) if model_type else None

    @property
    def layout(self) -> ModelLayout:
        """The model's family, blocks and lanes (computed once from config and names)."""
        if self._layout is None:
            self._layout = layout_of(self.config, self.tensors)
        return self._layout

    @property
    def num_layers(self) -> int:
        """Layers of the stack ``slices`` count (the config's count when it states one);
        for families without such a stack (UNets, encoder-decoders), their block count."""
        layout = self.layout
        if layout.family.slice_stack is None:
            return len(layout.blocks)
        from_config = config_layer_count(self.config)
        return from_config if from_config is not None else layout.layer_count

    @property
    def dtypes(self) -> dict[str, int]:
        """Parameter count per dtype code."""
        counts: dict[str, int] = {}
        for info in self.tensors.values():
            counts[info.dtype] = counts.get(info.dtype, 0) + info.numel
        return counts

    def read(self, name: str) -> torch.Tensor:
        """One tensor, as a read-only view (safetensors) or from the loaded pickle."""
        if self._loaded is not None:
            return self._loaded[name]
        try:
            info = self.tensors[name]
        except KeyError:
            raise SourceError(f"{self.reference}: has no tensor {name!r}") from None
        return self._mapped.tensor(info)

    def input_bytes(self, name: str) -> int:
        """Bytes read from disk to produce tensor ``name`` (its stored size here; an
        adapted model adds its adapter's tensors)."""
        return self.tensors[name].nbytes

    def prefetch(self, name: str, populate: bool = False) -> None:
        """Start reading tensor ``name``'s pages; with ``populate``, map them now
        (``MappedFiles.prefetch``)."""
        if self._loaded is None and name in self.tensors:
            self._mapped.prefetch(self.tensors[name], populate)

    def fingerprint(self) -> str:
        """sha256 over every file's header, size and 64 evenly spaced 4 KiB blocks of its
        data: tells fine-tunes of one architecture apart (their headers are identical)
        without hashing gigabytes."""
        digest = hashlib.sha256()
        for path, header in zip(self.files, self._headers, strict=False):
            digest.update(header)
            size = path.stat().st_size
            digest.update(str(size).encode())
            with path.open("rb") as handle:
                for block in range(_FINGERPRINT_BLOCKS):
                    handle.seek(size * block // _FINGERPRINT_BLOCKS)
                    digest.update(handle.read(4096))
        return digest.hexdigest()

    def close(self) -> None:
        self._mapped.close()


def is_hub_reference(reference: str) -> bool:
    return _HUB_REFERENCE.match(reference) is not None and not Path(reference).exists()


def open_model(
    reference: str | Path,
    *,
    allow_pickle: bool = False,
    token: str | bool | None = None,
) -> ModelSource:
    """Resolve a local folder, a ``.safetensors`` file, or ``org/name[@revision]``;
    ``BASE+ADAPTER`` or a LoRA adapter on its own opens the base with the adapter applied
    (``io.adapters``)."""
    from mergestudio.io import adapters

    text = str(reference)
    split = adapters.split_adapter_reference(text)
    if split is not None:
        return adapters.open_adapted_model(*split, allow_pickle=allow_pickle, token=token, reference=text)
    path = Path(text).expanduser()
    if path.exists():
        if adapters.is_adapter_path(path):
            return adapters.open_adapted_model(None, text, allow_pickle=allow_pickle, token=token)
        return _open_local(text, path, allow_pickle=allow_pickle, revision=None)
    match = _HUB_REFERENCE.match(text)
    if match is None:
        raise SourceError(f"{text}: no such file or folder, and not a Hub id (org/name[@revision])")
    folder, revision = _download_from_hub(match["repo"], match["revision"], token)
    if adapters.is_adapter_path(folder):
        return adapters.open_adapted_model(None, text, allow_pickle=allow_pickle, token=token)
    return _open_local(text, folder, allow_pickle=allow_pickle, revision=revision)


def _download_from_hub(repo_id: str, revision: str | None, token: str | bool | None) -> tuple[Path, str]:
    """Fetch (or find in the studio's Hub cache, ``io.hub``) a snapshot. Returns its folder
    and commit hash."""
    return download_snapshot(repo_id, revision, token=token)


def _open_local(reference: str, path: Path, *, allow_pickle: bool, revision: str | None) -> ModelSource:
    if path.is_file():
        files = [path]
        root = path.parent
    else:
        root = path
        files = _weight_files(path)
    config = _read_config(root) if (root / "config.json").exists() else None
    if files[0].suffix in PICKLE_SUFFIXES:
        return _open_pickle(reference, root, files, config, allow_pickle, revision)
    headers = [read_header(file) for file in files]
    tensors: dict[str, TensorInfo] = {}
    for header in headers:
        for name, info in header.tensors.items():
            if name in tensors:
                raise SourceError(f"{header.path}: tensor {name!r} also stored in {tensors[name].file}")
            tensors[name] = info
    if not tensors:
        raise SourceError(f"{reference}: holds no tensors")
    return ModelSource(
        reference=reference,
        root=root,
        tensors=tensors,
        config=config,
        files=tuple(files),
        revision=revision,
        _headers=tuple(h.header_bytes for h in headers),
    )


def _weight_files(folder: Path) -> list[Path]:
    index = folder / _INDEX_FILE
    if index.exists():
        return _files_from_index(index)
    # Other libraries' own names (diffusers: diffusion_pytorch_model.safetensors.index.json)
    other_indexes = sorted(folder.glob("*.safetensors.index.json"))
    if other_indexes:
        return _files_from_index(other_indexes[0])
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    pickles = sorted(p for suffix in PICKLE_SUFFIXES for p in folder.glob(f"*{suffix}"))
    if pickles:
        return pickles
    raise SourceError(f"{folder}: no .safetensors weights found in this folder")


def _files_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SourceError(f"{index}: not a valid safetensors index ({error})") from error
    files = []
    for name in dict.fromkeys(weight_map.values()):
        file = index.parent / name
        if not file.exists():
            raise SourceError(f"{index}: lists shard {name!r}, which is missing")
        files.append(file)
    return files


def _read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return config


def _open_pickle(
    reference: str,
    root: Path,
    files: Iterable[Path],
    config: dict[str, Any] | None,
    allow_pickle: bool,
    revision: str | None,
) -> ModelSource:
    files = list(files)
    if not allow_pickle:
        raise SourceError(
            f"{files[0]}: pickle checkpoints can run arbitrary code when loaded, so they are "
            "refused; convert to safetensors, or pass --allow-pickle to load with "
            "weights_only=True"
        )
    import torch

    from mergestudio.io.dtypes import from_torch

    loaded: dict[str, torch.Tensor] = {}
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # torch raises many types for bad pickles
            raise SourceError(f"{file}: cannot load with weights_only=True ({error})") from error
        if not isinstance(state, dict):
            raise SourceError(f"{file}: expected a state dict of tensors")
        for name, tensor in state.items():
            if isinstance(tensor, torch.Tensor):
                loaded[name] = tensor
                tensors[name] = TensorInfo(
                    name,
                    from_torch(tensor.dtype),
                    tuple(tensor.shape),
                    file,
                    0,
                    tensor.numel() * tensor.element_size(),
                )
    return ModelSource(
        reference=reference,
        root=root,
        tensors=tensors,
        config=config,
        files=tuple(files),
        revision=revision,
        _loaded=loaded,
    )
