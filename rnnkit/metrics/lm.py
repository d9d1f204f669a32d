"""Language-model metrics from a negative log-likelihood in nats: perplexity, bits per token, summary.

With ``mean_nll = -(1/N) sum_i ln p(x_i | x_<i)`` over N predicted tokens:

    perplexity = exp(mean_nll),        bits_per_token = mean_nll / ln 2

Pure functions on Python floats; they never see tensors, files or models.
"""

from __future__ import annotations

import math

__all__ = ["bits_per_token", "lm_summary", "perplexity"]


def _check_nll(mean_nll: float) -> float:
    mean_nll = float(mean_nll)
    if mean_nll < 0:
        raise ValueError(f"mean NLL must be >= 0 (nats per token), got {mean_nll}")
    return mean_nll


def perplexity(mean_nll: float) -> float:
    """Perplexity ``exp(mean_nll)``.

    Args:
        mean_nll: mean negative log-likelihood per token, in nats (>= 0).

    Returns:
        The perplexity; ``inf`` when ``exp`` overflows (``mean_nll`` above about 709.78) or
        ``mean_nll`` is ``inf``; ``nan`` when ``mean_nll`` is ``nan`` (a diverged run).

    Raises:
        ValueError: ``mean_nll`` is negative.

    Example::

        >>> perplexity(0.0), perplexity(math.log(4.0))
        (1.0, 4.0)
    """
    mean_nll = _check_nll(mean_nll)
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


def bits_per_token(mean_nll: float) -> float:
    """Bits per token (bits per character at character level): ``mean_nll / ln 2``.

    Args:
        mean_nll: mean negative log-likelihood per token, in nats (>= 0; ``inf``/``nan`` pass through).

    Raises:
        ValueError: ``mean_nll`` is negative.
    """
    return _check_nll(mean_nll) / math.log(2)


def lm_summary(total_nll: float, tokens: int) -> dict[str, float | int]:
    """Summarise a summed NLL over ``tokens`` predicted tokens.

    Args:
        total_nll: sum of ``-ln p`` over all predicted tokens, in nats (>= 0).
        tokens: number of predicted tokens (> 0; padding excluded).

    Returns:
        ``{"loss": mean NLL in nats, "perplexity": exp(loss), "bits_per_token": loss / ln 2,
        "tokens": tokens}``; ``perplexity`` is ``inf`` when ``exp`` overflows (the CLI's ``--json`` prints
        it as ``null`` with a ``perplexity_note``, see :func:`rnnkit.cli.common.print_json`).

    Raises:
        ValueError: ``tokens`` is not a positive integer or ``total_nll`` is negative.
    """
    if isinstance(tokens, bool) or int(tokens) != tokens or tokens <= 0:
        raise ValueError(f"tokens must be a positive integer, got {tokens!r}")
    loss = _check_nll(total_nll) / int(tokens)
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        "bits_per_token": bits_per_token(loss),
        "tokens": int(tokens),
    }
