"""Custom model cards kept in step with the cluster (EXO's ``Worker._reconcile_custom_cards``).

Contract: ``reconcile`` saves every card the cluster state holds to this node's custom cards dir (OLD:
and loads it); NEW deletes any TOML there the state does not hold; a card seen for the first time since
the last ``forget`` calls ``on_new_card`` (the download rescan) unless the node runs ``--no-downloads``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .cards import card_toml
from .logs import logger
from .models import normalize

W_CARDS = "exo.worker.main:_reconcile_custom_cards:180"


class CardSync:
    """One node's custom cards dir against the cluster's cards."""

    def __init__(self, node: Any, on_new_card: Callable[[], None]) -> None:
        self.node, self.cfg, self.on_new_card = node, node.cfg, on_new_card
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def forget(self) -> None:
        """Every card counts as new again (after a master change)."""
        with self.lock:
            self.seen.clear()

    def run(self, stopped: threading.Event) -> None:
        """Reconcile every ``card_reconcile_s`` until ``stopped`` (a failed round is logged)."""
        while not stopped.wait(self.cfg.timing.card_reconcile_s):
            try:
                self.reconcile()
            except OSError as exc:
                logger.warning(f"custom card reconcile failed: {exc}", W_CARDS)

    def reconcile(self) -> None:
        """``Worker._reconcile_custom_cards``: every card added to the cluster is saved to this node's
        custom cards dir (OLD: and loaded, the dir is where v1.0.71 keeps them); NEW deletes any TOML
        there that the cluster state does not hold. A newly seen card triggers a download rescan."""
        synced = {c["model_id"]: c for c in self.node.synced_cards()}
        cards_dir = self.node.paths.custom_cards_dir
        fresh = []
        for mid, card in synced.items():
            path = cards_dir / f"{normalize(mid)}.toml"
            if not path.exists():
                cards_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(card_toml(card), encoding="utf-8")
            if not self.cfg.is_new and all(c["model_id"] != mid for c in self.node.custom_cards):
                self.node.custom_cards.append(card)
            with self.lock:
                if mid not in self.seen:
                    self.seen.add(mid)
                    fresh.append(mid)
        if self.cfg.is_new and cards_dir.is_dir():
            for path in sorted(cards_dir.glob("*.toml")):
                if path.stem not in {normalize(m) for m in synced}:
                    path.unlink(missing_ok=True)
                    logger.debug(f"Removed custom card {path.name}: not in the cluster state", W_CARDS)
        if fresh and not self.node.args.no_downloads:
            self.on_new_card()
