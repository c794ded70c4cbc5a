"""The EXO layer: HTTP client, /state parsing (both generations), launcher, logs, preflight, verdicts.

Modules:
  client    ExoClient: every call has a timeout; errors become ExoHTTPError / ExoUnreachable
  state     pure parsing of /state (tagged unions, camel/snake keys, old/new shapes)
  logs      exo's paths per layout, log tails from nodes, the regexes of the failure catalog
  launcher  probe_build (generation/version from `exo --help`), ExoLauncher (start/stop by pid)
  preflight exo_preflight: binary, build parity, API port, model folder name
  verdicts  pure verdict functions for startup/cluster/placement/transport/chat
  observe   the polling loops that feed observations from nodes and APIs to the verdicts
  wait      poll-with-deadline helper (no fixed sleeps for synchronisation)
  serving_check  `--exo-api`: is each URL an EXO that answers a chat for the model (before any benchmark)
"""
