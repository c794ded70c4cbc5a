"""Command line and process lifecycle of the emulator, mirroring ``exo.main`` per generation.

Contract: argparse errors exit 2 before anything else; NEW takes the PID lock
(second instance: ``PidfileError`` on stderr, exit 1); the log is set up (previous log rotated);
NEW raises ``ValueError`` for a non-empty ``EXO_LIBP2P_NAMESPACE`` or bootstrap peers after the
``pid = N`` line (traceback on stderr only, exit 1); a taken port fails with an
``OSError ... address already in use`` and exit 1; SIGTERM/SIGINT stop runners and exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

from .config import EmulatorConfig, load_config
from .logs import logger
from .node import BindError, Node
from .paths import exo_paths
from .pidlock import PidfileError, take

W_MAIN = "exo.main:main_inner:350"


def build_parser(cfg: EmulatorConfig) -> argparse.ArgumentParser:
    """exo's parser for the configured generation (``--zenoh-port`` only on NEW)."""
    p = argparse.ArgumentParser(prog="EXO")
    p.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0)
    p.add_argument("-v", "--verbose", action="count", dest="verbosity", default=0)
    p.add_argument("-m", "--force-master", action="store_true", dest="force_master")
    p.add_argument("--no-api", action="store_false", dest="spawn_api")
    p.add_argument("--api-port", type=int, dest="api_port", default=52415)
    p.add_argument("--no-worker", action="store_true")
    p.add_argument("--no-downloads", action="store_true",
                   help="Disable the download coordinator (node won't download models)")
    p.add_argument("--offline", action="store_true", default=os.getenv("EXO_OFFLINE", "false").lower() == "true",
                   help="Run in offline/air-gapped mode: skip internet checks, use only pre-staged local models")
    p.add_argument("--no-batch", action="store_true", help="Disable continuous batching, use sequential generation")
    if cfg.is_new:
        p.add_argument("--legacy-daemon", action="store_true",
                       help="Run as a legacy SysV-style background daemon using double-fork daemonization")
    env_peers = os.getenv("EXO_BOOTSTRAP_PEERS")
    p.add_argument("--bootstrap-peers", type=lambda s: [x for x in s.split(",") if x],
                   default=env_peers.split(",") if env_peers else [], dest="bootstrap_peers",
                   help="Comma-separated libp2p multiaddrs to dial on startup (env: EXO_BOOTSTRAP_PEERS)")
    if cfg.is_new:
        p.add_argument("--namespace", type=str, default=cfg.version, dest="namespace",
                       help="Discovery namespace, nodes with different namespaces will not connect.")
        p.add_argument("--zenoh-port", type=int, default=52414, dest="zenoh_port",
                       help="Fixed TCP port for zenoh to listen.")
        p.add_argument("--discovery-port", type=int, default=52413, dest="discovery_port",
                       help="Fixed UDP port for the discovery service.")
    else:
        p.add_argument("--libp2p-port", type=int, default=0, dest="libp2p_port",
                       help="Fixed TCP port for libp2p to listen on (0 = OS-assigned).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fast-synch", action="store_true", dest="fast_synch", default=None,
                   help="Force MLX FAST_SYNCH on (for JACCL backend)")
    g.add_argument("--no-fast-synch", action="store_false", dest="fast_synch", help="Force MLX FAST_SYNCH off")
    return p


def _fatal_traceback(exc: BaseException) -> NoReturn:
    """Uncaught exception before the node runs: traceback to stderr only, exit 1."""
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    logger.close()
    os._exit(1)


def _log_startup(cfg: EmulatorConfig, args: Any) -> None:
    if cfg.is_new:
        logger.info(f"pid = {os.getpid()}", W_MAIN)
        if os.getenv("EXO_LIBP2P_NAMESPACE"):
            _fatal_traceback(_raised(ValueError(
                "EXO_LIBP2P_NAMESPACE has been removed - use EXO_ZENOH_NAMESPACE instead")))
        logger.info(f"EXO_ZENOH_NAMESPACE: {os.getenv('EXO_ZENOH_NAMESPACE')}", W_MAIN)
    else:
        logger.info("=" * 40, "exo.main:main:275")
        logger.info(f"Starting EXO | pid={os.getpid()}", "exo.main:main:276")
        logger.info("=" * 40, "exo.main:main:277")
        logger.info(f"EXO_LIBP2P_NAMESPACE: {os.getenv('EXO_LIBP2P_NAMESPACE')}", "exo.main:main:278")
    if args.offline:
        logger.info("Running in OFFLINE mode — no internet checks, local models only", W_MAIN)
    if args.bootstrap_peers:
        if cfg.is_new:
            _fatal_traceback(_raised(ValueError("Bootstrap peers has been temporarily removed")))
        logger.info(f"Bootstrap peers: {args.bootstrap_peers}", W_MAIN)
    if args.no_batch:
        os.environ["EXO_NO_BATCH"] = "1"
        logger.info("Continuous batching disabled (--no-batch)", W_MAIN)
    if args.fast_synch is True:
        os.environ["EXO_FAST_SYNCH"] = "true"
        logger.info("FAST_SYNCH forced ON", W_MAIN)
    elif args.fast_synch is False:
        os.environ["EXO_FAST_SYNCH"] = "false"
        logger.info("FAST_SYNCH forced OFF", W_MAIN)


def _raised(exc: BaseException) -> BaseException:
    """Give ``exc`` a real traceback (raised from main_inner), like exo's."""
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001
        return e


def _die_unhandled(exc: BaseException, node: Any = None) -> NoReturn:
    """exo's ``EXO terminated due to unhandled exception`` path: log, traceback, exit 1."""
    tb = "".join(traceback.format_exception(exc)).rstrip()
    logger.critical(f"EXO terminated due to unhandled exception\n{tb}", "exo.main:main_inner:380")
    logger.info("EXO Shutdown complete", "exo.main:main_inner:385")
    if node is not None and node.worker is not None:
        node.worker.stop()  # runners never outlive exo; node.stopped stays clear (exit code 1, not 0)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    logger.close()
    os._exit(1)


def _bind_error(errno_: int | None, layout: str, port: int) -> OSError:
    num = 48 if layout != "linux" else (errno_ or 98)
    return OSError(num, f"error while attempting to bind on address ('0.0.0.0', {port}): address already in use")


def _banner(port: int) -> None:
    """exo prints a startup banner with the dashboard URL to stderr (not to exo.log)."""
    url = f"http://localhost:{port}"
    rule = "=" * 72
    sys.stderr.write(f"\n{rule}\n  EXO  Distributed AI Inference Cluster\n{rule}\n"
                     f"  Dashboard & API Ready\n  {url}\n"
                     f"  Click the URL above to open the dashboard in your browser\n{rule}\n\n")
    sys.stderr.flush()


def _first_run(paths: Any, port: int) -> None:
    _banner(port)
    marker = paths.first_run_marker
    if marker.exists():
        return
    if not os.environ.get("EXO_RUNTIME_DIR"):
        logger.info("First run detected — opening dashboard in browser", "exo.utils.banner:print_startup_banner:59")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _shield_spawn_children() -> None:
    """Runner processes use multiprocessing ``spawn``, which re-imports a *script* ``__main__`` in
    every child. When exo is started through a launcher script (a console-script wrapper, possibly
    without a ``__name__`` guard) that would re-run the whole CLI in the runner. Naming the main
    module this package's ``__main__`` makes the children skip that re-import (as with ``-m``)."""
    import importlib.util

    main_mod = sys.modules.get("__main__")
    if main_mod is not None and getattr(main_mod, "__spec__", None) is None:
        main_mod.__spec__ = importlib.util.find_spec(f"{__package__}.__main__")


def main(argv: list[str] | None = None) -> None:
    _shield_spawn_children()
    cfg = load_config()
    args = build_parser(cfg).parse_args(argv)
    paths = exo_paths(cfg.layout)
    pid_handle = None
    if cfg.is_new:
        try:
            pid_handle = take(paths.pid_file)
        except PidfileError as e:
            print(e, file=sys.stderr)
            raise SystemExit(1) from None
    logger.setup(paths.log_file, args.verbosity)
    _log_startup(cfg, args)
    run(cfg, args, paths)
    _ = pid_handle


def _namespace(cfg: EmulatorConfig, args: Any) -> str:
    if cfg.faults.namespace is not None:
        return cfg.faults.namespace
    if cfg.is_new:
        return args.namespace
    return os.getenv("EXO_LIBP2P_NAMESPACE") or "v0.0.1"


def run(cfg: EmulatorConfig, args: Any, paths: Any) -> None:
    if cfg.faults.crash_at_start:
        _die_unhandled(_raised(RuntimeError("emulator fault crash_at_start: exo failed during startup")))
    node = Node(cfg, args, paths, _namespace(cfg, args))
    logger.info(f"Starting node {node.node_id}", "exo.main:create:69")
    bind_error: BindError | None = None
    try:
        node.bind()
    except BindError as exc:
        bind_error = exc
    if bind_error is not None:
        _die_unhandled(_raised(_bind_error(bind_error.errno, cfg.layout, bind_error.port)))
    if args.spawn_api:
        _first_run(paths, args.api_port)
        logger.info(f"Running on http://0.0.0.0:{args.api_port} (CTRL + C to quit)", "hypercorn.error:info:106")
    node.start()
    _install_signals(node)
    if cfg.faults.crash_loop is not None:
        t = threading.Timer(float(cfg.faults.crash_loop), lambda: _die_unhandled(
            _raised(RuntimeError(f"emulator fault crash_loop: exo exited after {cfg.faults.crash_loop} s")), node))
        t.daemon = True
        t.start()
    while not node.stopped.wait(1.0):
        pass
    _shutdown(node, 0)


def _install_signals(node: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        node.stopped.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _shutdown(node: Any, code: int) -> NoReturn:
    """Stop runners and sockets (at most ~5 s), log the last line, exit."""
    stopper = threading.Thread(target=node.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=5.0)
    logger.info("EXO Shutdown complete", "exo.main:main_inner:385")
    logger.close()
    os._exit(code)
