"""E-mails: ``.eml`` (the standard library) and Outlook ``.msg`` (extract-msg, the ``msg`` extra). The subject is the
heading; sender, recipients and date open the text; the body is the plain-text part, else the HTML one; attachments
are named."""

from __future__ import annotations

import email
import email.policy
import io

from indexes.errors import require
from ingest.loaders.document import Builder, Document, LoadError
from ingest.loaders.html import load_html


def _write(out: Builder, subject: str, fields: dict[str, str], body: str, html: bool, attachments: list[str]) -> None:
    out.heading(1, subject or "(no subject)")
    out.paragraph("\n".join(f"{k}: {v}" for k, v in fields.items() if v))
    if html:
        try:
            out.document(load_html(body, out.source))
        except LoadError:
            pass
    else:
        out.paragraph(body)
    if attachments:
        out.paragraph("Attachments: " + ", ".join(attachments))


def load_eml(data: bytes, source: str) -> Document:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not msg.keys():
        raise LoadError("not an e-mail (no headers)")
    part = msg.get_body(preferencelist=("plain", "html"))
    body = part.get_content() if part is not None else ""
    attachments = [a.get_filename() or "(unnamed)" for a in msg.iter_attachments()]
    out = Builder(source)
    fields = {k: str(msg.get(k, "")) for k in ("From", "To", "Cc", "Date")}
    _write(out, str(msg.get("Subject", "")), fields, body, part is not None and part.get_content_subtype() == "html",
           attachments)
    return out.build("e-mail has no text")


def load_msg(data: bytes, source: str) -> Document:
    extract_msg = require("extract_msg", "msg", "extract-msg")
    try:
        msg = extract_msg.openMsg(io.BytesIO(data))
    except Exception as exc:
        raise LoadError(f"corrupt or unreadable Outlook message: {exc}") from exc
    try:
        field = lambda name: getattr(msg, name, None) or ""  # noqa: E731 - a contact or task has no body or sender
        body, html = field("body"), False
        if not body.strip() and field("htmlBody"):
            body, html = field("htmlBody").decode("utf-8", "replace"), True
        fields = {"From": field("sender"), "To": field("to"), "Cc": field("cc"), "Date": str(field("date"))}
        names = [a.getFilename() or "(unnamed)" for a in getattr(msg, "attachments", [])]
        out = Builder(source)
        _write(out, field("subject"), fields, body, html, names)
    finally:
        msg.close()
    return out.build("Outlook message has no text")
