"""Arithmetic in a question, computed, so a small model only has to say the result.

SmolLM2-135M phrases "What is 10 minus 3?" well and gets the number wrong ("10 minus 3 is
2."). The service looks for explicit arithmetic in the question (digits or number words
joined by plus, minus, times, multiplied by, divided by, half of, squared, percent of, ...),
computes it exactly (fractions, never floats or ``eval``) and adds the result to the question
the model sees (``annotate``): "What is 10 minus 3? (10 minus 3 = 7.)". The model still
writes the answer, in its own words. The conversation the gateway keeps holds the question as
asked, so a note never reaches the history. AVATAR_LLM_CALCULATOR=0 turns it off
(docs/llm.md has what it changed on bench/bench_answers.py).

Only what is written out is computed: "How many hours are in a day?" holds no arithmetic and
is left to the model. A hyphen or slash without a space on either side ("555-1234", "12/25")
is not taken as minus or divided by, since it is more often a phone number or a date.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

# Bounds that keep a question from costing more than microseconds or an answer from being
# unspeakable: operands of more digits, and powers beyond these, are left to the model.
MAX_DIGITS = 30
MAX_EXPONENT = 64
MAX_RESULT_DIGITS = 60
# A spoken question is a sentence or two; a longer text is not searched (the search is
# quadratic in the worst case).
MAX_QUESTION_CHARS = 1000

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}

# Spoken operators, longest first, as the canonical symbol the parser reads.
_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("to", "the", "power", "of"), "^"),
    (("raised", "to", "the", "power", "of"), "^"),
    (("raised", "to"), "^"),
    (("multiplied", "by"), "*"),
    (("divided", "by"), "/"),
    (("take", "away"), "-"),
    (("percent", "of"), "%of"),
    (("per", "cent", "of"), "%of"),
    (("square", "root", "of"), "sqrt"),
    (("the", "square", "root", "of"), "sqrt"),
    (("half", "of"), "half"),
    (("a", "half", "of"), "half"),
    (("one", "half", "of"), "half"),
    (("a", "third", "of"), "third"),
    (("one", "third", "of"), "third"),
    (("a", "quarter", "of"), "quarter"),
    (("one", "quarter", "of"), "quarter"),
    (("double",), "double"),
    (("twice",), "double"),
    (("triple",), "triple"),
    (("plus",), "+"),
    (("minus",), "-"),
    (("times",), "*"),
    (("squared",), "squared"),
    (("cubed",), "cubed"),
    (("the", "sum", "of"), "sum"),
    (("sum", "of"), "sum"),
    (("the", "product", "of"), "product"),
    (("product", "of"), "product"),
    (("the", "difference", "between"), "difference"),
    (("difference", "between"), "difference"),
    (("add",), "add"),
    (("subtract",), "subtract"),
    (("multiply",), "multiply"),
    (("divide",), "divide"),
)
_SYMBOLS = {"+": "+", "*": "*", "×": "*", "÷": "/", "^": "^", "−": "-", "–": "-", "%": "%", "(": "(", ")": ")"}
_PREFIX = {"half": Fraction(1, 2), "third": Fraction(1, 3), "quarter": Fraction(1, 4),
           "double": Fraction(2), "triple": Fraction(3)}
# Operators, number words and what joins them ("the sum of 3 and 4"); the rest is the
# question's own words, where a run of arithmetic ends.
_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<word>[a-z]+(?:-[a-z]+)*)"
    r"|(?P<sym>[-+*/×÷^−–%()])"
)


@dataclass(frozen=True, slots=True)
class Calculation:
    expression: str  # the arithmetic as it was asked ("10 minus 3")
    result: Fraction | None  # None: it cannot be computed (division by zero)
    note: str  # what the model is told: "10 minus 3 = 7." or why there is no number


# What joins the two operands of a verb: "the sum of 3 and 4", "subtract 3 from 10".
_JOINERS: dict[str, tuple[str, ...]] = {
    "sum": ("and",), "product": ("and",), "difference": ("and",), "add": ("and", "to"),
    "subtract": ("from",), "multiply": ("by", "and"), "divide": ("by",),
}


class _NoParse(Exception):
    pass


class _Undefined(Exception):
    """Division by zero, or a square root of a negative number."""


def _tokens(text: str) -> list[tuple[str, object, int, int]]:
    """(kind, value, start, end): kind is "num" (a Fraction), "op" (a canonical operator),
    "and", "by", "from", "to", or "word" (anything else)."""
    raw: list[tuple[str, str, int, int]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "word"
        value = m.group()
        if kind == "sym" and value in "-/−–" and _glued(text, m.start(), m.end()):
            kind, value = "word", value  # 555-1234, 12/25: not arithmetic
        raw.append((kind, value, m.start(), m.end()))
    out: list[tuple[str, object, int, int]] = []
    i = 0
    while i < len(raw):
        kind, value, start, end = raw[i]
        if kind == "num":
            digits = value.replace(",", "")
            if len(digits.replace(".", "")) > MAX_DIGITS:
                out.append(("word", value, start, end))
            else:
                out.append(("num", Fraction(digits), start, end))
            i += 1
            continue
        if kind == "sym":
            out.append(("op", "/" if value == "/" else _SYMBOLS.get(value, "-"), start, end))
            i += 1
            continue
        words = _word_run(raw, i)
        phrase = _match_phrase(words)
        if phrase is not None:
            n, op = phrase
            out.append(("op", op, start, raw[i + n - 1][3]))
            i += n
            continue
        number = _number_words(words)
        if number is not None:
            n, val = number
            out.append(("num", Fraction(val), start, raw[i + n - 1][3]))
            i += n
            continue
        word = value
        if word == "x" and out and out[-1][0] == "num":
            out.append(("op", "*", start, end))  # 3 x 4
        elif word in ("and", "by", "from", "to", "is", "of"):
            out.append((word, word, start, end))
        else:
            out.append(("word", word, start, end))
        i += 1
    return out


def _glued(text: str, start: int, end: int) -> bool:
    """A symbol with a character other than a space on both sides."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not before.isspace() and not after.isspace()


def _word_run(raw: list[tuple[str, str, int, int]], i: int) -> list[str]:
    """The words from ``i`` on, up to the next number or symbol (at most a phrase's length)."""
    out: list[str] = []
    for kind, value, _, _ in raw[i:i + 8]:
        if kind != "word":
            break
        out.append(value)
    return out


def _match_phrase(words: list[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for phrase, op in _PHRASES:
        if tuple(words[: len(phrase)]) == phrase and (best is None or len(phrase) > best[0]):
            best = (len(phrase), op)
    return best


def _number_words(words: list[str]) -> tuple[int, int] | None:
    """A number written in words at the start of ``words``: (words used, value).
    "one hundred and twenty-four" -> (4, 124); "a hundred" is not read (a is not a number)."""
    total = current = used = 0
    for n, word in enumerate(words):
        if word == "a" and n == 0 and len(words) > 1 and words[1] in _SCALES:
            current, used = 1, 1  # "a hundred"
            continue
        if word == "and":
            # Inside a number only after a hundred or a thousand and before a number word
            # ("one hundred and five"); otherwise it joins two numbers ("the sum of 3 and 4").
            after_scale = used > 0 and words[used - 1].split("-")[-1] in _SCALES
            if after_scale and n + 1 < len(words) and _is_number_word(words[n + 1]):
                continue
            break
        if not _is_number_word(word):
            break
        for part in word.split("-"):
            if part in _UNITS:
                current += _UNITS[part]
            elif part in _TENS:
                current += _TENS[part]
            elif part == "hundred":
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * _SCALES[part]
                current = 0
        used = n + 1
    return (used, total + current) if used else None


def _is_number_word(word: str) -> bool:
    return all(p in _UNITS or p in _TENS or p in _SCALES for p in word.split("-"))


class _Parser:
    """Recursive descent over one run of tokens; usual precedence (power, then times and
    divided by, then plus and minus), left to right."""

    def __init__(self, toks: list[tuple[str, object, int, int]], i: int) -> None:
        self.toks = toks
        self.i = i
        self.ops = 0  # operations read: a lone number is not arithmetic

    def peek(self, offset: int = 0) -> tuple[str, object]:
        j = self.i + offset
        if j < len(self.toks):
            return self.toks[j][0], self.toks[j][1]
        return "end", None

    def take(self) -> tuple[str, object]:
        tok = self.peek()
        self.i += 1
        return tok

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            _, op = self.take()
            right = self.term()
            self.ops += 1
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            _, op = self.take()
            right = self.unary()
            self.ops += 1
            if op == "*":
                value = _checked(value * right)
            else:
                if right == 0:
                    raise _Undefined("cannot divide by zero")
                value = value / right
        return value

    def unary(self) -> Fraction:
        kind, op = self.peek()
        if kind == "op" and op == "-":
            self.take()
            return -self.unary()
        if kind == "op" and op in _PREFIX:
            self.take()
            if self.peek()[0] == "of":
                self.take()
            self.ops += 1
            return _checked(_PREFIX[op] * self.unary())
        if kind == "op" and op == "sqrt":
            self.take()
            value = self.unary()
            self.ops += 1
            return _sqrt(value)
        if kind == "op" and op in ("sum", "product", "difference", "add", "subtract", "multiply", "divide"):
            return self.verb()
        return self.power()

    def verb(self) -> Fraction:
        """"the sum of A and B", "add A to B", "subtract A from B", "divide A by B", ..."""
        _, op = self.take()
        a = self.term() if op in ("sum", "difference", "add", "subtract") else self.unary()
        joiners = _JOINERS[str(op)]
        kind, word = self.peek()
        if kind not in joiners and word not in joiners:
            raise _NoParse
        self.take()
        b = self.term() if op in ("sum", "difference", "add", "subtract") else self.unary()
        self.ops += 1
        if op in ("sum", "add"):
            return a + b
        if op == "difference":
            return abs(a - b)
        if op == "subtract":
            return b - a
        if op in ("product", "multiply"):
            return _checked(a * b)
        if b == 0:
            raise _Undefined("cannot divide by zero")
        return a / b

    def power(self) -> Fraction:
        value = self.atom()
        while True:
            kind, op = self.peek()
            if kind == "op" and op in ("squared", "cubed"):
                self.take()
                self.ops += 1
                value = _pow(value, Fraction(2 if op == "squared" else 3))
            elif kind == "op" and op == "^":
                self.take()
                exponent = self.unary()
                self.ops += 1
                value = _pow(value, exponent)
            elif kind == "op" and op == "%of":
                self.take()
                right = self.unary()
                self.ops += 1
                value = _checked(value * right / 100)
            elif kind == "op" and op == "%" and self.peek(1) == ("of", "of"):
                self.i += 2
                right = self.unary()
                self.ops += 1
                value = _checked(value * right / 100)
            else:
                return value

    def atom(self) -> Fraction:
        kind, value = self.take()
        if kind == "num":
            assert isinstance(value, Fraction)
            return value
        if (kind, value) == ("op", "("):
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise _NoParse
            return inner
        raise _NoParse


def _checked(value: Fraction) -> Fraction:
    if abs(value.numerator) >= 10**MAX_RESULT_DIGITS or value.denominator >= 10**MAX_RESULT_DIGITS:
        raise _NoParse  # too large to say; left to the model
    return value


def _pow(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
        raise _NoParse
    if base == 0 and exponent < 0:
        raise _Undefined("cannot divide by zero")
    if base != 0 and abs(exponent) * math.log10(max(abs(base), 1 / abs(base))) >= MAX_RESULT_DIGITS:
        raise _NoParse
    return _checked(base ** int(exponent))


def _sqrt(value: Fraction) -> Fraction:
    if value < 0:
        raise _Undefined("a negative number has no real square root")
    num, den = math.isqrt(value.numerator), math.isqrt(value.denominator)
    if num * num == value.numerator and den * den == value.denominator:
        return Fraction(num, den)
    return Fraction(math.sqrt(value)).limit_denominator(10**9)


def format_number(value: Fraction) -> str:
    """As a person would say it: 7, -2, 3.5, about 3.333, about 1.23 times ten to the 30."""
    if value.denominator == 1 and abs(value) < 10**15:
        return str(value.numerator)
    if abs(value) >= 10**15 or 0 < abs(value) < Fraction(1, 1000):
        mantissa, exponent = f"{float(value):.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"about {mantissa} times ten to the power of {int(exponent)}"
    rounded = round(value, 3)
    text = f"{float(rounded):.3f}".rstrip("0").rstrip(".")
    return text if rounded == value else f"about {text}"


def find_calculation(question: str) -> Calculation | None:
    """The longest run of explicit arithmetic in ``question`` (None when it holds none)."""
    if len(question) > MAX_QUESTION_CHARS:
        return None
    text = question.lower()
    toks = _tokens(text)
    best: tuple[int, int, int, Fraction | None, str] | None = None  # (tokens used, start, end, result, why)
    for start in range(len(toks)):
        if toks[start][0] not in ("num", "op"):
            continue
        parser = _Parser(toks, start)
        try:
            result: Fraction | None = parser.expr()
            why = ""
        except _Undefined as exc:
            result, why = None, str(exc)
            parser.ops = max(parser.ops, 1)
        except (_NoParse, ZeroDivisionError, OverflowError, ValueError, RecursionError):
            continue
        if parser.ops == 0:
            continue
        used = parser.i - start
        if best is None or used > best[0]:
            end = toks[min(parser.i, len(toks)) - 1][3]
            best = (used, toks[start][2], end, result, why)
    if best is None:
        return None
    _, begin, end, result, why = best
    expression = question[begin:end].strip()
    if result is None:
        return Calculation(expression, None, f"{expression}: {why}.")
    return Calculation(expression, result, f"{expression} = {format_number(result)}.")


def annotate(question: str) -> str:
    """The question with its arithmetic's result after it, or the question unchanged."""
    calc = find_calculation(question)
    if calc is None:
        return question
    return f"{question} ({calc.note})"
