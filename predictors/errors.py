"""The predictors' exception: a bad value, table or file given to the library (never a CLI flag)."""

from __future__ import annotations

from search_spaces.errors import NasError


class PredictorError(NasError):
    """A value, table or saved file that a predictor cannot use; the message names it and what is allowed."""
