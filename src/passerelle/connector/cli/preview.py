"""``passerelle map FILE... --out DIR``: the pure preview (``mappings/preview.py``) on files, with what
would be sent written to ``out_dir`` (docs/mapping.md).

For every document produced from an input file it writes:

* ``<stem>[.<n>].content.<xml|dcm|bin>``: the document bytes exactly as they would be sent;
* ``<stem>[.<n>].metadata.json``: :meth:`Document.metadata` (XDS/MHD metadata, hash, size);
* ``<stem>[.<n>].bundle.json``: the ITI-65 bundle (not for deletions, which are not bundles).

A refused file gives ``<stem>.refusal.json`` naming the rule broken (``rule`` = the error's reason
code, ``error`` = its class, ``detail`` = the PHI-free message, ``location``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from passerelle.mappings.document import Action, Code, Document
from passerelle.mappings.hl7v2.decode import Message
from passerelle.mappings.preview import (
    DEFAULT_CONTENT_TYPE,
    FORMATS,
    LabMapper,
    PreviewOptions,
    PreviewResult,
    preview,
    provide_bundle,
)

_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def _extension(doc: Document) -> str:
    if doc.mime_type == "application/dicom":
        return "dcm"
    if doc.mime_type.endswith("xml"):
        return "xml"
    return "bin"


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _stem(path: Path, used: set[str]) -> str:
    base = _SAFE_STEM.sub("_", path.stem) or "input"
    stem, n = base, 2
    while stem in used:
        stem = f"{base}-{n}"
        n += 1
    used.add(stem)
    return stem


def _write_document(result: PreviewResult, name: str, out_dir: Path, opts: PreviewOptions) -> PreviewResult:
    doc = result.document
    assert doc is not None
    content = out_dir / f"{name}.content.{_extension(doc)}"
    content.write_bytes(doc.content)
    files = [content, _write_json(out_dir / f"{name}.metadata.json", doc.metadata())]
    notes: list[str] = []
    try:
        bundle = provide_bundle(doc, opts)
    except ValueError as exc:  # the builder refuses e.g. a document without INS
        bundle = None
        notes.append(f"no bundle: {exc}")
    if bundle is not None:
        files.append(_write_json(out_dir / f"{name}.bundle.json", bundle))
    elif doc.action is Action.DELETE:
        notes.append("deletion: no ITI-65 bundle (sent as a delete request)")
    return replace(result, files=tuple(files), notes=tuple(notes))


def _write(
    results: list[PreviewResult], path: Path, stem: str, out_dir: Path, opts: PreviewOptions
) -> list[PreviewResult]:
    written: list[PreviewResult] = []
    for result in results:
        result = replace(result, source=path)
        if result.refusal is not None:
            written.append(replace(result, files=(_write_json(out_dir / f"{stem}.refusal.json", result.refusal),)))
            continue
        name = stem if len(results) == 1 else f"{stem}.{result.index}"
        written.append(_write_document(result, name, out_dir, opts))
    return written


def preview_files(
    paths: Iterable[Path],
    out_dir: Path,
    *,
    fmt: str | None = None,
    test_environment: bool = False,
    now: datetime,
    decode: Callable[[bytes], Message] | None = None,
    patient_id_map: Mapping[str, tuple[str, str]] | None = None,
    source_id: str = "",
    content_type: Code = DEFAULT_CONTENT_TYPE,
    lab_mapper: LabMapper | None = None,
) -> list[PreviewResult]:
    """Preview every file; returns one result per document written or per refused file."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    opts = PreviewOptions(
        test_environment=test_environment,
        now=now,
        decode=decode,
        patient_id_map=patient_id_map,
        source_id=source_id,
        content_type=content_type,
        lab_mapper=lab_mapper,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[PreviewResult] = []
    for path in map(Path, paths):
        results += _write(preview(path.read_bytes(), fmt, path.name, opts), path, _stem(path, used), out_dir, opts)
    return results
