"""Commands for people setting up or testing an interface: ``sandbox``, ``demo``, ``send``, ``samples``
and the ``map`` preview."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from passerelle.connector.cli.common import load
from passerelle.connector.cli.options import ConfigOpt, DataDirOpt


def sandbox(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="HTTP port of the sandbox")] = 8090,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    data_dir: DataDirOpt = None,
    dmp_ca_file: Annotated[Path | None, typer.Option(help="PEM test CA for VIHF/XAdES checks")] = None,
    dmp_answer: Annotated[str | None, typer.Option(help="ITI-41 answers: multipart or plain")] = None,
) -> None:
    """Run the sandbox patient space alone (FHIR at /fhir, DMP at /si-dmp-server/v2/services, pages at /)."""
    import yaml

    from passerelle.observability.logs import setup_logging
    from passerelle.sandbox.config import SandboxConfig
    from passerelle.sandbox.server import run_sandbox

    data: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        section = loaded.get("sandbox", loaded) if isinstance(loaded, dict) else None
        if not isinstance(section, dict):
            typer.echo("configuration error: the sandbox settings must be a mapping", err=True)
            raise typer.Exit(2)
        data = dict(section)
    if data_dir is not None:
        data["data_dir"] = data_dir
    data.setdefault("data_dir", Path("var/sandbox"))
    data.update({k: v for k, v in (("dmp_ca_file", dmp_ca_file), ("dmp_answer", dmp_answer)) if v is not None})
    setup_logging("INFO")
    run_sandbox(SandboxConfig.model_validate(data), host, port)


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running after the summary")] = False,
    count: Annotated[int, typer.Option(help="Number of synthetic lab reports")] = 5,
    data_dir: DataDirOpt = None,
    transport: Annotated[str, typer.Option(help="mhd | dmp (the DMP SOAP services, with a dev PKI)")] = "mhd",
) -> None:
    """End to end on embedded defaults: sandbox + gateway, 5 synthetic lab reports over MLLP, a summary."""
    from passerelle.connector.cli.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(count=count, keep=keep, data_dir=data_dir, transport=transport)))


def send(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Files of HL7v2 messages")],
    host: Annotated[str, typer.Option(help="MLLP host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MLLP port")] = 2575,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK")] = 30.0,
) -> None:
    """Send messages over MLLP; print one line per message: MSA-1, MSA-2, file name (tab-separated)."""
    from passerelle.connector.cli.send import send_files

    items = [(str(path), path.read_bytes()) for path in files]
    results = asyncio.run(send_files(host, port, items, timeout=timeout))
    for r in results:
        typer.echo(f"{r.code}\t{r.control_id}\t{r.source}")
    raise typer.Exit(0 if results and all(r.code in ("AA", "CA") for r in results) else 1)


def samples(
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    count: Annotated[int, typer.Option(help="How many messages")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same messages)")] = 1,
) -> None:
    """Write synthetic CI-SIS ORU^R01 messages (test INS, generated CDA), one per file."""
    from passerelle.mappings.samples.messages import write_samples

    paths = write_samples(out, count, seed, datetime.now(UTC).replace(microsecond=0))
    for path in paths:
        typer.echo(str(path))


def map_files(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="HL7v2, CDA or DICOM files")],
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    fmt: Annotated[str | None, typer.Option("--format", help="hl7v2 | cda | dicom (default: detected)")] = None,
    config: ConfigOpt = None,
    transport: Annotated[str, typer.Option(help="mhd (ITI-65 bundle) | dmp (the exact ITI-41 request)")] = "mhd",
) -> None:
    """Preview: decode, apply identity rules and map files; write content, metadata and the ITI-65 bundle
    (or, with --transport dmp, the exact ITI-41 request). Nothing is journaled or delivered."""
    from passerelle.connector.cli.preview import preview_files
    from passerelle.connector.dispatch.lab import CrBioLabMapper
    from passerelle.queue.memory import MemoryJournal

    settings = load(config)
    lab = CrBioLabMapper(
        MemoryJournal(),
        settings.lab,
        settings.hl7,
        oid_root=settings.oid_root,
        test_environment=settings.test_environment,
    )
    if transport == "dmp":
        from passerelle.connector.cli.dmp import write_dmp_requests

        raise typer.Exit(1 if write_dmp_requests(settings, files, out, fmt, lab.preview) else 0)
    results = preview_files(
        files,
        out,
        fmt=fmt,
        test_environment=settings.test_environment,
        now=datetime.now(UTC),
        source_id=settings.space.source_id,
        lab_mapper=lab.preview,
        decode=settings.hl7.decode_incoming,
    )
    failed = 0
    for result in results:
        typer.echo(result.summary_line())
        failed += 0 if result.ok else 1
    raise typer.Exit(1 if failed else 0)
