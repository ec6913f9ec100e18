"""Hypothesis strategies for text from outside: claims and client names as a hostile IdP or client sends them."""

from __future__ import annotations

from hypothesis import strategies as st

# What broke tracking before, and what only a person reading the text would notice.
NASTY = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\u202e", "\u2066", "\u200f", "\n", "\r", "\t", "\x1b",
         "\x7f", "\x85", "\u2028", "/", "|", "\\", '"', " ", "'", "%", "_"]

ANY_CHAR = st.one_of(
    st.characters(codec=None, exclude_categories=()),  # any code point...
    st.characters(categories=["Cs"]),                  # ...lone surrogates are rare in that: draw them on purpose
    st.sampled_from(NASTY),
)


def claim_text(max_size: int = 30) -> st.SearchStrategy[str]:
    """Short crafted strings, and now and then a long one (up to 3,000 characters, so the token stays < 16 KiB)."""
    short = st.text(ANY_CHAR, max_size=max_size)
    long = st.builds(lambda piece, times: (piece * times)[:3000], st.text(ANY_CHAR, min_size=1, max_size=5),
                     st.integers(100, 1000))
    return st.one_of(short, short, short, long)
