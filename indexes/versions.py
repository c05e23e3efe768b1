"""Index versions inside one store directory, for swapping the embedder safely.

The store directory itself is version ``v1``; later versions live in ``versions/NAME/``, each a
complete store (its own embedder, vectors, BM25 and a copy of the chunks). ``ACTIVE`` names the
version that is opened; it is replaced atomically, so a crash while building a new version leaves
the old one active, and the previous versions stay for rollback. A version's note is written last, when
it is complete: one without it was interrupted while it was built and cannot be activated.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from indexes.errors import StoreError
from indexes.files import atomic_write

ROOT_VERSION = "v1"
_ACTIVE = "ACTIVE"
_NOTE = "VERSION_NOTE"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    embedder: str
    dim: int
    active: bool
    note: str
    complete: bool = True


def version_path(root: Path, name: str) -> Path:
    root = Path(root)
    return root if name == ROOT_VERSION else root / "versions" / name


def portable_model(model: str, folder: Path) -> str:
    """``model`` as written into a settings file in ``folder``: relative to it (``./`` or ``../`` first, which no hub
    id has) when it is one of the store's own fine-tuned models (``ROOT/models/NAME``, with ``folder`` inside
    ``ROOT``), so a store that is moved or copied still finds them; anything else as given."""
    path = Path(model)
    if not path.is_absolute() or path.parent.name != "models":
        return model
    path, folder = path.resolve(), Path(folder).resolve()
    if not folder.is_relative_to(path.parent.parent):
        return model
    rel = os.path.relpath(path, folder)
    return rel if rel.startswith("..") else f"./{rel}"


def located_model(model: str, folder: Path) -> str:
    """The model a settings file in ``folder`` names: a relative path made absolute; an absolute one that is gone
    (a store moved before paths were written relative) found again in the store's ``models/`` if it is there."""
    if model.startswith(("./", "../")):  # a user's own relative path (from where they ran) is kept if not ours
        ours = Path(folder) / model
        return str(ours.resolve()) if ours.is_dir() else model
    path = Path(model)
    if path.is_absolute() and path.parent.name == "models" and not path.exists():
        for root in [Path(folder), *Path(folder).parents][:3]:  # a version's or a student's folder, or the store
            if (root / "models" / path.name).is_dir():
                return str((root / "models" / path.name).resolve())
    return model


def active_version(root: Path) -> str:
    marker = Path(root) / _ACTIVE
    return marker.read_text().strip() if marker.exists() else ROOT_VERSION


def active_path(root: Path) -> Path:
    return version_path(root, active_version(root))


def list_versions(root: Path) -> list[VersionInfo]:
    root = Path(root)
    names = [ROOT_VERSION] if (root / "store.json").exists() else []
    if (root / "versions").is_dir():
        names += sorted((p.name for p in (root / "versions").iterdir() if (p / "store.json").exists()), key=_order)
    active = active_version(root)
    out = []
    for name in names:
        path = version_path(root, name)
        settings = json.loads((path / "store.json").read_text())
        note_file = path / _NOTE
        out.append(VersionInfo(name, path, located_model(settings["embedder"], path), settings["dim"], name == active,
                               note_file.read_text().strip() if note_file.exists() else "",
                               name == ROOT_VERSION or note_file.exists()))
    return out


def finish_version(path: Path, note: str) -> None:
    """Mark a fully built version as complete (the last write of a build, atomic)."""
    atomic_write(Path(path) / _NOTE, lambda tmp: tmp.write_text(note + "\n"))


def remove_unfinished(root: Path) -> list[str]:
    """Delete the versions (and their fine-tuned models) that a stopped build left unfinished; never the active one."""
    removed = []
    for v in list_versions(root):
        if not v.complete and not v.active:
            shutil.rmtree(v.path)
            shutil.rmtree(Path(root) / "models" / f"{v.name}-embedder", ignore_errors=True)
            removed.append(v.name)
    return removed


def next_version_name(root: Path) -> str:
    taken = [v.name for v in list_versions(root)]
    return f"v{max((_order(n)[0] for n in taken), default=1) + 1}"


def activate(root: Path, name: str) -> None:
    """Make ``name`` the version that ``open`` returns (one atomic rename)."""
    root = Path(root)
    versions = {v.name: v for v in list_versions(root)}
    if name not in versions:
        raise StoreError(f"store {root} has no version {name!r} (versions: {', '.join(versions) or 'none'})")
    if not versions[name].complete:
        raise StoreError(f"version {name} of {root} is unfinished: it was interrupted while it was built. "
                         "Activate another version, or run `rag finetune embedder` again to build a new one")
    atomic_write(root / _ACTIVE, lambda tmp: tmp.write_text(name + "\n"))


def _order(name: str) -> tuple[int, str]:
    digits = name[1:] if name.startswith("v") else ""
    return (int(digits), name) if digits.isdigit() else (0, name)
