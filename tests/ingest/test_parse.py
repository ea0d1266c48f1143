"""What ingest's parser refuses before de-identification, independent of import order."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from mida.errors import QuarantineError, QuarantineReason
from mida.ingest.parse import validate
from tests.factories import make_dataset

DEFLATED_IMAGE_FRAME = UID("1.2.840.10008.1.2.8.1")


@pytest.mark.parametrize("load_pynetdicom", [False, True])
def test_transfer_syntax_pydicom_cannot_decode_is_refused_whatever_was_imported(
    load_pynetdicom: bool,
) -> None:
    # pynetdicom adds newer transfer syntaxes to pydicom's UID dictionary on import; the
    # verdict must stay the same in a DIMSE node process and in a plain ingest process.
    if load_pynetdicom:
        import pynetdicom  # noqa: F401
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = DEFLATED_IMAGE_FRAME
    with pytest.raises(QuarantineError) as caught:
        validate(ds)
    assert caught.value.reason == QuarantineReason.UNSUPPORTED_TRANSFER_SYNTAX
    assert "dcmconv" in str(caught.value)


def test_known_transfer_syntax_passes() -> None:
    validate(make_dataset())
