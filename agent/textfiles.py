"""The one wording for a text file that is not UTF-8: where the bad byte is, and how to convert the file."""

from __future__ import annotations


def not_utf8(what: str, exc: UnicodeDecodeError) -> str:
    """`what` is not UTF-8 text, with the byte and line and the fix (an editor or Excel often saves cp1252)."""
    data = exc.object
    line = data[: exc.start].count(b"\n") + 1
    return (
        f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8 or convert it, "
        "e.g. `iconv -f cp1252 -t utf-8 IN > OUT`"
    )
