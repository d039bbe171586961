from __future__ import annotations

import pytest

from agent.contracts import Message, TicketIn
from agent.email_text import new_message, strip_html
from agent.nodes.normalize import ticket_text

BILLING_QUOTE = "Your invoice for November is attached. The amount will be charged to your card; refunds, payments, invoices."


def test_html_email_reaches_the_classifier_as_its_words() -> None:
    body = (
        "<html><head><style>body{font-family:Arial} td{padding:4px}</style><script>var t='x';</script></head>"
        "<body><p>Hi,<br>I was charged twice for order&nbsp;#4587345.</p><!-- pixel -->"
        "<table><tr><td>Amount</td><td>&euro;49.99</td></tr></table></body></html>"
    )
    text = strip_html(body)
    for markup in ("font-family", "var t", "<p>", "&nbsp;", "&euro;", "pixel", "<td>"):
        assert markup not in text
    assert "I was charged twice for order #4587345." in text and "Amount €49.99" in text


def test_placeholders_in_an_html_email_are_kept() -> None:
    """Only real HTML elements go: a help desk's anonymised export (`<name>`, `<tel_num>`) or a placeholder an
    article quotes (`<username>`) is text, and dropping it cost the Tobi-Bueck bench macro-F1 (evals/README.md)."""
    text = strip_html("Gracias.<br><br>Atentamente,<br><name><br>Log in as <username></p>")
    assert text == "Gracias.\n\nAtentamente,\n<name>\nLog in as <username>\n"


def test_plain_text_with_angle_brackets_is_not_taken_for_html() -> None:
    text = "Log in as <username> and send it to <email>, then run `a < b`"
    assert strip_html(text) == text


@pytest.mark.parametrize(
    "header",
    [
        "On Mon, 4 Nov 2024 at 10:12, Billing <billing@acme.com> wrote:",
        "Am Mo., 4. Nov. 2024 um 10:12 Uhr schrieb Buchhaltung <rechnung@firma.de>:",
        "El lun, 4 nov 2024 a las 10:12, Facturación (<factura@empresa.es>) escribió:",
        "Le lun. 4 nov. 2024 à 10:12, Facturation <facture@societe.fr> a écrit :",
        "Em seg., 4 de nov. de 2024 às 10:12, Faturamento <fatura@empresa.pt> escreveu:",
        "-----Original Message-----\nFrom: Billing\nSent: Monday",
        "From: Billing Team <billing@acme.com>\nSent: Monday, November 4, 2024 10:12 AM\nTo: John",
        "Von: Buchhaltung <rechnung@firma.de>\nGesendet: Montag, 4. November 2024 10:12",
    ],
)
def test_quoted_history_of_a_reply_is_left_out(header: str) -> None:
    """The quote under a reply is the old thread: a new VPN problem above a quoted invoice was auto-applied as billing."""
    body = f"The VPN still fails with error 809.\r\n\r\n{header}\r\n> {BILLING_QUOTE}\r\n{BILLING_QUOTE}"
    assert new_message(body) == "The VPN still fails with error 809."


def test_signature_disclaimer_is_left_out_but_a_bare_quote_or_forward_is_kept() -> None:
    signed = "Password reset link does not work.\n\n-- \nJohn Smith\nCONFIDENTIALITY NOTICE: " + BILLING_QUOTE * 5
    assert new_message(signed) == "Password reset link does not work."
    assert new_message("Password reset fails.\n\nThis e-mail and any attachments are confidential. " + BILLING_QUOTE) == "Password reset fails."
    bare = "On Mon, 4 Nov 2024, Jane <jane@x.com> wrote:\n> my parcel never arrived"
    assert new_message(bare) == bare  # nothing new above it: the quote is all there is
    assert new_message("> my parcel never arrived\n> order 4587345") == "> my parcel never arrived\n> order 4587345"


def test_each_message_of_a_thread_keeps_its_new_words() -> None:
    """Cutting the joined thread at the first quote would drop every later message."""
    ticket = TicketIn(
        subject="VPN",
        body="The VPN fails.\n\nOn Mon, Jane wrote:\n> " + BILLING_QUOTE,
        messages=[Message(text="Still failing after the reboot.\n\nAm Di., Support schrieb:\n> " + BILLING_QUOTE)],
    )
    text, cut = ticket_text(ticket, 6000)
    assert text == "VPN\n\nThe VPN fails.\n\nStill failing after the reboot." and not cut


def test_unclosed_style_tags_cost_one_scan() -> None:
    """A lazy `<style>.*?</style>` rescanned to the end from every unclosed tag: quadratic on hostile mail."""
    import subprocess
    import sys

    script = "from agent.email_text import new_message\nnew_message('<br>' + '<style>' * 20_000)\nnew_message('<p>' + '<!--' * 30_000)\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
