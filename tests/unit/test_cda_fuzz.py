"""Property tests: whatever the bytes, the CDA path raises only PasserelleError (never a foreign exception)."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passerelle.errors import PasserelleError
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.cda.safe_xml import CdaLimits
from passerelle.mappings.document import Provenance
from passerelle.mappings.hl7v2.decode import decode_message
from passerelle.mappings.hl7v2.documents import map_hl7_message
from tests.support.cda_samples import minimal_cda
from tests.support.volet import FLAG_ORDER

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LIMITS = CdaLimits(max_bytes=64 * 1024, max_depth=50, max_elements=5000)

VALID = minimal_cda(
    display="CR",
    before_body='<documentationOf><serviceEvent><effectiveTime><low value="20260101"/></effectiveTime></serviceEvent>'
    "</documentationOf>\n  ",
    body='<component><nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0=</text></nonXMLBody>'
    "</component>",
)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, len(VALID))),
)
def test_mutated_cda_raises_only_passerelle_errors(edits: list[tuple[int, int]], cut: int | None) -> None:
    raw = _mutate(VALID, edits, cut)
    with contextlib.suppress(PasserelleError):
        map_cda_document(raw, test_environment=True, now=NOW, limits=LIMITS)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_passerelle_errors(raw: bytes) -> None:
    with contextlib.suppress(PasserelleError):
        map_cda_document(raw, test_environment=True, now=NOW, limits=LIMITS)


FLAGS = "".join(
    f"\rOBX|{n}|CE|{code}^l^MetaDMPMSS||{'Y' if code == 'DESTDMP' else 'N'}^^expandedYes-NoIndicator||||||F|"
    for n, code in enumerate(FLAG_ORDER, start=2)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.one_of(st.none(), st.integers(0, len(VALID))),
)
def test_oru_with_a_mutated_embedded_cda_raises_only_passerelle_errors(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    payload = base64.b64encode(_mutate(VALID, edits, cut)).decode()
    text = (
        "MSH|^~\\&|SIL|LAB|PFI|X|20260101120000||ORU^R01^ORU_R01|M1|P|2.5|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2\r"
        "PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||TEST^ALEX^^^^^L||19790328|F"
        "|||||||||||||||||||||||VALI\r"
        "ORC|NW|1\rOBR|1|1||11502-2^CR^LN\r"
        f"OBX|1|ED|11502-2^CR^LN||^TEXT^XML^Base64^{payload}||||||F|\r"
        "PRT||UC||SB^^participation|801234567866^DIAZ^Thierry^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
        "|||labo^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^1120459876" + FLAGS
    )
    try:
        msg = decode_message(text.encode())
        map_hl7_message(msg, test_environment=True, now=NOW, provenance=Provenance())
    except PasserelleError:
        pass


def test_the_unmutated_inputs_are_valid() -> None:
    assert map_cda_document(VALID, test_environment=True, now=NOW, limits=LIMITS).unique_id == "1.2.250.1.999.7.1"
