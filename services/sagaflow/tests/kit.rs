//! The local-cluster kit, checked by the closest real tools that run here (no Docker engine,
//! no Tilt): the Dockerfile against the workspace and the binaries this build made
//! (`scripts/check/dockerfile.sh`: cargo metadata, ldd, their --help), and the Tiltfile run by
//! the Starlark interpreter with stand-ins for Tilt's built-ins (`scripts/check/tiltfile.py`,
//! which renders the chart with the real helm and validates what it deploys).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/repo.rs"]
mod repo;

static ROOT: repo::RepoDir = repo::RepoDir::new("");

fn tool(var: &str, what: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: {what}; ./scripts/test exports it"))
}

/// Where this build put `sagaflow` and `sagaflow-operator`.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_sagaflow"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    assert!(
        dir.join("sagaflow-operator").exists(),
        "no sagaflow-operator beside {}: build the whole workspace (cargo build --workspace; ./scripts/test does)",
        dir.display()
    );
    dir
}

fn passed(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_dockerfile_builds_the_binaries_this_workspace_makes_and_runs_them_as_the_cluster_does() {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/check/dockerfile.sh"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .env(
            "TEST_KIT_PYTHON",
            tool(
                "TEST_KIT_PYTHON",
                "scripts/kit-tools prints KIT_PYTHON=<path>",
            ),
        )
        .current_dir(ROOT.as_str())
        .output()
        .expect("running scripts/check/dockerfile.sh");
    let text = passed("scripts/check/dockerfile.sh", &out);
    for binary in ["sagaflow", "sagaflow-operator"] {
        assert!(
            text.contains(binary),
            "the check said nothing of {binary}:\n{text}"
        );
    }
}

#[test]
fn the_tiltfile_runs_under_starlark_with_tilts_builtins_checked() {
    let python = tool(
        "TEST_KIT_PYTHON",
        "scripts/kit-tools prints KIT_PYTHON=<path>",
    );
    let out = Command::new(&python)
        .arg(format!("{ROOT}/scripts/check/tiltfile.py"))
        .env(
            "TEST_HELM",
            tool(
                "TEST_HELM",
                "scripts/kube installs helm and prints HELM=<path>",
            ),
        )
        .current_dir(ROOT.as_str())
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    passed("scripts/check/tiltfile.py", &out);
}
