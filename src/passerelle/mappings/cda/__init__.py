"""CDA R2: safe parsing (:mod:`.safe_xml`), header → Document (:mod:`.reader`), code tables
(:mod:`.codes`) and the one CDA writer every generated document is built with (:mod:`.writer`)."""
