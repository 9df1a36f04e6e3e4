"""The DMP's SOAP web services as a patient-space transport (``space.transport: dmp``).

:class:`passerelle.adapters.dmp.client.DmpSpace` implements the :class:`passerelle.adapters.space.PatientSpace`
port over TD0.2 (status), ITI-41 (publish, replace), ITI-18 (find a previous version) and ITI-57 (delete,
confidentiality change), with the VIHF token and the XAdES-signed submission set. See docs/dmp-transport.md.
"""
