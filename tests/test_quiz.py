"""Self-check questions: a right answer passes, a wrong one fails with the question's name, an
unanswered one reads as not attempted (NotImplementedError, as the autograder expects)."""

from __future__ import annotations

import pytest

from ssmamba_lite.course.quiz import check, digest


def test_numbers_are_compared_after_rounding_and_choices_without_case():
    assert check("Q1", 1.2707, digest(1.27, 2), decimals=2)
    assert check("Q2", " B ", digest("b"))
    assert digest(-0.001, 2) == digest(0, 2)


def test_a_wrong_answer_names_the_question():
    with pytest.raises(AssertionError, match=r"Q1: 1.3 \(rounded to 2 decimals: 1.30\) is not"):
        check("Q1", 1.3, digest(1.27, 2), decimals=2)
    with pytest.raises(AssertionError, match="Q1: expected a number"):
        check("Q1", "many", digest(1.27, 2), decimals=2)


@pytest.mark.parametrize("answer", [None, ...])
def test_an_unanswered_question_is_not_attempted(answer):
    with pytest.raises(NotImplementedError, match="Q3: not answered yet"):
        check("Q3", answer, digest(10))
