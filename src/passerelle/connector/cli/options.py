"""Options several commands share (same name, same meaning, same help)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file", exists=True, dir_okay=False)
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where the journal and run files live")]
PatientOpt = Annotated[str, typer.Option("--patient", help="Patient identifier (INS)")]
DocumentOpt = Annotated[str, typer.Option("--document", help="Document unique id")]
SinceOpt = Annotated[datetime | None, typer.Option("--since", help="At or after (ISO time)")]
UntilOpt = Annotated[datetime | None, typer.Option("--until", help="Before (ISO time)")]
InitOpt = Annotated[
    bool, typer.Option("--init", help="Create an empty journal when there is none (else a missing one is an error)")
]
