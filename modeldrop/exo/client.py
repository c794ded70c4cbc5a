"""ExoClient: a small HTTP client for one EXO node's API (both generations), timeouts on every call.

Contract: every method either returns parsed JSON (or a typed value) or raises
- `ExoUnreachable` when no complete HTTP answer came (refused, reset, or not all of it within the call's total
  bound: connect, headers and body, `modeldrop.httpdeadline`; a server trickling bytes ends there too), or
- `ExoHTTPError(status, message, body)` for a non-2xx answer, with EXO's error message extracted
  from `{"error":{"message":...}}` or FastAPI's `{"detail": ...}`.
Nothing here retries; callers poll with `modeldrop.exo.wait.poll`.

Wire facts honoured: `/node_id` is a bare JSON string (this node's id, not the master's);
`/instance/placement` takes the full HF id and `MlxRing|MlxJaccl` (not `...Instance`);
`POST /instance` wants `{"instance": <placement result>}`; there is no `/health`.
"""

from __future__ import annotations

from typing import Any

import requests

from modeldrop import httpdeadline

DEFAULT_TIMEOUT_S = 5.0
STATE_TIMEOUT_S = 10.0  # the least a /state read is given (its body grows with the cluster)


class ExoError(Exception):
    """Base class for API errors."""


class ExoUnreachable(ExoError):
    """No HTTP answer from the API."""


class ExoHTTPError(ExoError):
    """A non-2xx HTTP answer; `message` is EXO's error text."""

    def __init__(self, status: int, message: str, body: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


def error_message(body: str) -> str:
    """EXO's `{"error":{"message"}}`, FastAPI's `{"detail"}`, or the first 300 chars of the body."""
    import json
    try:
        obj = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if "detail" in obj:
            return str(obj["detail"])[:300]
    return body.strip()[:300]


class ExoClient:
    """One node's API at `base_url` (e.g. http://10.0.0.2:52415)."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = httpdeadline.new_session()

    def __repr__(self) -> str:
        return f"ExoClient({self.base_url})"

    def _request(self, method: str, path: str, *, timeout_s: float | None = None, **kw: Any) -> requests.Response:
        """One call, body included, within `timeout_s` (else the client's) in all."""
        t = timeout_s or self.timeout_s
        try:
            resp = httpdeadline.request(method, self.base_url + path, total_s=t, session=self.session, **kw)
        except httpdeadline.TotalTimeout as e:
            raise ExoUnreachable(str(e)) from None
        except requests.RequestException as e:
            raise ExoUnreachable(f"{method} {self.base_url}{path}: {type(e).__name__}: {e}") from None
        if not 200 <= resp.status_code < 300:
            raise ExoHTTPError(resp.status_code, error_message(resp.text), resp.text[:2000])
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise ExoHTTPError(resp.status_code, f"body is not JSON: {resp.text[:200]!r}", resp.text[:2000]) from None

    # -- meta ---------------------------------------------------------------------------------
    def node_id(self, timeout_s: float | None = None) -> str:
        """This node's id (a bare JSON string; some builds may wrap it as {"node_id": ...})."""
        v = self._json("GET", "/node_id", timeout_s=timeout_s)
        if isinstance(v, dict):
            v = v.get("node_id") or v.get("nodeId")
        if not isinstance(v, str) or not v:
            raise ExoHTTPError(200, f"/node_id returned {v!r}, expected a string", str(v))
        return v

    def state(self, timeout_s: float | None = None) -> dict:
        """GET /state (camelCase, tagged unions)."""
        v = self._json("GET", "/state", timeout_s=timeout_s or max(self.timeout_s, STATE_TIMEOUT_S))
        if not isinstance(v, dict):
            raise ExoHTTPError(200, "/state is not an object", str(v)[:500])
        return v

    # -- models -------------------------------------------------------------------------------
    def models(self, status: str | None = None) -> list[dict]:
        """GET /v1/models[?status=...] -> the `data` list."""
        params = {"status": status} if status else None
        v = self._json("GET", "/v1/models", params=params)
        return list(v.get("data") or []) if isinstance(v, dict) else []

    def has_card(self, model_id: str) -> bool:
        """EXO knows a model card for `model_id` (listed by the unfiltered GET /v1/models)."""
        return any(str(m.get("id")) == model_id for m in self.models())

    def add_model(self, model_id: str) -> dict:
        """POST /models/add {"model_id": ...}: EXO builds the card (offline from the local model dir) and
        shares it with the cluster; returns EXO's model row, or raises ExoHTTPError (400 `Failed to fetch model`)."""
        return self._json("POST", "/models/add", json={"model_id": model_id}, timeout_s=max(self.timeout_s, 60.0))

    def downloaded_model_ids(self) -> list[str]:
        """Ids listed under /v1/models?status=downloaded (DownloadCompleted on any node)."""
        return [str(m.get("id")) for m in self.models("downloaded")]

    # -- instances ----------------------------------------------------------------------------
    def placement(self, model_id: str, sharding: str = "Pipeline", instance_meta: str = "MlxRing",
                  min_nodes: int = 1) -> dict:
        """GET /instance/placement: a tagged Instance computed from this node's view; nothing is created."""
        params = {"model_id": model_id, "sharding": sharding, "instance_meta": instance_meta,
                  "min_nodes": int(min_nodes)}
        return self._json("GET", "/instance/placement", params=params, timeout_s=max(self.timeout_s, 30.0))

    def create_instance(self, instance: dict) -> dict:
        """POST /instance {"instance": ...}; the instance id is the one inside the body."""
        return self._json("POST", "/instance", json={"instance": instance}, timeout_s=max(self.timeout_s, 30.0))

    def get_instance(self, instance_id: str) -> dict | None:
        """GET /instance/{id}, or None on 404."""
        try:
            return self._json("GET", f"/instance/{instance_id}")
        except ExoHTTPError as e:
            if e.status == 404:
                return None
            raise

    def delete_instance(self, instance_id: str) -> dict | None:
        """DELETE /instance/{id} (asynchronous; poll get_instance until None), or None on 404."""
        try:
            return self._json("DELETE", f"/instance/{instance_id}", timeout_s=max(self.timeout_s, 30.0))
        except ExoHTTPError as e:
            if e.status == 404:
                return None
            raise
