"""A small valid CDA R2 document (French header: templateId, INS-NIR test patient) for the tests that
need one and not a corpus file; each test varies only what it is about."""

from __future__ import annotations

STRUCTURED_BODY = "<component><structuredBody/></component>"


def minimal_cda(
    uid: str = "1.2.250.1.999.7.1",
    *,
    set_id: str = "1.2.250.1.999.7",
    title: str = "Compte rendu",
    display: str = "CR d'examens biologiques",
    ins: str = "279035121518989",
    prolog: str = "",
    after_title: str = "",
    before_body: str = "",
    body: str = STRUCTURED_BODY,
) -> bytes:
    """``prolog`` goes between the XML declaration and the root (a processing instruction, with its
    newline), ``after_title`` right after ``<title>``, ``before_body`` (with its indentation) before
    ``body``, the last element."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
{prolog}<ClinicalDocument xmlns="urn:hl7-org:v3">
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="{uid}"/>
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="{display}"/>
  <title>{title}</title>{after_title}
  <effectiveTime value="20260101120000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="{set_id}"/>
  <versionNumber value="1"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.10" extension="{ins}"/>
    <patient><name><given qualifier="BR">ALEX</given><family qualifier="BR">TEST</family></name>
      <administrativeGenderCode code="F"/><birthTime value="19790328"/></patient>
  </patientRole></recordTarget>
  {before_body}{body}
</ClinicalDocument>""".encode()
