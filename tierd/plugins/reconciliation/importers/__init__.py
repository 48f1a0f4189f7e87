"""The statement formats this module brings: CAMT.053, MT940/MT942, OFX, CSV.

Each is a :class:`tierd.core.registry.StatementImporter` registered through
the ``tierd_register_statement_importers`` hook, exactly as a third-party
format would be; the import pipeline only ever looks formats up in
``daemon.registries.statement_importers``.
"""

from .camt053 import Camt053Importer
from .csv import CsvImporter
from .detect import detect_format
from .mt940 import Mt940Importer
from .ofx import OfxImporter


def builtin_importers():
    """Fresh instances of the built-in importers."""
    return [Camt053Importer(), Mt940Importer(), OfxImporter(), CsvImporter()]


__all__ = ["Camt053Importer", "CsvImporter", "Mt940Importer", "OfxImporter", "builtin_importers", "detect_format"]
