"""The DRIMbox ITI-41 capture read by the sandbox's MIME layer in lenient mode (LF framing, base64 part)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from passerelle.sandbox.dmp import mime
from passerelle.sandbox.dmp.common import SoapFault, parse_xml

#: the DRIMbox ITI-41 capture of the shared corpus (``PASSERELLE_CORPUS`` or ../shared/corpus)
CAPTURE = Path("xds") / "fr-drimbox-xds" / "publication.xml"
HEADER = 'multipart/related; boundary="MIMEBoundary_Bound"; type="application/xop+xml"; start="<0.1>"; start-info="application/soap+xml"'


def test_capture_parts_and_kos_hash(corpus_dir: Path) -> None:
    packet = mime.read_body(HEADER, (corpus_dir / CAPTURE).read_bytes(), lenient=True)
    assert sorted(packet.parts) == ["0.2", "0.3"]
    kos = packet.parts["0.2"]
    assert len(kos) == 8450
    assert hashlib.sha1(kos).hexdigest().startswith("58408c11")
    envelope = parse_xml(packet.envelope)
    resolved = mime.resolve_includes(envelope, packet)
    assert sorted(len(v) for v in resolved.values())[-1] == 8450
    with pytest.raises(SoapFault) as refused:
        mime.read_body(HEADER, (corpus_dir / CAPTURE).read_bytes(), lenient=False)
    assert refused.value.subcode == "DMPInvalidMimePackage"
