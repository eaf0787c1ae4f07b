"""Messages the user reads: sentences that start with a capital, unless they start with a name."""

from __future__ import annotations

import re

# A first word made only of letters (and ' or -) is an ordinary word; anything else
# ("model.safetensors", "nuclei_1", "/data/x.json", "'cells'") is a name, kept as written.
ORDINARY_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*[,;:!?]?")


def sentence(text: str) -> str:
    """Return `text` starting with a capital letter, unless its first word is a name.

    Parameters
    ----------
    text : str
        A message, often written to follow other words ("there was not enough
        memory for training; …").

    Returns
    -------
    str
        The message as the first sentence of a line: its first letter capitalised
        when the first word is an ordinary word, untouched when the first word is
        a file, path or layer name, which must read exactly as it is.

    Examples
    --------
    >>> sentence("choose an image layer to segment")
    'Choose an image layer to segment'
    >>> sentence("model.safetensors is damaged")
    'model.safetensors is damaged'
    >>> sentence("nuclei_1 is empty")
    'nuclei_1 is empty'
    """
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    if not ORDINARY_WORD.fullmatch(first):
        return text
    start = text.index(first)
    return text[:start] + first[:1].upper() + text[start + 1 :]
