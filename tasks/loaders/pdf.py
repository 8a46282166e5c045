"""PDF loader (pypdf, pure Python): page texts joined by paragraph breaks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

from embedline.tasks.config import PreprocessParams
from embedline.tasks.loaders.base import RejectedInput, RejectReason, make_document, read_bytes
from embedline.tasks.records import Document, Rejection


class PdfLoader:
    name = "pdf"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        data = read_bytes(path)
        if not data.lstrip()[:5] == b"%PDF-":
            raise RejectedInput(RejectReason.malformed_pdf, "no %PDF- header")
        logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly on minor defects
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise RejectedInput(RejectReason.unreadable, "encrypted PDF (a password is needed)")
            pages = [page.extract_text() or "" for page in reader.pages]
            info = reader.metadata
        except RejectedInput:
            raise
        except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RejectedInput(
                RejectReason.malformed_pdf, f"{type(exc).__name__}: {exc}"
            ) from None
        if not any(p.strip() for p in pages):
            raise RejectedInput(
                RejectReason.empty, f"no extractable text in {len(pages)} page(s) (scanned images?)"
            )
        title = str(info.title) if info is not None and info.title else ""
        yield make_document(
            source=rel,
            text="\n\n".join(pages),
            fmt=self.name,
            params=params,
            mode="prose",
            title=title,
            metadata={"pages": len(pages)},
        )
