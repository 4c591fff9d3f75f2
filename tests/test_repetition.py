"""The repeated-tail detector (dsocr.serving.repetition) on loops as DeepSeek-OCR writes them, and on text that
repeats on purpose: tables whose rows share their structure, forms, lists."""

from __future__ import annotations

from dsocr.serving.repetition import MIN_REPEATED_CHARS, cut_repeated_tail, repeated_tail

INTRO = "# Lease agreement\n\nThe tenant shall pay the rent on the first day of each month.\n"
CLAUSE = "The landlord may enter the premises with 24 hours notice.\n"


def cut(text: str) -> str | None:
    tail = repeated_tail(text)
    return cut_repeated_tail(text, tail) if tail else None


def test_a_line_repeated_to_the_token_cap_is_cut_to_one_copy() -> None:
    looped = INTRO + CLAUSE * 30 + "The landlord may ent"  # the cap stops it mid-copy
    tail = repeated_tail(looped)
    assert tail is not None and tail.copies > 30
    assert cut(looped) == INTRO + CLAUSE.rstrip()


def test_copies_that_differ_only_in_whitespace_are_one_loop() -> None:
    looped = INTRO + "".join(CLAUSE.replace(" ", "  " if i % 2 else " ") for i in range(12))
    assert cut(looped) == INTRO + CLAUSE.rstrip()


def test_a_paragraph_longer_than_the_ngram_window_looping_is_found() -> None:
    # The n-gram guard cannot see a period this long: such loops are the ones that reach the cap.
    paragraph = ("Section 4. Payment. All amounts are payable in euros within thirty days of the invoice date. "
                 "Late payments bear interest at the statutory rate, and reminders are sent by registered mail to "
                 "the address of the tenant given above.\n\n")
    looped = INTRO + paragraph * 5
    assert repeated_tail(looped) is not None
    assert cut(looped) == (INTRO + paragraph).rstrip()


def test_an_empty_cell_loop_inside_a_table_is_cut_at_a_cell_boundary() -> None:
    # <td> and </td> are exempt from the n-gram guard, so a table can loop on empty cells to the cap.
    looped = "<table><tr><td>Item</td><td>Price</td></tr><tr>" + "<td></td>" * 200
    assert cut(looped) == "<table><tr><td>Item</td><td>Price</td></tr><tr><td></td>"


def test_table_rows_looping_are_cut_after_a_whole_row() -> None:
    row = "<tr><td>Total</td><td>1,250.00</td></tr>"
    looped = "<table><tr><td>Item</td><td>Price</td></tr>" + row * 20
    assert cut(looped) == "<table><tr><td>Item</td><td>Price</td></tr>" + row


def test_table_rows_that_share_their_structure_are_left_alone() -> None:
    rows = "".join(f"<tr><td>Item {i}</td><td>{i * 3}.00</td><td>EUR</td></tr>" for i in range(60))
    assert repeated_tail("<table>" + rows) is None  # cut by the token cap mid-table
    assert repeated_tail("<table>" + rows + "</table>") is None
    figures = "".join(f"<tr><td>{year}</td><td>{year % 7}</td></tr>" for year in range(1990, 2030))
    assert repeated_tail("<table>" + figures) is None


def test_identical_rows_of_a_closed_table_are_left_alone() -> None:
    # The model closed the table and stopped: it left the repeats by itself.
    blank_rows = "<tr><td></td><td></td><td></td></tr>" * 20
    assert repeated_tail("<table><tr><td>Name</td><td>Date</td><td>Signature</td></tr>" + blank_rows + "</table>") is None
    assert repeated_tail(INTRO + CLAUSE * 10 + "\nSigned in Paris.") is None


def test_short_runs_written_on_purpose_are_left_alone() -> None:
    assert repeated_tail("Chapter 1 " + "." * 40 + " 5") is None
    form = "Name: ____________\n" * 4
    assert len(form) < MIN_REPEATED_CHARS and repeated_tail(INTRO + form) is None
    assert repeated_tail(INTRO + CLAUSE * 2) is None  # twice is an echo, not a loop


def test_a_numbered_list_is_not_a_loop() -> None:
    items = "".join(f"{n}. The landlord may enter the premises.\n" for n in range(1, 40))
    assert repeated_tail(INTRO + items) is None


def test_text_without_repeats_has_no_tail() -> None:
    assert repeated_tail("") is None
    assert repeated_tail(INTRO * 1 + CLAUSE) is None
