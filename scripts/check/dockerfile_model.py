"""A model of the Dockerfile for the kit's checks, which run where Docker cannot.

It parses a Dockerfile the way BuildKit's frontend reads it (parser directives, comments, line
continuations, exec and shell forms, instruction flags), resolves build ARGs and stages,
simulates what the build stage's cargo command produces and where its RUN copies it, follows
the COPY instructions between stages, and matches paths against .dockerignore with Docker's rules
(last matching pattern wins, a pattern matches a path or any of its parents). What it cannot
model it refuses (heredocs, ONBUILD), so a Dockerfile it accepts is one it understood.

Used by scripts/check/dockerfile.sh (`python3 dockerfile_model.py check …`) and imported by
scripts/check/tiltfile.py (a docker_build's target, build args and context).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import sys
from dataclasses import dataclass, field

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


class DockerfileError(Exception):
    """The Dockerfile is not one BuildKit would accept, or not one this model understands."""


@dataclass
class Instruction:
    line: int
    cmd: str
    flags: dict
    args: str  # the text after the flags
    exec_form: list | None  # the JSON array form, when used

    def where(self) -> str:
        return f"line {self.line}: {self.cmd}"


@dataclass
class Stage:
    index: int
    name: str | None
    base: str  # as written
    line: int
    instructions: list = field(default_factory=list)


@dataclass
class Dockerfile:
    path: str
    global_args: dict  # name -> default (None when declared without one)
    stages: list
    directives: dict

    def stage(self, ref: str) -> Stage | None:
        for s in self.stages:
            if s.name == ref.lower():
                return s
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

    def stage_names(self) -> list:
        return [s.name for s in self.stages if s.name]


# ---------------------------------------------------------------------------------------------
# Parsing

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")


def _logical_lines(text: str):
    """(line number, text) of each instruction, continuations joined, comments dropped."""
    escape = "\\"
    lines = text.splitlines()
    directives = {}
    i = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            break
        directives[m.group(1).lower()] = m.group(2)
        i += 1
    if "escape" in directives:
        escape = directives["escape"]
        if escape not in ("\\", "`"):
            raise DockerfileError(f"escape directive must be \\ or `, not {escape!r}")
    out = []
    buf, start = None, 0
    for n in range(i, len(lines)):
        raw = lines[n]
        stripped = raw.strip()
        if buf is None:
            if not stripped or stripped.startswith("#"):
                continue
            buf, start = "", n + 1
        elif stripped.startswith("#"):
            # A comment inside a continued instruction is dropped, as BuildKit does.
            continue
        elif not stripped:
            # An empty line inside a continuation is allowed (BuildKit warns about it).
            continue
        if raw.rstrip().endswith(escape):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        out.append((start, buf.strip()))
        buf = None
    if buf is not None:
        raise DockerfileError(f"line {start}: the file ends inside a continued instruction")
    return directives, out


def _split_flags(rest: str):
    """Leading `--name=value` flags of an instruction, and the text after them."""
    flags = {}
    while rest.startswith("--"):
        m = re.match(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=((?:\"[^\"]*\"|[^\s])*))?\s*", rest)
        if not m:
            break
        name, value = m.group(1), m.group(2)
        flags.setdefault(name, []).append(value if value is not None else "true")
        rest = rest[m.end():]
    return flags, rest.strip()


def parse(path: str) -> Dockerfile:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return parse_text(text, path)


def parse_text(text: str, path: str = "Dockerfile") -> Dockerfile:
    directives, logical = _logical_lines(text)
    global_args = {}
    stages = []
    for line, body in logical:
        m = re.match(r"^([A-Za-z]+)(?:\s+(.*))?$", body, re.S)
        if not m:
            raise DockerfileError(f"line {line}: cannot parse {body[:40]!r}")
        cmd, rest = m.group(1).upper(), (m.group(2) or "").strip()
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(f"line {line}: unknown instruction {m.group(1)!r}")
        if "<<" in rest and cmd in ("RUN", "COPY", "ADD") and re.search(r"<<-?['\"]?[A-Za-z]", rest):
            raise DockerfileError(f"line {line}: heredocs are not modelled by this check")
        if cmd == "ONBUILD":
            raise DockerfileError(f"line {line}: ONBUILD is not modelled by this check")
        flags, args = _split_flags(rest) if cmd in ("FROM", "RUN", "COPY", "ADD", "HEALTHCHECK") else ({}, rest)
        exec_form = None
        if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME") and args.startswith("["):
            try:
                value = json.loads(args)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                exec_form = value
            elif cmd in ("CMD", "ENTRYPOINT", "SHELL"):
                # BuildKit would silently run this as a shell command: refuse it.
                raise DockerfileError(f"line {line}: {cmd} looks like JSON but is not a JSON array of strings: {args}")
        inst = Instruction(line, cmd, flags, args, exec_form)
        if cmd == "FROM":
            parts = args.split()
            if len(parts) == 1:
                base, name = parts[0], None
            elif len(parts) == 3 and parts[1].lower() == "as":
                base, name = parts[0], parts[2].lower()
            else:
                raise DockerfileError(f"line {line}: FROM takes `image [AS name]`, got {args!r}")
            if name and name in [s.name for s in stages]:
                raise DockerfileError(f"line {line}: stage name {name!r} used twice")
            if name and not re.match(r"^[a-z][a-z0-9-_.]*$", name):
                raise DockerfileError(f"line {line}: invalid stage name {name!r}")
            stages.append(Stage(len(stages), name, base, line))
            continue
        if not stages:
            if cmd != "ARG":
                raise DockerfileError(f"line {line}: only ARG may come before the first FROM, found {cmd}")
            for k, v in _parse_arg(args, line):
                global_args[k] = v
            continue
        stages[-1].instructions.append(inst)
    if not stages:
        raise DockerfileError("no FROM: not a Dockerfile")
    return Dockerfile(path, global_args, stages, directives)


def _parse_arg(args: str, line: int):
    out = []
    for tok in shlex.split(args):
        if "=" in tok:
            k, v = tok.split("=", 1)
        else:
            k, v = tok, None
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise DockerfileError(f"line {line}: invalid ARG name {k!r}")
        out.append((k, v))
    return out


def _parse_kv(args: str, line: int, what: str):
    """LABEL/ENV `k=v k2="v 2"` (or the legacy `ENV k v`)."""
    toks = shlex.split(args, posix=True)
    if toks and "=" not in toks[0]:
        if what == "ENV" and len(toks) >= 2:
            return [(toks[0], " ".join(toks[1:]))]
        raise DockerfileError(f"line {line}: {what} needs key=value pairs")
    out = []
    for t in toks:
        if "=" not in t:
            raise DockerfileError(f"line {line}: {what} item {t!r} is not key=value")
        k, v = t.split("=", 1)
        out.append((k, v))
    return out


# ---------------------------------------------------------------------------------------------
# Variables

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, env: dict) -> str:
    def sub(m):
        name = m.group(1) or m.group(4)
        op, word = m.group(2), m.group(3)
        value = env.get(name)
        if op == "-":
            return value if value else word
        if op == "+":
            return word if value else ""
        return value or ""
    return _VAR.sub(sub, text)


def global_env(df: Dockerfile, build_args: dict) -> dict:
    env = {}
    for k, v in df.global_args.items():
        env[k] = build_args.get(k, v)
    return env


# ---------------------------------------------------------------------------------------------
# Stages, resolved for a set of build args


@dataclass
class Copy:
    inst: Instruction
    source_stage: "ResolvedStage | None"  # None: the build context
    sources: list
    dest: str  # absolute
    chown: str | None


@dataclass
class Run:
    inst: Instruction
    command: str
    mounts: list  # dicts
    workdir: str
    env: dict


@dataclass
class ResolvedStage:
    stage: Stage
    base_ref: str  # the base after ARG expansion
    base_stage: "ResolvedStage | None"
    env: dict
    workdir: str
    user: str | None
    entrypoint: Instruction | None
    cmd: Instruction | None
    expose: list
    labels: dict
    copies: list
    runs: list

    @property
    def name(self) -> str:
        return self.stage.name or str(self.stage.index)


def resolve(df: Dockerfile, target: str | None, build_args: dict | None = None, _cache=None):
    """The stage `target` (default: the last) with everything it depends on, resolved."""
    build_args = build_args or {}
    cache = {} if _cache is None else _cache
    stage = df.stages[-1] if target is None else df.stage(target)
    if stage is None:
        raise DockerfileError(f"no stage named {target!r} (stages: {', '.join(df.stage_names())})")
    return _resolve_stage(df, stage, build_args, cache, [])


def _resolve_stage(df, stage, build_args, cache, chain):
    if stage.index in cache:
        return cache[stage.index]
    if stage.index in chain:
        raise DockerfileError(f"stage {stage.name!r} depends on itself")
    chain = chain + [stage.index]
    genv = global_env(df, build_args)
    base_ref = expand(stage.base, genv)
    if not base_ref:
        raise DockerfileError(f"line {stage.line}: FROM {stage.base} expands to nothing")
    base_stage_def = df.stage(base_ref) if not re.search(r"[:/@]", base_ref) else None
    if base_stage_def is not None and base_stage_def.index >= stage.index:
        raise DockerfileError(f"line {stage.line}: FROM {base_ref} names a later stage")
    base = _resolve_stage(df, base_stage_def, build_args, cache, chain) if base_stage_def else None
    env = dict(base.env) if base else {}
    workdir = base.workdir if base else "/"
    user = base.user if base else None
    entrypoint = base.entrypoint if base else None
    cmd = base.cmd if base else None
    expose = list(base.expose) if base else []
    labels = dict(base.labels) if base else {}
    copies, runs = [], []
    scope = dict(env)
    for inst in stage.instructions:
        c = inst.cmd
        if c == "ARG":
            for k, v in _parse_arg(inst.args, inst.line):
                if k in build_args:
                    scope[k] = build_args[k]
                elif v is not None:
                    scope[k] = expand(v, scope)
                elif k in df.global_args and genv.get(k) is not None:
                    scope[k] = genv[k]
                else:
                    scope.setdefault(k, "")
        elif c == "ENV":
            for k, v in _parse_kv(inst.args, inst.line, "ENV"):
                v = expand(v, scope)
                env[k] = v
                scope[k] = v
        elif c == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, expand(inst.args, scope)))
        elif c == "USER":
            user = expand(inst.args, scope).strip()
        elif c == "ENTRYPOINT":
            entrypoint = inst
            cmd = None  # BuildKit resets CMD inherited from the base when ENTRYPOINT is set
        elif c == "CMD":
            cmd = inst
        elif c == "EXPOSE":
            for p in expand(inst.args, scope).split():
                expose.append(p)
        elif c == "LABEL":
            for k, v in _parse_kv(inst.args, inst.line, "LABEL"):
                labels[k] = expand(v, scope)
        elif c in ("COPY", "ADD"):
            if inst.exec_form is not None:
                parts = inst.exec_form
            else:
                parts = shlex.split(inst.args)
            if len(parts) < 2:
                raise DockerfileError(f"{inst.where()} needs a source and a destination")
            parts = [expand(p, scope) for p in parts]
            src_stage = None
            if "from" in inst.flags:
                ref = expand(inst.flags["from"][0], scope)
                sdef = df.stage(ref)
                if sdef is None:
                    raise DockerfileError(f"{inst.where()} --from={ref}: no such stage (an image reference is not allowed here)")
                if sdef.index >= stage.index:
                    raise DockerfileError(f"{inst.where()} --from={ref} names this or a later stage")
                src_stage = _resolve_stage(df, sdef, build_args, cache, chain)
            dest = parts[-1]
            if not dest.startswith("/"):
                dest = posixpath.join(workdir, dest) + ("/" if dest.endswith("/") else "")
            chown = inst.flags.get("chown", [None])[0]
            copies.append(Copy(inst, src_stage, parts[:-1], dest, chown))
        elif c == "RUN":
            mounts = []
            for m in inst.flags.get("mount", []):
                d = {}
                for item in m.split(","):
                    k, _, v = item.partition("=")
                    d[k] = v if v else "true"
                mounts.append(d)
            command = " ".join(inst.exec_form) if inst.exec_form else inst.args
            runs.append(Run(inst, command, mounts, workdir, dict(scope)))
    rs = ResolvedStage(stage, base_ref, base, env, workdir, user, entrypoint, cmd, expose,
                       labels, copies, runs)
    cache[stage.index] = rs
    return rs


def dependencies(rs: ResolvedStage) -> list:
    """Every stage `rs` needs (bases and COPY --from sources), `rs` included."""
    seen, order = set(), []

    def walk(s):
        if s is None or s.stage.index in seen:
            return
        seen.add(s.stage.index)
        walk(s.base_stage)
        for c in s.copies:
            walk(c.source_stage)
        order.append(s)
    walk(rs)
    return order


def context_sources(rs: ResolvedStage) -> list:
    """(instruction, path) of every file or directory the stages need from the build context."""
    out = []
    for s in dependencies(rs):
        for c in s.copies:
            if c.source_stage is None:
                for src in c.sources:
                    out.append((c.inst, posixpath.normpath(src.lstrip("/")) if src not in (".", "./") else "."))
    return out


# ---------------------------------------------------------------------------------------------
# Shell commands of RUN


def shell_segments(command: str) -> list:
    """The simple commands of a shell line, split on && || ; | (quotes respected)."""
    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    segs, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        segs.append(cur)
    return segs


_CARGO_VALUE_FLAGS = {"-p", "--package", "--bin", "--target", "--target-dir", "--profile",
                      "--features", "-F", "-j", "--jobs", "--manifest-path", "--config", "-Z"}
_CARGO_BOOL_FLAGS = {"--release", "-r", "--locked", "--frozen", "--offline", "--workspace", "--all",
                     "--bins", "--all-features", "--no-default-features", "-v", "-vv", "--verbose",
                     "-q", "--quiet", "--lib"}


@dataclass
class CargoBuild:
    run: Run
    argv: list
    release: bool
    locked: bool
    packages: list
    bins: list
    all_bins: bool
    workspace: bool
    target_triple: str | None
    target_dir: str
    profile_dir: str
    manifest_path: str | None

    def text(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


def cargo_builds(rs: ResolvedStage) -> list:
    """The `cargo build` commands of a stage's own RUN instructions."""
    return [b for run in rs.runs for b in cargo_builds_in(run)]


def _parse_cargo(run: Run, argv: list) -> CargoBuild:
    release = locked = workspace = all_bins = False
    packages, bins = [], []
    triple = target_dir = manifest = None
    profile = None
    i = 2
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        if name in _CARGO_VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise DockerfileError(f"{run.inst.where()}: cargo flag {a} has no value")
                val = argv[i]
            if name in ("-p", "--package"):
                packages.append(val)
            elif name == "--bin":
                bins.append(val)
            elif name == "--target":
                triple = val
            elif name == "--target-dir":
                target_dir = val
            elif name == "--profile":
                profile = val
            elif name == "--manifest-path":
                manifest = val
        elif name in _CARGO_BOOL_FLAGS:
            if name in ("--release", "-r"):
                release = True
            elif name in ("--locked", "--frozen"):
                locked = True
            elif name in ("--workspace", "--all"):
                workspace = True
            elif name == "--bins":
                all_bins = True
        else:
            raise DockerfileError(f"{run.inst.where()}: cargo build argument {a!r} is not modelled by this check")
        i += 1
    if profile and profile not in ("release", "dev"):
        profile_dir = profile
    elif profile == "release" or release:
        profile_dir = "release"
    else:
        profile_dir = "debug"
    if target_dir is None:
        target_dir = run.env.get("CARGO_TARGET_DIR") or "target"
    if not target_dir.startswith("/"):
        target_dir = posixpath.join(run.workdir, target_dir)
    return CargoBuild(run, argv, release or profile == "release", locked, packages, bins, all_bins,
                      workspace, triple, posixpath.normpath(target_dir), profile_dir, manifest)


def produced_binaries(build: CargoBuild, metadata: dict) -> dict:
    """bin name -> path in the build container, from `cargo metadata --no-deps` (no build)."""
    by_id = {p["id"]: p for p in metadata["packages"]}
    ws = [by_id[i] for i in metadata.get("workspace_members", []) if i in by_id]
    names = {p["name"]: p for p in ws}
    if build.packages:
        chosen = []
        for n in build.packages:
            if n not in names:
                raise DockerfileError(f"cargo build -p {n}: no such workspace package (packages: {', '.join(sorted(names))})")
            chosen.append(names[n])
    elif build.workspace:
        chosen = ws
    else:
        default = metadata.get("workspace_default_members")
        chosen = [by_id[i] for i in default if i in by_id] if default else ws
    out = {}
    for p in chosen:
        for t in p["targets"]:
            if "bin" not in t["kind"]:
                continue
            if t.get("required-features"):
                continue  # not built without those features, which the model does not enable
            out[t["name"]] = p["name"]
    if build.bins:
        missing = [b for b in build.bins if b not in out]
        if missing:
            raise DockerfileError(f"cargo build --bin {' '.join(missing)}: no such binary in the selected packages")
        out = {b: out[b] for b in build.bins}
    base = build.target_dir + (f"/{build.target_triple}" if build.target_triple else "") + f"/{build.profile_dir}"
    return {b: f"{base}/{b}" for b in out}


# ---------------------------------------------------------------------------------------------
# What a stage's filesystem holds (for the files this model tracks)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def stage_files(rs: ResolvedStage, metadata: dict | None, context_files=None) -> dict:
    """Tracked files in the stage's final filesystem: path -> description.

    Tracked are the cargo-built binaries (with where RUN copied them, cache mounts excluded),
    files copied from the context (context_files: the context paths that exist, or None to
    assume each named source exists) and files copied from other stages.
    """
    files = dict(stage_files(rs.base_stage, metadata, context_files)) if rs.base_stage else {}
    for run in rs.runs:
        caches = [m.get("target") or m.get("dst") or m.get("destination") for m in run.mounts
                  if m.get("type") == "cache"]
        live = {}
        made_dirs = set()
        builds = cargo_builds_in(run)
        segs = shell_segments(run.command)
        cwd = run.workdir
        for seg in segs:
            words = list(seg)
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)
            if not words:
                continue
            prog = posixpath.basename(words[0])
            if prog == "cargo" and len(words) > 1 and words[1] == "build":
                b = next(x for x in builds if x.argv == words)
                if metadata is None:
                    continue
                for name, path in produced_binaries(b, metadata).items():
                    live[path] = f"binary {name} built by `{b.text()}`"
            elif prog == "cd" and len(words) == 2:
                cwd = posixpath.normpath(posixpath.join(cwd, words[1]))
            elif prog == "mkdir":
                for w in words[1:]:
                    if not w.startswith("-"):
                        made_dirs.add(posixpath.normpath(posixpath.join(cwd, w)))
            elif prog in ("cp", "install", "mv"):
                args = [w for w in words[1:] if not w.startswith("-")]
                if prog == "install":
                    # install -D -m 755 SRC DEST: drop option values
                    args = []
                    skip = False
                    for w in words[1:]:
                        if skip:
                            skip = False
                            continue
                        if w in ("-m", "--mode", "-o", "-g", "-t"):
                            skip = True
                            continue
                        if not w.startswith("-"):
                            args.append(w)
                if len(args) < 2:
                    continue
                srcs, dest = args[:-1], args[-1]
                dest_abs = posixpath.normpath(posixpath.join(cwd, dest))
                is_dir = dest.endswith("/") or len(srcs) > 1 or dest_abs in made_dirs
                for s in srcs:
                    s_abs = posixpath.normpath(posixpath.join(cwd, s))
                    known = live.get(s_abs) or files.get(s_abs)
                    if known is None:
                        continue
                    target = posixpath.join(dest_abs, posixpath.basename(s_abs)) if is_dir else dest_abs
                    live[target] = known + f", {prog} to {target}"
                    if prog == "mv":
                        live.pop(s_abs, None)
        for path, desc in live.items():
            if any(c and _under(path, c) for c in caches):
                continue  # in a cache mount: gone from the image once the RUN ends
            files[path] = desc
    for c in rs.copies:
        for src in c.sources:
            dest_is_dir = c.dest.endswith("/") or len(c.sources) > 1
            if c.source_stage is not None:
                sfiles = stage_files(c.source_stage, metadata, context_files)
                s_abs = posixpath.normpath(src if src.startswith("/") else posixpath.join(c.source_stage.workdir, src))
                if s_abs in sfiles:
                    target = posixpath.join(c.dest, posixpath.basename(s_abs)) if dest_is_dir else c.dest.rstrip("/")
                    files[posixpath.normpath(target)] = sfiles[s_abs] + f", copied from stage {c.source_stage.name}"
                else:
                    for p, d in sfiles.items():
                        if _under(p, s_abs) and p != s_abs:
                            rel = p[len(s_abs.rstrip("/")) + 1:]
                            files[posixpath.normpath(posixpath.join(c.dest, rel))] = d + f", copied from stage {c.source_stage.name}"
            else:
                rel = posixpath.normpath(src.lstrip("/"))
                names = context_files(rel) if context_files else None
                if names is None:
                    target = posixpath.join(c.dest, posixpath.basename(rel)) if dest_is_dir else c.dest.rstrip("/")
                    files[posixpath.normpath(target)] = f"context {rel}"
                else:
                    for sub in names:  # files under a context directory, relative to it
                        files[posixpath.normpath(posixpath.join(c.dest, sub))] = f"context {posixpath.join(rel, sub)}"
    return files


def trace(rs: ResolvedStage, path: str, metadata: dict | None, context_is_dir=None):
    """Where the file `path` of stage `rs` comes from, following COPY back through the stages:
    ("built", description) for a cargo build artifact, ("context", relative path) for a file of
    the build context, or None when nothing in the Dockerfile puts it there.

    COPY semantics: a directory source copies its contents (not itself) into the destination; a
    file source lands at the destination, or inside it when it ends with / or there are several
    sources. context_is_dir(rel) says whether a context source is a directory (default: it ends
    with /, or exists as one in the current directory).
    """
    path = posixpath.normpath(path)
    is_dir = context_is_dir or (lambda rel: rel.endswith("/") or os.path.isdir(rel))
    for c in reversed(rs.copies):
        dest = posixpath.normpath(c.dest)
        dest_is_dir = c.dest.endswith("/") or len(c.sources) > 1
        for src in c.sources:
            s = posixpath.normpath(src)
            candidates = []
            # src is a file
            if dest_is_dir and path == posixpath.join(dest, posixpath.basename(s)):
                candidates.append(s)
            elif not dest_is_dir and path == dest:
                candidates.append(s)
            # src is a directory: its contents land under dest
            if _under(path, dest) and path != dest:
                candidates.append(posixpath.join(s, path[len(dest.rstrip("/")) + 1:]))
            for cand in candidates:
                if c.source_stage is not None:
                    hit = trace(c.source_stage, cand, metadata, context_is_dir)
                    if hit:
                        return (hit[0], hit[1] + f" (COPY --from={c.source_stage.name}, {c.inst.where()})") if hit[0] == "built" else hit
                else:
                    rel = cand.lstrip("/")
                    if cand == s and is_dir(src):
                        continue  # a directory source never lands as one file
                    return ("context", rel)
    own = {}
    if rs.runs:
        tmp = ResolvedStage(rs.stage, rs.base_ref, None, rs.env, rs.workdir, rs.user, rs.entrypoint,
                            rs.cmd, rs.expose, rs.labels, [], rs.runs)
        own = stage_files(tmp, metadata)
    if path in own:
        return ("built", own[path])
    if rs.base_stage is not None:
        return trace(rs.base_stage, path, metadata, context_is_dir)
    return None


def cargo_builds_in(run: Run) -> list:
    out = []
    for seg in shell_segments(run.command):
        words = list(seg)
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)
        if len(words) >= 2 and posixpath.basename(words[0]) == "cargo" and words[1] == "build":
            out.append(_parse_cargo(run, words))
    return out


# ---------------------------------------------------------------------------------------------
# .dockerignore (moby's patternmatcher rules)


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":
                    out += "(.*/)?"
                    i += 1
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            j = pattern.find("]", i)
            if j < 0:
                out += re.escape(ch)
            else:
                out += "[" + pattern[i + 1:j].replace("\\", "\\\\") + "]"
                i = j
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


class DockerIgnore:
    def __init__(self, lines):
        self.patterns = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = posixpath.normpath(line).lstrip("/")
            if line in ("", "."):
                continue
            self.patterns.append((exclusion, line, _pattern_regex(line)))

    @classmethod
    def load(cls, context_dir: str):
        path = os.path.join(context_dir, ".dockerignore")
        if not os.path.exists(path):
            return cls([])
        with open(path, encoding="utf-8") as f:
            return cls(f.read().splitlines())

    def excluded(self, path: str) -> bool:
        path = posixpath.normpath(path).lstrip("/")
        parts = path.split("/")
        parents = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for exclusion, _, rx in self.patterns:
            if any(rx.match(p) for p in parents):
                result = not exclusion
        return result


# ---------------------------------------------------------------------------------------------
# The check dockerfile.sh runs (everything that needs no Docker and no build)

EXPECTED_TARGETS = {"sagaflow": "sagaflow", "sagaflow-operator": "sagaflow-operator"}
# The libraries each runtime base carries; see ALLOWED_LIBS in dockerfile.sh for the reasoning.
DEBIAN_OF_BUILD = {"bookworm": "12", "trixie": "13", "bullseye": "11"}


def debian_of(image: str) -> str | None:
    for code, ver in DEBIAN_OF_BUILD.items():
        if code in image:
            return ver
    m = re.search(r"debian(\d+)", image)
    return m.group(1) if m else None


def main_check(args) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="dockerfile_model.py check")
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--context", required=True)
    ap.add_argument("--metadata", required=True, help="output of cargo metadata --no-deps --format-version 1")
    ap.add_argument("--summary", required=True, help="where to write the facts the shell part checks next")
    ap.add_argument("--rustc", default="", help="`rustc --version` of this machine, to compare")
    o = ap.parse_args(args)

    failures = []
    ok = lambda msg: print(f"  ok    {msg}")  # noqa: E731

    def fail(msg):
        failures.append(msg)
        print(f"  FAIL  {msg}")

    with open(o.metadata, encoding="utf-8") as f:
        metadata = json.load(f)
    try:
        df = parse(o.dockerfile)
    except (OSError, DockerfileError) as e:
        fail(f"{o.dockerfile}: {e}")
        return _finish(failures, o.summary, {})
    ok(f"parsed {o.dockerfile}: {len(df.stages)} stages ({', '.join(df.stage_names())}), "
       f"global ARGs {', '.join(f'{k}={v}' for k, v in df.global_args.items())}")

    # Base images: each FROM names a stage or an ARG with a pinned default.
    for s in df.stages:
        m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", s.base)
        if s.base.lower() == "scratch" or df.stage(s.base):
            continue
        if not m:
            fail(f"line {s.line}: FROM {s.base}: base images are build ARGs (FROM ${{NAME}})")
            continue
        default = df.global_args.get(m.group(1))
        if default is None:
            fail(f"line {s.line}: FROM {s.base}: ARG {m.group(1)} has no default before the first FROM")
        elif not df.stage(default) and (":" not in default.rsplit("/", 1)[-1] or default.endswith(":latest")):
            fail(f"line {s.line}: ARG {m.group(1)}={default}: pin a tag (not latest)")
    try:
        resolved = {t: resolve(df, t) for t in df.stage_names()}
    except DockerfileError as e:
        fail(str(e))
        return _finish(failures, o.summary, {})
    last = df.stages[-1].name
    if last != "sagaflow":
        fail(f"the last stage (the default target) is {last!r}; it must be 'sagaflow'")
    else:
        ok("the default target (last stage) is 'sagaflow'")

    # (a) the cargo build of the build stage
    builds = [(name, b) for name, rs in resolved.items() for b in cargo_builds(rs)]
    if len(builds) != 1:
        fail(f"expected exactly one `cargo build` in the Dockerfile, found {len(builds)}")
        return _finish(failures, o.summary, {})
    build_stage, build = builds[0]
    ok(f"stage {build_stage!r} builds with: {build.text()} (in {build.run.workdir}, {build.run.inst.where()})")
    if not build.release:
        fail("the cargo build is not --release")
    if not build.locked:
        fail("the cargo build is not --locked (Cargo.lock must decide the versions)")
    if build.release and build.locked:
        ok("the cargo build is --release --locked")
    try:
        produced = produced_binaries(build, metadata)
    except DockerfileError as e:
        fail(str(e))
        return _finish(failures, o.summary, {})
    ok(f"that command produces (cargo metadata): " + ", ".join(f"{b} at {p}" for b, p in produced.items()))

    # The build stage has the workspace: every member's manifest directory is copied in.
    brs = resolved[build_stage]
    copied = []
    for c in brs.copies:
        if c.source_stage is None:
            for src in c.sources:
                rel = posixpath.normpath(src)
                dest = c.dest.rstrip("/") if len(c.sources) == 1 and not c.dest.endswith("/") else posixpath.join(c.dest, posixpath.basename(rel))
                copied.append((rel, posixpath.normpath(dest)))
    root = metadata["workspace_root"]
    by_id = {p["id"]: p for p in metadata["packages"]}
    needed = ["Cargo.toml", "Cargo.lock"] + [
        os.path.relpath(os.path.dirname(by_id[i]["manifest_path"]), root)
        for i in metadata["workspace_members"]]
    workdir = brs.workdir
    before = len(failures)
    for rel in needed:
        hit = [(s, d) for s, d in copied if rel == s or rel.startswith(s.rstrip("/") + "/")]
        if not hit:
            fail(f"the build stage does not copy {rel} (a workspace member or manifest) from the context")
            continue
        s, d = hit[0]
        want = posixpath.normpath(posixpath.join(workdir, rel))
        got = posixpath.normpath(posixpath.join(d, rel[len(s):].lstrip("/"))) if rel != s else d
        if got != want:
            fail(f"{rel} lands at {got}, the workspace at {workdir} needs it at {want}")
    ignore = DockerIgnore.load(o.context)
    for rel in needed:
        if ignore.excluded(rel):
            fail(f".dockerignore excludes {rel}, which the build stage copies")
    for inst, src in context_sources(brs):
        if not os.path.exists(os.path.join(o.context, src)):
            fail(f"{inst.where()}: {src} does not exist in the context")
        elif ignore.excluded(src):
            fail(f"{inst.where()}: {src} is excluded by .dockerignore")
    if len(failures) == before:
        ok(f"the build stage copies the manifests and all {len(metadata['workspace_members'])} workspace members, none excluded by .dockerignore")

    # Toolchain and Debian release of the build image, against the runtime image.
    rust_default = df.global_args.get(re.sub(r"[${}]", "", df.stage(build_stage).base), "") or ""
    mver = re.search(r"rust:(\d+)\.(\d+)", rust_default)
    rv = [p.get("rust_version") for p in by_id.values() if p.get("rust_version")]
    if not mver:
        fail(f"build image {rust_default!r}: no rust:<major>.<minor> tag to check the toolchain against")
    else:
        img = (int(mver.group(1)), int(mver.group(2)))
        need = max((tuple(int(x) for x in v.split(".")[:2]) for v in rv), default=(0, 0))
        if img < need:
            fail(f"build image Rust {img[0]}.{img[1]} is older than the workspace's rust-version {need[0]}.{need[1]}")
        lm = re.search(r"rustc (\d+)\.(\d+)", o.rustc)
        if lm and img < (int(lm.group(1)), int(lm.group(2))):
            fail(f"build image Rust {img[0]}.{img[1]} is older than this machine's {o.rustc.strip()} (the code may use newer features)")
        declared = f"{need[0]}.{need[1]}" if rv else "none declared by the packages"
        ok(f"build image {rust_default}: Rust {img[0]}.{img[1]} (rust-version: {declared}; here: {o.rustc.strip() or 'no rustc'})")

    summary = {"binaries": produced, "targets": {}, "runtime_base": None}
    # (b) + (d): the runtime stages
    for target, binary in EXPECTED_TARGETS.items():
        rs = resolved.get(target)
        if rs is None:
            fail(f"no stage {target!r} (docker build --target {target})")
            continue
        print(f"  --    stage {target!r}")
        base = rs.base_ref
        chain = rs
        while chain.base_stage is not None:
            chain = chain.base_stage
            base = chain.base_ref
        summary["runtime_base"] = summary["runtime_base"] or base
        if summary["runtime_base"] != base:
            fail(f"stage {target!r} runs on {base}, the other on {summary['runtime_base']}")
        deb_b, deb_r = debian_of(rust_default), debian_of(base)
        if not deb_b or not deb_r:
            fail(f"cannot tell the Debian release of {rust_default!r} and {base!r}")
        elif deb_b != deb_r:
            fail(f"built on Debian {deb_b} ({rust_default}) but runs on Debian {deb_r} ({base}): glibc differs")
        else:
            ok(f"runs on {base}: Debian {deb_r}, as the build image (same glibc)")
        for r in rs.runs:
            fail(f"{r.inst.where()} in runtime stage {target!r}: the runtime base has no shell")
        files = stage_files(rs, metadata)
        # every binary COPYed from another stage must be one the cargo command produces
        for c in rs.copies:
            if c.source_stage is None:
                fail(f"{c.inst.where()}: the runtime stage copies from the build context")
                continue
            sfiles = stage_files(c.source_stage, metadata)
            for src in c.sources:
                s_abs = posixpath.normpath(src)
                hit = {p: d for p, d in sfiles.items() if p == s_abs or _under(p, s_abs)}
                if not hit:
                    built = [p for p, d in sfiles.items() if d.startswith("binary ")]
                    why = ""
                    st = c.source_stage
                    while st is not None and not why:
                        for r in st.runs:
                            for m in r.mounts:
                                t = m.get("target") or m.get("dst") or m.get("destination")
                                if m.get("type") == "cache" and t and _under(s_abs, t):
                                    why = (f"; {s_abs} is inside the cache mount {t} of {r.inst.where()}, which is not "
                                           f"in the image: copy the binary out of it in that same RUN")
                        st = st.base_stage
                    fail(f"{c.inst.where()} --from={c.inst.flags['from'][0]} {src}: stage {c.source_stage.name!r} "
                         f"has no such file from the cargo build (it has: {', '.join(built) or 'no binary'}){why}")
                else:
                    for p, d in hit.items():
                        ok(f"{c.inst.where()} {p}: {d}")
        ep = rs.entrypoint
        if ep is None:
            fail(f"stage {target!r} has no ENTRYPOINT")
            continue
        if ep.exec_form is None:
            fail(f"{ep.where()}: shell form runs /bin/sh -c, which the runtime image lacks; use the JSON form")
            continue
        want_path = [p for p, d in files.items() if posixpath.basename(p) == binary and d.startswith(f"binary {binary} ")]
        if ep.exec_form[:1] != want_path[:1] or len(ep.exec_form) != 1:
            fail(f"{ep.where()} {json.dumps(ep.exec_form)}: must be exactly [\"{want_path[0] if want_path else '/…/' + binary}\"], "
                 f"the {binary} binary, so that the Kubernetes args are its arguments")
        else:
            ok(f"ENTRYPOINT {json.dumps(ep.exec_form)} is the {binary} binary built above")
        cmd = rs.cmd.exec_form if rs.cmd and rs.cmd.exec_form is not None else None
        if rs.cmd is not None and cmd is None:
            fail(f"{rs.cmd.where()}: use the JSON form")
        user = rs.user
        if user is None:
            fail(f"stage {target!r} sets no USER (runAsNonRoot needs a numeric one)")
        elif not re.fullmatch(r"\d+(:\d+)?", user):
            fail(f"stage {target!r}: USER {user} is not numeric; kubelet cannot verify runAsNonRoot with a name")
        elif int(user.split(":")[0]) == 0:
            fail(f"stage {target!r}: USER {user} is root")
        else:
            ok(f"USER {user}: numeric, not root")
        labels = rs.labels
        for key in ("org.opencontainers.image.title", "org.opencontainers.image.version",
                    "org.opencontainers.image.licenses", "org.opencontainers.image.description"):
            if not labels.get(key):
                fail(f"stage {target!r} lacks the label {key}")
        ws_version = {by_id[i]["version"] for i in metadata["workspace_members"]}
        ws_license = {by_id[i].get("license") for i in metadata["workspace_members"]}
        if labels.get("org.opencontainers.image.version") not in ws_version:
            fail(f"stage {target!r}: label version {labels.get('org.opencontainers.image.version')!r} is not the workspace's {sorted(ws_version)}")
        if labels.get("org.opencontainers.image.licenses") not in ws_license:
            fail(f"stage {target!r}: label licenses {labels.get('org.opencontainers.image.licenses')!r} is not the workspace's {sorted(map(str, ws_license))}")
        if labels.get("org.opencontainers.image.title") != target:
            fail(f"stage {target!r}: label title {labels.get('org.opencontainers.image.title')!r}")
        ok(f"OCI labels: " + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in labels.items() if k.startswith("org.opencontainers")))
        summary["targets"][target] = {
            "binary": binary,
            "entrypoint": ep.exec_form,
            "cmd": cmd,
            "user": user,
            "expose": rs.expose,
            "env": rs.env,
        }
    return _finish(failures, o.summary, summary)


def _finish(failures, path, summary) -> int:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"failures": failures, **summary}, f, indent=1)
    return 1 if failures else 0


def main_deploy(args) -> int:
    """The commands and args the operator and the chart give these images, and their ports."""
    import argparse
    ap = argparse.ArgumentParser(prog="dockerfile_model.py deploy")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--out", required=True)
    o = ap.parse_args(args)
    import yaml  # the kit's Python has it (scripts/kit-tools)

    with open(o.summary, encoding="utf-8") as f:
        summary = json.load(f)
    failures = []
    facts = {}
    ok = lambda msg: print(f"  ok    {msg}")  # noqa: E731

    def fail(msg):
        failures.append(msg)
        print(f"  FAIL  {msg}")

    targets = summary.get("targets", {})
    # operator/src/workloads.rs: the container the operator gives every service.
    src_path = os.path.join(o.repo, "operator/src/workloads.rs")
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    services = re.findall(r'Kind\s*\{\s*name:\s*"([a-z-]+)",.*?port:\s*(\d+),', src, re.S)
    if len(services) != 4:
        fail(f"{src_path}: expected the 4 services in SERVICES, found {services}")
    m = re.search(r"let container = Container \{(.*?)\n\s*\};", src, re.S)
    if not m:
        fail(f"{src_path}: cannot find the `let container = Container {{ … }};` the Deployments use")
    else:
        body = m.group(1)
        args_m = re.search(r"args:\s*Some\(vec!\[(.*?)\]\)", body, re.S)
        if re.search(r"\bcommand:\s*Some", body):
            fail(f"{src_path}: the operator sets a container `command`, which replaces the image's ENTRYPOINT")
        elif not args_m:
            fail(f"{src_path}: the operator's container sets no args")
        else:
            items = [x.strip() for x in args_m.group(1).split(",") if x.strip()]
            if items != ['"serve".into()', "kind.name.into()"]:
                fail(f"{src_path}: container args are {items}, expected [\"serve\", <service>]")
            else:
                ok(f"operator/src/workloads.rs: no command, args [\"serve\", <service>] for {', '.join(n for n, _ in services)}")
        uid = re.search(r"run_as_user:\s*Some\((\d+)\)", src)
        facts["operator_run_as_user"] = int(uid.group(1)) if uid else None
    t = targets.get("sagaflow")
    if t:
        if t["entrypoint"] and len(t["entrypoint"]) == 1:
            ok(f"so the service pods run: {t['entrypoint'][0]} serve <service>")
        want_ports = sorted(str(p) for _, p in services)
        have = sorted(p.split("/")[0] for p in t["expose"])
        if have != want_ports:
            fail(f"stage sagaflow EXPOSEs {have}, the operator's services listen on {want_ports}")
        else:
            ok(f"stage sagaflow EXPOSEs {' '.join(have)}, the operator's service ports")
        if facts.get("operator_run_as_user") is not None and t["user"] and int(t["user"].split(":")[0]) != facts["operator_run_as_user"]:
            fail(f"stage sagaflow runs as {t['user']}, the operator's pods as runAsUser {facts['operator_run_as_user']}")
    facts["services"] = [{"name": n, "port": int(p)} for n, p in services]

    # The chart's and deploy/operator.yaml's operator container.
    tmpl_path = os.path.join(o.repo, "charts/sagaflow/templates/deployment.yaml")
    with open(tmpl_path, encoding="utf-8") as f:
        tmpl = f.read()
    cm = re.search(r"\n(\s*)- name: operator\n(.*?)(?=\n\1- name: |\n\s{0,6}[a-zA-Z]+:|\Z)", tmpl, re.S)
    if not cm:
        fail(f"{tmpl_path}: cannot find the container named operator")
    else:
        block = cm.group(2)
        if re.search(r"^\s*command:", block, re.M):
            fail(f"{tmpl_path}: the operator container sets `command`, which replaces the ENTRYPOINT")
        am = re.search(r"^(\s*)args:\s*\n((?:\1\s+- .*\n|\1\s+\{\{.*\n)+)", block + "\n", re.M)
        if not am:
            fail(f"{tmpl_path}: the operator container has no args list")
        else:
            lines = [l.strip() for l in am.group(2).splitlines() if l.strip().startswith("- ")]
            argv = [l[2:].strip() for l in lines]
            flags = sorted({a.split("=")[0] for a in argv if a.startswith("--")})
            facts["chart_operator_args"] = argv
            facts["chart_operator_flags"] = flags
            if not argv or argv[0] != "run":
                fail(f"{tmpl_path}: the operator's first arg is {argv[:1]}, expected run")
            else:
                ok(f"charts/sagaflow/templates/deployment.yaml: no command, args run {' '.join(flags)}")
        port = re.search(r"containerPort:\s*(\d+)", block)
        facts["chart_operator_port"] = int(port.group(1)) if port else None
        uid = re.search(r"runAsUser:\s*(\d+)", tmpl)
        facts["chart_run_as_user"] = int(uid.group(1)) if uid else None
    dep_path = os.path.join(o.repo, "deploy/operator.yaml")
    with open(dep_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deps = [d for d in docs if d.get("kind") == "Deployment"]
    for d in deps:
        for c in d["spec"]["template"]["spec"]["containers"]:
            if "command" in c:
                fail(f"{dep_path}: container {c['name']} sets command")
            elif (c.get("args") or [None])[0] != "run":
                fail(f"{dep_path}: container {c['name']} args {c.get('args')}, expected run …")
            else:
                ok(f"deploy/operator.yaml: no command, args {c['args']}")
    t = targets.get("sagaflow-operator")
    if t:
        if t["entrypoint"] and len(t["entrypoint"]) == 1:
            ok(f"so the operator pods run: {t['entrypoint'][0]} run …")
        have = sorted(p.split("/")[0] for p in t["expose"])
        want = [str(facts.get("chart_operator_port"))]
        if have != want:
            fail(f"stage sagaflow-operator EXPOSEs {have}, the chart's containerPort is {want}")
        else:
            ok(f"stage sagaflow-operator EXPOSEs {have[0]}, the chart's containerPort")
        for key in ("chart_run_as_user",):
            if facts.get(key) is not None and t["user"] and int(t["user"].split(":")[0]) != facts[key]:
                fail(f"stage sagaflow-operator runs as {t['user']}, the chart as runAsUser {facts[key]}")
        if (t.get("cmd") or [None])[0] != "run":
            fail(f"stage sagaflow-operator: CMD {t.get('cmd')}, expected [\"run\"] so that a bare run reconciles")
    with open(o.out, "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "deploy"):
        print("usage: dockerfile_model.py check|deploy …", file=sys.stderr)
        sys.exit(2)
    sys.exit(main_check(sys.argv[2:]) if sys.argv[1] == "check" else main_deploy(sys.argv[2:]))
