"""Passerelle: an on-premises gateway that feeds clinical documents into patients' national health spaces."""

__version__ = "0.1.0"
