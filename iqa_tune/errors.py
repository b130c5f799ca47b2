"""The one error type a user sees: a message naming the file, key path or row, and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input from the user (a config, a dataset, a flag). The CLI prints it and exits with code 2."""

    exit_code = 2


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' hint for the nearest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@contextmanager
def naming(source: str) -> Iterator[None]:
    """Prefix every :class:`UserError` raised inside with ``source`` (the config file the bad value came from),
    so an error found late, in the data, still says which file to edit."""
    try:
        yield
    except UserError as e:
        if str(e).startswith(f"{source}: "):
            raise
        raise UserError(f"{source}: {e}") from None
