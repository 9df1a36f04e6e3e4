"""Document → IHE XDS.b (ebRIM 3.0) request bodies for the DMP's SOAP services, and the pure reading of
their answers. No I/O, no clock, no settings: every time and identifier is passed in.

- :mod:`.submission`: ITI-41 ``ProvideAndRegisterDocumentSetRequest`` (documents, signature entry,
  ``signs`` and ``RPLC`` associations);
- :mod:`.queries`: ITI-18 GetDocuments / FindDocuments, ITI-57 availability-status and metadata updates;
- :mod:`.td02`: the TD0.2 ``PRPA_IN201307UV02`` query and its answer;
- :mod:`.responses`: RegistryResponse / AdhocQueryResponse reading.
"""
