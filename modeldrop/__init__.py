"""modeldrop: take a model that just dropped on Hugging Face to a verified, serving EXO cluster.

The package is plain Python and knows nothing of pytest, except `modeldrop.plugin`, the thin
pytest layer that registers the options, orders the gates and keeps the ledger.
"""

__version__ = "0.2.0"
