//! The docs keep working: every link between pages (and to a heading) resolves, every alert has
//! a runbook, the generated references match the code, and every `sh` block of `README.md` and
//! `docs/` runs, in order, page by page, against an all-in-one on the default ports, unless the
//! line before it says why it cannot run here (`<!-- not run: … -->`). Before a page's blocks,
//! one complaint runs through the saga, and `curl` fails on an HTTP error status.

use std::collections::BTreeSet;

use serde::Deserialize as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/markdown.rs"]
mod markdown;
#[path = "support/repo.rs"]
mod repo;

use markdown::{Block, blocks};

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");

fn root() -> PathBuf {
    repo::root().to_path_buf()
}

fn pages() -> Vec<PathBuf> {
    markdown::pages(&root())
}

/// Compares `file` (under docs/reference/) with `text`, or writes it with `UPDATE_DOCS=1`.
fn generated(file: &str, text: &str) {
    markdown::generated(
        &root().join("docs/reference").join(file),
        text,
        "UPDATE_DOCS=1 cargo test -p sagaflow --test docs",
    );
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The anchors GitHub gives a page's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        out.insert(slug);
    }
    out
}

/// `[text](target)` links outside code blocks and inline code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code is not a link.
        let visible: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = visible.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_between_pages_and_to_a_heading_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("dir").join(file)
            };
            if !dest.exists() {
                broken.push(format!(
                    "{}:{line}: {target} (no {})",
                    rel(&page),
                    rel(&dest)
                ));
                continue;
            }
            if !anchor.is_empty() && dest.extension().is_some_and(|e| e == "md") {
                let there = std::fs::read_to_string(&dest).expect("page");
                if !anchors(&there).contains(anchor) {
                    broken.push(format!(
                        "{}:{line}: {target} (no heading #{anchor})",
                        rel(&page)
                    ));
                }
            }
        }
    }
    println!("{checked} links checked");
    assert!(checked > 50, "the link scan found only {checked} links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_alert_has_a_runbook_that_its_annotation_points_to() {
    let root = root();
    let text = std::fs::read_to_string(root.join("charts/sagaflow/rules/sagaflow.rules.yaml"))
        .expect("the rules file");
    let rules: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    let index = std::fs::read_to_string(root.join("docs/runbooks/README.md")).expect("index");
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let alert = rule["alert"].as_str().expect("an alert");
        alerts.insert(alert.to_owned());
        let url = rule["annotations"]["runbook_url"].as_str();
        let want = format!("docs/runbooks/{alert}.md");
        assert_eq!(url, Some(want.as_str()), "{alert}'s runbook_url");
        let page =
            std::fs::read_to_string(root.join(&want)).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert!(
            page.starts_with(&format!("# {alert}\n")),
            "{want} is titled {alert}"
        );
        for section in [
            "## What it means",
            "## How to confirm it",
            "## What to do",
            "## How to know it is fixed",
        ] {
            assert!(page.contains(section), "{want} lacks {section:?}");
        }
        assert!(
            index.contains(&format!("]({alert}.md)")),
            "the runbook index lacks {alert}"
        );
    }
    let pages: BTreeSet<String> = std::fs::read_dir(root.join("docs/runbooks"))
        .expect("docs/runbooks")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".md").map(str::to_owned))
        .filter(|n| n != "README")
        .collect();
    assert_eq!(pages, alerts, "one runbook an alert, and no other");
}

#[test]
fn every_shell_block_is_run_or_says_why_not() {
    let mut run = 0;
    let mut reasons = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for b in blocks(&text).into_iter().filter(|b| b.info == "sh") {
            match &b.not_run {
                Some(why) if why.is_empty() => {
                    panic!("{}:{}: a `not run` mark needs a reason", rel(&page), b.line)
                }
                Some(why) => reasons.push(format!("{}:{}: {why}", rel(&page), b.line)),
                None => run += 1,
            }
        }
        for b in blocks(&text) {
            assert!(
                !b.info.is_empty(),
                "{}:{}: a code block says what it holds (sh, text, json …)",
                rel(&page),
                b.line
            );
        }
    }
    println!(
        "{run} shell blocks run; not run here:\n{}",
        reasons.join("\n")
    );
    assert!(run >= 10, "only {run} shell blocks are run");
}

/// An all-in-one on the default ports (the docs' `localhost:3005` …), its JSON logs in
/// `sagaflow.log` of the directory the blocks run in.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Self {
        for port in 3005..=3008 {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is taken: the docs' commands use the default ports; stop what listens there"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("sagaflow.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["all-in-one", "--data-dir"])
            .arg(dir.path().join("sagaflow-data"))
            .env("LOG_FORMAT", "json")
            .env_remove("DATABASE_URL")
            .env_remove("RABBITMQ_URL")
            .env_remove("REDIS_URL")
            .env_remove("MONGODB_URL")
            .env_remove("SMTP_URL")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the all-in-one");
        let running = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in 3005..=3008 {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the all-in-one did not listen on {port}: {}",
                    running.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        running
    }

    /// One complaint, created and acknowledged by mail, so that the pages' commands meet a
    /// system that has done something (metrics with samples, an audit trail, mails).
    fn one_saga(&self) {
        let script = r#"
id=$(curl -s localhost:3005/api/complaints -H 'content-type: application/json' -H 'X-Correlation-ID: docs-seed' \
  -d '{"userId":"seed","title":"A first complaint","description":"So the system has done something","priority":"LOW","category":"docs"}' | jq -r .id)
for _ in $(seq 200); do
  [ "$(curl -s "localhost:3006/api/notifications?complaintId=$id" | jq '[.items[] | select(.status == "SENT")] | length')" = 2 ] && exit 0
  sleep 0.05
done
echo "the seed complaint's two mails were not sent" >&2; exit 1
"#;
        let (ok, out) = bash(script, self.dir.path(), Duration::from_secs(30));
        assert!(ok, "seeding one saga: {out}\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sagaflow.log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` with bash in `dir`, the `sagaflow` binary first on the PATH; `(ok, output)`.
fn bash(script: &str, dir: &Path, limit: Duration) -> (bool, String) {
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // curl fails on an HTTP error, so a route the docs name wrong fails its block; a block
    // that shows a refusal says `|| true` itself.
    std::fs::write(dir.join(".curlrc"), "fail-with-body\n").expect("a .curlrc");
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("CURL_HOME", dir)
        .env("SAGAFLOW_REPO", root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return (status.success(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, format!("still running after {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_shell_blocks_of_the_docs_work_against_the_all_in_one() {
    let jq = Command::new("jq").arg("--version").output();
    assert!(
        jq.is_ok_and(|o| o.status.success()),
        "jq is not on the PATH: run `scripts/kit-tools` (it installs it; ./scripts/test does)"
    );
    let mut ran = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        let runnable: Vec<Block> = blocks(&text)
            .into_iter()
            .filter(|b| b.info == "sh" && b.not_run.is_none())
            .collect();
        if runnable.is_empty() {
            continue;
        }
        let system = Running::start();
        system.one_saga();
        // One shell a page: a block may use what an earlier one of the page set.
        let mut script = String::new();
        for b in &runnable {
            script.push_str(&format!(
                "echo '>>> {}:{}'\n{}\n",
                rel(&page),
                b.line,
                b.code
            ));
        }
        let (ok, out) = bash(&script, system.dir.path(), Duration::from_secs(120));
        println!("== {} ({} blocks)\n{out}", rel(&page), runnable.len());
        assert!(
            ok,
            "a shell block of {} failed:\n{out}\n-- the all-in-one's log:\n{}",
            rel(&page),
            system.log()
        );
        ran += runnable.len();
    }
    assert!(ran >= 10, "only {ran} blocks ran");
}

// ---------- generated references ----------

const GENERATED: &str = "Generated from the code by `services/sagaflow/tests/docs.rs`, which fails when this page \
differs from what the code says; `UPDATE_DOCS=1 cargo test -p sagaflow --test docs` writes it again.";

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("sagaflow");
    assert!(out.status.success(), "sagaflow {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[test]
fn the_command_line_reference_is_what_help_prints() {
    let mut text = format!(
        "# Command line\n\n{GENERATED}\n\nThe operator's flags are in [operator-cli.md](operator-cli.md).\n"
    );
    for args in [
        &["--help"][..],
        &["all-in-one", "--help"][..],
        &["serve", "--help"][..],
        &["bench", "--help"][..],
    ] {
        text.push_str(&format!(
            "\n## `sagaflow {}`\n\n```text\n{}\n```\n",
            args.join(" "),
            help(args)
        ));
    }
    generated("cli.md", &text);
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Rows `path | type | default | description` of a JSON Schema's properties, depth first.
fn schema_rows(
    prefix: &str,
    schema: &serde_json::Value,
    defaults: &serde_json::Value,
    rows: &mut Vec<String>,
) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    for (name, p) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let mut kind = p["type"].as_str().unwrap_or("").to_owned();
        if kind == "array" {
            kind = format!(
                "array of {}",
                p["items"]["type"].as_str().unwrap_or("objects")
            );
        }
        if let Some(values) = p["enum"].as_array() {
            let values: Vec<String> = values
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
                .collect();
            kind = values.join(", ");
        }
        let default = p
            .get("default")
            .or_else(|| defaults.get(name))
            .filter(|d| !d.is_null());
        let default = match default {
            Some(d) if d.as_str() == Some("") => "`\"\"`".to_owned(),
            Some(d) if d.is_string() || d.is_number() || d.is_boolean() => {
                format!("`{}`", d.to_string().trim_matches('"'))
            }
            Some(d)
                if d.as_object().is_some_and(|o| o.is_empty())
                    || d.as_array().is_some_and(|a| a.is_empty()) =>
            {
                format!("`{d}`")
            }
            Some(_) => "see below".to_owned(),
            None if required.contains(name.as_str()) => "required".to_owned(),
            None => "".to_owned(),
        };
        rows.push(format!(
            "| `{path}` | {kind} | {default} | {} |",
            one_line(p["description"].as_str().unwrap_or(""))
        ));
        let child_defaults = defaults
            .get(name)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        schema_rows(&path, p, &child_defaults, rows);
        if p["type"] == "array" {
            schema_rows(
                &format!("{path}[]"),
                &p["items"],
                &serde_json::Value::Null,
                rows,
            );
        }
    }
}

#[test]
fn the_crd_reference_is_what_the_crds_say() {
    let text = std::fs::read_to_string(root().join("crds/crds.yaml")).expect("crds/crds.yaml");
    let mut out = format!(
        "# Custom resources\n\n{GENERATED}\n\nEach field of the two CRDs in `crds/crds.yaml` (which `sagaflow-operator crdgen` prints), with its type, default and description; `kubectl explain` shows the same on a cluster. How the operator uses them: [operator.md](../operator.md).\n"
    );
    let mut kinds = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd =
            serde_json::to_value(serde_yaml::Value::deserialize(doc).expect("YAML")).expect("JSON");
        if crd["kind"] != "CustomResourceDefinition" {
            continue;
        }
        kinds += 1;
        let kind = crd["spec"]["names"]["kind"].as_str().expect("kind");
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        out.push_str(&format!(
            "\n## {kind} (`{}/{}`)\n\n{}\n\n| field | type | default | description |\n|---|---|---|---|\n",
            crd["spec"]["group"].as_str().unwrap_or("?"),
            version["name"].as_str().unwrap_or("?"),
            one_line(schema["description"].as_str().unwrap_or(""))
        ));
        let mut rows = Vec::new();
        for part in ["spec", "status"] {
            schema_rows(
                part,
                &schema["properties"][part],
                &serde_json::Value::Null,
                &mut rows,
            );
        }
        out.push_str(&rows.join("\n"));
        out.push('\n');
    }
    assert_eq!(kinds, 2, "EventPipeline and ComplaintSaga");
    generated("crds.md", &out);
}

/// The `#` lines above each key of values.yaml, by the key's dotted path.
fn value_comments(yaml: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comment = Vec::new();
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(c) = trimmed.strip_prefix('#') {
            comment.push(c.trim().to_owned());
            continue;
        }
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            comment.clear();
            continue;
        };
        if key.starts_with('-') || key.contains(' ') {
            comment.clear();
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let mut text = comment.join(" ");
        if let Some((_, inline)) = trimmed.split_once(" # ") {
            text = format!("{text} {inline}").trim().to_owned();
        }
        if !text.is_empty() {
            out.insert(path.join("."), text);
        }
        comment.clear();
    }
    out
}

#[test]
fn the_helm_values_reference_is_what_the_chart_says() {
    let chart = root().join("charts/sagaflow");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("values.schema.json")).expect("values.schema.json"),
    )
    .expect("JSON");
    let yaml = std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml");
    let values: serde_json::Value = serde_yaml::from_str(&yaml).expect("values.yaml");
    let comments = value_comments(&yaml);
    let mut rows = Vec::new();
    schema_rows("", &schema, &values, &mut rows);
    // The schema's description, else the comment above the key in values.yaml.
    let rows: Vec<String> = rows
        .into_iter()
        .map(|row| {
            let path = row.split('`').nth(1).unwrap_or("").to_owned();
            match (row.strip_suffix(" |"), comments.get(&path)) {
                // An empty description: the row ends with "|  |".
                (Some(head), Some(c)) if head.ends_with("| ") => format!("{head}{} |", one_line(c)),
                _ => row,
            }
        })
        .collect();
    let text = format!(
        "# Helm values\n\n{GENERATED}\n\nEvery value of `charts/sagaflow` (its `values.schema.json`, which refuses anything else at install), with its default from `values.yaml` and what it does. Installing and upgrading: [operator.md](../operator.md), [kubernetes.md](../kubernetes.md).\n\n| value | type | default | description |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    assert!(rows.len() > 30, "only {} values", rows.len());
    generated("helm-values.md", &text);
}

/// The variables the code reads, and the ones the OpenTelemetry SDK reads for it.
#[test]
fn every_environment_variable_the_code_reads_is_documented_and_no_other() {
    let root = root();
    let mut read = BTreeSet::new();
    for file in [
        "services/sagaflow/src/lib.rs",
        "services/sagaflow/src/main.rs",
        "services/runtime/src/config.rs",
        "services/runtime/src/telemetry.rs",
        "operator/src/main.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        for literal in text.split('"').skip(1).step_by(2) {
            let looks_like_a_variable = literal.len() > 3
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && literal.starts_with(|c: char| c.is_ascii_uppercase());
            if looks_like_a_variable && literal != "DIR" {
                read.insert(literal.to_owned());
            }
        }
    }
    let sdk = [
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_QUEUE_SIZE",
    ];
    let docs = std::fs::read_to_string(root.join("docs/configuration.md"))
        .expect("configuration.md")
        + &std::fs::read_to_string(root.join("docs/operator.md")).expect("operator.md");
    let mentioned: BTreeSet<String> = docs
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = read.iter().filter(|v| !mentioned.contains(*v)).collect();
    assert!(
        missing.is_empty(),
        "read by the code, not in docs/configuration.md or docs/operator.md: {missing:?}"
    );
    // Every variable of the table is one the code (or the SDK) reads.
    let config =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("configuration.md");
    let section = config
        .split("## Environment")
        .nth(1)
        .expect("an Environment section");
    let table = section.split("\n## ").next().unwrap_or(section);
    let mut listed = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            if name.ends_with('…') || name.contains(' ') {
                continue;
            }
            listed += 1;
            assert!(
                read.contains(name) || sdk.contains(&name),
                "docs/configuration.md lists {name}, which nothing reads"
            );
        }
    }
    assert!(listed > 25, "only {listed} variables listed");
}
