"""Self-check questions that check themselves without showing their answer.

A notebook asks a question whose answer is a choice ("b") or a number (1.27), the student
writes the answer into a variable, and `check` compares it with a SHA-256 digest of the
expected answer: the notebook can say "correct" or "not yet" at once, yet reading the
notebook's source does not give the answer away. Numbers are compared after rounding to
`decimals` places, so 1.2707 and 1.27 are the same answer at decimals=2. Choices are compared
case- and space-insensitively.

    from ssmamba_lite.course.quiz import check
    q1 = "b"                                   # the student's answer
    check("Q1", q1, "1f8a6c0b29a5f1d4")        # raises AssertionError when wrong

In the graded notebooks a question is an nbgrader exercise like any other: the answer cell is
a solution cell, the `check` call sits in its test cell, and a wrong or missing answer scores 0.
An answer cell starts with `q1 = None`; an unanswered question (None or ...) raises
NotImplementedError, which the autograder reports as "not attempted", and a wrong answer an
AssertionError. Course authors make a digest with `digest(answer, decimals)` (or `python -m
ssmamba_lite.course.quiz ANSWER [DECIMALS]`).
"""

from __future__ import annotations

import hashlib
import sys

DIGEST_LENGTH = 16            # hex characters kept: 64 bits, plenty against typos


def normalise(answer, decimals: int | None = None) -> str:
    """The text that is hashed: a number rounded to `decimals` places, else lower-case text
    without surrounding spaces."""
    if decimals is not None:
        try:
            value = round(float(answer), decimals)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {answer!r}") from None
        return f"{value + 0.0:.{decimals}f}"              # + 0.0: -0.00 reads as 0.00
    return str(answer).strip().lower()


def digest(answer, decimals: int | None = None) -> str:
    """The digest `check` compares with."""
    text = normalise(answer, decimals)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def check(question: str, answer, expected: str, decimals: int | None = None) -> bool:
    """Print "<question>: correct" and return True when `answer` has the `expected` digest;
    raise an AssertionError that names the question when it does not, a NotImplementedError
    when it is unanswered (None or ...)."""
    if answer is None or answer is Ellipsis:
        raise NotImplementedError(f"{question}: not answered yet")
    try:
        mine = digest(answer, decimals)
    except ValueError as err:
        raise AssertionError(f"{question}: {err}") from None
    if mine != expected:
        hint = f" (rounded to {decimals} decimals: {normalise(answer, decimals)})" \
            if decimals is not None else ""
        raise AssertionError(f"{question}: {answer!r}{hint} is not the answer; reread the "
                             f"section above and try again")
    print(f"{question}: correct")
    return True


if __name__ == "__main__":                                  # python -m ...quiz ANSWER [DECIMALS]
    print(digest(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
