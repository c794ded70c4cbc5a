"""Launcher and preflight with a fake node: flags per generation, models dir, prechecks, stop by pid."""

import json
import time
from types import SimpleNamespace

import pytest

from modeldrop.exo.launcher import ExoLauncher, LaunchError, parse_help, probe_build
from modeldrop.exo.preflight import drift_problem, exo_preflight, folder_problem
from tests_selftest.support.exo_fakes import NEW_HELP, OLD_HELP, FakeNode, FakeRunFolder, make_cfg


def launcher(tmp_path, node=None, **values):
    cfg = make_cfg(tmp_path, **values)
    node = node or FakeNode()
    return ExoLauncher(node, cfg.node(1), cfg, FakeRunFolder(tmp_path / "reports" / "run1")), node


def test_help_decides_generation_and_version():
    assert parse_help(NEW_HELP) == ("new", "0.3.70")
    assert parse_help(OLD_HELP) == ("old", None)


def test_probe_build_new_uses_namespace_default_old_uses_version_flag():
    b = probe_build(FakeNode(help_text=NEW_HELP), "/x/exo")
    assert (b.generation, b.version, b.version_source) == ("new", "0.3.70", "namespace-default")
    o = probe_build(FakeNode(help_text=OLD_HELP), "/x/exo")
    assert (o.generation, o.version, o.version_source) == ("old", "1.0.71", "--version")
    u = probe_build(FakeNode(help_text=OLD_HELP.replace("[--version]", "").replace("--version", "")), "/x/exo")
    assert u.version is None and u.version_source is None and u.identity() == ("old", u.help_sha)


def test_probe_build_missing_binary():
    node = FakeNode()
    node._p_tool = lambda a: {"exists": False, "executable": False, "error": "not found"}
    with pytest.raises(LaunchError, match="not found"):
        probe_build(node, "/nope/exo")


def test_new_cluster_command(tmp_path):
    la, _ = launcher(tmp_path)
    argv, env, unset = la.command("cluster")
    assert argv == ["~/exo/.venv/bin/exo", "--api-port", "52415", "--namespace", la.cfg.namespace,
                    "--no-fast-synch", "--offline", "--no-downloads", "-v"]
    assert env["EXO_MODELS_READ_ONLY_DIRS"] == "/Users/me/.exo/models"
    assert "EXO_DEFAULT_MODELS_DIR" not in env and "EXO_LIBP2P_NAMESPACE" not in env
    assert "EXO_LIBP2P_NAMESPACE" in unset and "EXO_BOOTSTRAP_PEERS" in unset


def test_old_command_uses_env_namespace_and_online(tmp_path):
    la, _ = launcher(tmp_path, FakeNode(help_text=OLD_HELP), ONLINE="true")
    argv, env, unset = la.command("cluster")
    assert "--namespace" not in argv and env["EXO_LIBP2P_NAMESPACE"] == la.cfg.namespace and unset == []
    assert "--offline" not in argv and env["EXO_OFFLINE"] == "false"


def test_canary_is_offline_with_coordinator_and_own_namespace(tmp_path):
    la, _ = launcher(tmp_path, ONLINE="true")
    argv, env, _ = la.command("canary")
    assert "--offline" in argv and "--no-downloads" not in argv
    assert argv[argv.index("--namespace") + 1] == la.cfg.namespace + "-canary"


def test_models_parent_of_custom_dir(tmp_path):
    la, _ = launcher(tmp_path, MODEL_DIR_NODE1="~/Models/mlx-community--Llama-3.2-1B-Instruct-4bit")
    assert la.command("cluster")[1]["EXO_MODELS_READ_ONLY_DIRS"] == "/Users/me/Models"


def test_start_records_and_marker_and_stop_by_pid(tmp_path):
    la, node = launcher(tmp_path)
    rec = la.start("cluster")
    saved = json.loads((tmp_path / "reports/run1/exo/node1-cluster.json").read_text())
    assert saved["pid"] == rec.pid and saved["exo_log_path"] == "~/.exo/exo_log/exo.log"
    assert saved["log_path"].startswith("~/modeldrop-logs/run1-node1-cluster")
    assert {"op": "touch", "path": "~/.exo/.dashboard_opened"} in node.probes("fs")
    assert any(a["argv"][0] == "/usr/bin/caffeinate" for a in node.probes("spawn"))
    res = la.stop()
    assert res["result"] == "stopped-term"
    assert node.probes("stop")[0] == {"pid": rec.pid, "grace_s": 15.0, "expect_start": 1000.0, "orphans": True,
                                      "expect_exes": ["/real/python3"], "expect_cmd": "~/exo/.venv/bin/exo"}
    assert (saved["node_target"], saved["node_host"], saved["node_boot"]) == ("u@h1", "mac-10.0.0.1", "boot-1")
    assert la.stop() is la.record.stopped  # idempotent


def test_linux_marker_path(tmp_path):
    la, node = launcher(tmp_path, FakeNode(platform="linux", home="/home/u"))
    la.start("canary")
    assert {"op": "touch", "path": "~/.config/exo/.dashboard_opened"} in node.probes("fs")
    assert la.record.exo_log_path == "~/.cache/exo/exo_log/exo.log"


def test_foreign_port_holder_is_diagnosed_not_killed(tmp_path):
    la, node = launcher(tmp_path, FakeNode(port_free=False, holders=[{"pid": 77, "cmd": "python -m http.server"}]))
    with pytest.raises(LaunchError, match="already in use by pid 77") as ei:
        la.start("cluster")
    assert ei.value.facts["port_held"] and not node.probes("stop") and not node.probes("spawn")


def test_pid_lock_held_by_live_exo(tmp_path):
    node = FakeNode(files={"~/.exo/exo.pid": "555\n"},
                    procs_by_pid={555: {"pid": 555, "start": 1.0, "exe": "/x/python3",
                                        "cmdline": ["/x/python3", "/y/exo"]}})
    la, _ = launcher(tmp_path, node)
    with pytest.raises(LaunchError, match="pid-file lock") as ei:
        la.start("cluster")
    assert ei.value.facts["pid_lock"]


def test_stale_pid_file_of_a_non_exo_process_is_no_problem(tmp_path):
    node = FakeNode(files={"~/.exo/exo.pid": "555\n"},
                    procs_by_pid={555: {"pid": 555, "start": 1.0, "exe": "/bin/zsh", "cmdline": ["zsh"]}})
    la, _ = launcher(tmp_path, node)
    assert la.precheck() == []


def test_stop_existing_exo_stops_only_matched_and_lists_them(tmp_path):
    """--stop-existing-exo: the `exos` probe is asked with the configured exo and EXO.app's programs; this user's
    exo is stopped by pid with its start time and executable checked; another user's is listed, never signalled."""
    node = FakeNode(exo_procs=[{"pid": 9, "start": 5.0, "exe": "/real/exo", "cmdline": ["exo"]},
                               {"pid": 12, "start": 6.0, "exe": "/usr/bin/python3", "cmdline": ["python3", "-m", "exo"],
                                "own": False, "user": "alice", "form": "python -m exo"}],
                    procs_by_pid={9: {"pid": 9}, 12: {"pid": 12}})
    la, _ = launcher(tmp_path, node, STOP_EXISTING_EXO="true")
    rec = la.start("cluster")
    query = node.probes("exos")[0]
    assert "~/exo/.venv/bin/exo" in query["programs"]
    assert "/Applications/EXO.app/Contents/MacOS/EXO" in query["programs"]
    assert [s["pid"] for s in node.probes("stop")] == [9]
    assert node.probes("stop")[0] == {"pid": 9, "expect_start": 5.0, "expect_exe": "/real/exo", "grace_s": 15.0}
    assert [x["pid"] for x in rec.stopped_existing] == [9]
    listed = json.loads((tmp_path / "reports" / "run1" / "exo" / "node1-cluster-existing-exo.json").read_text())
    assert [x["pid"] for x in listed["found"]] == [9] and [x["pid"] for x in listed["not_ours"]] == [12]


def test_previous_run_processes_are_ours_to_stop(tmp_path):
    la, node = launcher(tmp_path)
    old = tmp_path / "reports" / "20200101T000000Z-x" / "exo"
    old.mkdir(parents=True)
    node.procs_by_pid[31] = {"pid": 31, "start": 7.0}
    rec = {"node": 1, "role": "cluster", "pid": 31, "start": 7.0, "exe": "e", "argv": [], "env": {}, "unset_env": [],
           "generation": "new", "namespace": "n", "api_url": "u", "log_path": "l", "exo_log_path": "x",
           "runner_log_path": "r", "started_at": time.time(), "node_target": "u@h1", "node_host": "mac-10.0.0.1",
           "node_boot": "boot-1"}
    (old / "node1-cluster.json").write_text(json.dumps(rec))
    la.start("cluster")
    assert node.probes("stop")[0]["pid"] == 31 and la.record.stopped_existing[0]["pid"] == 31


def test_preflight_messages(tmp_path):
    assert folder_problem(2, "/Users/me/Models/Qwen3.5-122B-A10B-4bit", "mlx-community--Qwen3.5-122B-A10B-4bit") \
        .startswith("MODEL_DIR_NODE2 ends in 'Qwen3.5-122B-A10B-4bit' but exo looks for "
                    "'mlx-community--Qwen3.5-122B-A10B-4bit' under its models dir")
    new = probe_build(FakeNode(help_text=NEW_HELP), "/a/exo")
    old = probe_build(FakeNode(help_text=OLD_HELP), "/b/exo")
    assert drift_problem({1: new, 2: old}) == \
        "exo drift: node1 NEW 0.3.70 (/real/a/exo), node2 OLD 1.0.71 (/real/b/exo)"
    assert drift_problem({1: new, 2: new}) is None


def test_exo_preflight_collects_every_problem(tmp_path):
    cfg = make_cfg(tmp_path, MODEL_DIR_NODE2="~/Models/Llama")
    nodes = {1: FakeNode(), 2: FakeNode(help_text=OLD_HELP, port_free=False, holders=[{"pid": 3, "cmd": "nginx"}])}
    pre = exo_preflight(nodes, cfg)
    text = " | ".join(pre.problems)
    assert "MODEL_DIR_NODE2 ends in 'Llama'" in text and "exo drift: node1 NEW" in text
    assert "node2: API port 52415 is in use by pid 3 (nginx)" in text
    assert set(pre.builds) == {1, 2}


def test_extra_args_and_libp2p_port_per_generation(tmp_path):
    """EXO_EXTRA_ARGS go to every exo start; EXO_LIBP2P_PORT becomes --libp2p-port on OLD and is ignored on NEW."""
    la, _ = launcher(tmp_path, FakeNode(help_text=OLD_HELP), EXO_EXTRA_ARGS="--no-batch", EXO_LIBP2P_PORT="51001")
    argv = la.command("cluster")[0]
    assert argv[argv.index("--libp2p-port") + 1] == "51001" and "--no-batch" in argv
    assert "--no-batch" in la.command("canary")[0]
    la, _ = launcher(tmp_path, EXO_EXTRA_ARGS="--no-batch", EXO_LIBP2P_PORT="51001")
    assert "--libp2p-port" not in la.command("cluster")[0] and "--no-batch" in la.command("cluster")[0]


def test_preflight_checks_extra_flags_against_each_nodes_help(tmp_path):
    """A flag exo's --help does not list (here --no-batch on an exo without it) is a preflight problem naming
    the node and the env-file line; the libp2p port's fate is one warning line."""
    env = tmp_path / "m.env"
    env.write_text('EXO_EXTRA_ARGS="--no-batch"\nEXO_LIBP2P_PORT="51001"\nEXO_CMD="/Applications/EXO.app/Contents/'
                   'Resources/exo/exo"\n')
    from modeldrop.config import load_config
    cfg = load_config({}, environ={"MODEL_ID": "a/b", "NODES": "u@h1,u@h2", "PROFILE_PATH": str(tmp_path / "p.json"),
                                   "RUN_REPORT_DIR": str(tmp_path / "r")}, env_file=env)
    with_flag = NEW_HELP.replace("[--offline]", "[--offline] [--no-batch]")
    out = exo_preflight({1: FakeNode(help_text=with_flag), 2: FakeNode(help_text=NEW_HELP)}, cfg)
    assert [p for p in out.problems if "EXO_EXTRA_ARGS" in p] == [
        f"node2: EXO_EXTRA_ARGS ({env}:1) has --no-batch, which `/Applications/EXO.app/Contents/Resources/exo/exo"
        " --help` (NEW) does not list; remove it or install an exo that has it"]
    assert out.warnings == ["EXO_LIBP2P_PORT=51001 is ignored: NEW (zenoh) exo has no libp2p port; its transport "
                            "listens on --zenoh-port (default 52414), set with EXO_EXTRA_ARGS='--zenoh-port N'"]


def test_runtime_drift_warns_exo_build_drift_fails(tmp_path):
    """MLX / Python / macOS versions that differ across nodes are warnings naming each node; exo build drift fails."""
    cfg = make_cfg(tmp_path)
    same = exo_preflight({1: FakeNode(), 2: FakeNode()}, cfg)
    assert same.warnings == [] and not any("drift" in p for p in same.problems)
    out = exo_preflight({1: FakeNode(), 2: FakeNode(mlx="0.29.0", os_version="15.6")}, cfg)
    assert "MLX drift across nodes: node1 0.30.1, node2 0.29.0" in out.warnings[0]
    assert any(w.startswith("macOS drift across nodes: node1 26.1, node2 15.6") for w in out.warnings)
    assert not any("drift" in p for p in out.problems)
    built = exo_preflight({1: FakeNode(), 2: FakeNode(help_text=OLD_HELP)}, cfg)
    assert any(p.startswith("exo drift: node1 NEW") for p in built.problems)


def test_cluster_gone_names_only_cluster_processes_that_died():
    """gone(): a cluster record whose process no longer runs; not one that answers, one the suite stopped, a canary,
    or a node whose probe failed (unknown is not gone)."""
    from modeldrop.exo.cluster import ExoCluster

    def la(pid, row=None, err=None, stopped=None, role="cluster"):
        def proc():
            if err:
                raise err
            return row
        return SimpleNamespace(record=SimpleNamespace(pid=pid, role=role, stopped=stopped), proc=proc)

    c = ExoCluster(SimpleNamespace(nodes=[SimpleNamespace(index=k) for k in (1, 2, 3, 4)]), None, None)
    c.launchers = {1: la(11), 2: la(12, row={"pid": 12}), 3: la(13, err=OSError("ssh: timed out")),
                   4: la(14, stopped={"result": "stopped-term"}), -1: la(21, role="canary")}
    assert c.gone() == {1: "pid 11"}


def test_stop_existing_exo_results_in_the_launch_record_are_redacted(tmp_path):
    """An exo found running with the token on its command line: neither the list written before the stop nor the
    launch record's `stopped_existing` holds the token."""
    token = "hf_TheTokenOnACommandLine42"
    node = FakeNode(exo_procs=[{"pid": 9, "start": 5.0, "exe": "/real/exo", "cmdline": ["exo", f"--token={token}"]}],
                    procs_by_pid={9: {"pid": 9}})
    la, _ = launcher(tmp_path, node, STOP_EXISTING_EXO="true", HF_TOKEN=token)
    rec = la.start("cluster")
    written = [p.read_text() for p in (tmp_path / "reports" / "run1" / "exo").glob("*.json")]
    assert len(written) == 2 and not any(token in text for text in written)
    assert rec.stopped_existing[0]["cmdline"] == ["exo", "--token=***"]


# -- EXO_SYNCH_FLAG: the guide's --no-fast-synch by default ---------------------------------------------------
NO_SYNCH_HELP = NEW_HELP.replace("  [--fast-synch | --no-fast-synch]\n", "")


def test_synch_flag_follows_the_guide_when_every_node_lists_it(tmp_path):
    """auto: --no-fast-synch on the canary and the cluster, recorded in the launch record; one node whose exo does
    not list it drops it everywhere (identical flags), said in one warning line naming the node and the path."""
    la, _ = launcher(tmp_path)
    assert "--no-fast-synch" in la.command("canary")[0] and "--no-fast-synch" in la.command("cluster")[0]
    assert la.start("cluster").synch_flag == "--no-fast-synch"
    cfg = make_cfg(tmp_path)
    out = exo_preflight({1: FakeNode(), 2: FakeNode(help_text=NO_SYNCH_HELP)}, cfg)
    assert out.synch.args == () and not out.problems
    assert out.warnings == ["node2: `~/exo/.venv/bin/exo --help` does not list --no-fast-synch, which the guide starts "
                            "exo with: every node runs without it (exo's default fast synch); install an exo that has "
                            "it there (exo since 2026-01-16), or set EXO_SYNCH_FLAG=exo-default to say so and drop "
                            "this line"]
    from modeldrop.exo.cluster import ExoCluster
    from tests_selftest.support.exo_fakes import FakePool
    nodes = {1: FakeNode(), 2: FakeNode(help_text=NO_SYNCH_HELP)}
    c = ExoCluster(cfg, FakePool(nodes), FakeRunFolder(tmp_path / "reports" / "run2"))
    assert "--no-fast-synch" not in c.launcher(1, role="canary").command("canary")[0]
    assert c.launcher(1).synch().label == "none (exo's default)"


def test_synch_flag_named_is_required_and_exo_default_passes_none(tmp_path):
    cfg = make_cfg(tmp_path, EXO_SYNCH_FLAG="fast-synch")
    out = exo_preflight({1: FakeNode(), 2: FakeNode(help_text=NO_SYNCH_HELP)}, cfg)
    assert out.problems == ["node2: EXO_SYNCH_FLAG (environment) asks for --fast-synch, which `~/exo/.venv/bin/exo "
                            "--help` does not list (exo would exit on it); install an exo that has it there (exo since "
                            "2026-01-16), or set EXO_SYNCH_FLAG=auto"]
    la, _ = launcher(tmp_path, EXO_SYNCH_FLAG="fast-synch")
    assert "--fast-synch" in la.command("cluster")[0] and "--no-fast-synch" not in la.command("cluster")[0]
    la, _ = launcher(tmp_path, EXO_SYNCH_FLAG="exo-default")
    argv = la.command("cluster")[0]
    assert "--fast-synch" not in argv and "--no-fast-synch" not in argv


def test_the_synch_flag_the_cluster_ran_with_goes_into_the_profile_row():
    """The startup gate notes the flag every cluster exo ran with; a green bootstrap's profile row carries it (one
    flag for all nodes, else nothing), and the profiles file accepts the field."""
    from modeldrop import profiles
    from modeldrop.plugin.reporting import synch_flag_field
    assert synch_flag_field({"exo synch flag": ["--no-fast-synch"]}) == {"exo_synch_flag": "--no-fast-synch"}
    assert synch_flag_field({"exo synch flag": ["--no-fast-synch", "none (exo's default)"]}) == {}
    assert synch_flag_field({}) == {}
    assert profiles.FIELDS["exo_synch_flag"][0] is str
