"""The sandbox's DMP SOAP services (TD0.2, ITI-41, ITI-18, ITI-57), written independently of the gateway.

Mounted by :mod:`passerelle.sandbox.dmp.routes` at ``/si-dmp-server/v2/services/{patients,repository,
registry}``. A request goes through the layers in the order a real platform checks them: transport
and MIME (:mod:`.mime`), SOAP 1.2 and WS-Addressing (:mod:`.soap`), the VIHF (:mod:`.vihf`), then the
ebRIM metadata (:mod:`.ebrim`, :mod:`.rules`), the XAdES signature of the submission set (:mod:`.xades`)
and the registry actions on the sandbox's one store (:mod:`.registry`). What each layer checks and
the codes it answers are listed in docs/sandbox.md.
"""
