//! The system under test: the four services' addresses, and the all-in-one this bench starts
//! itself with `--embedded` (a child process, so its memory is its own).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The services' base URLs (loopback only).
#[derive(Debug, Clone)]
pub struct Targets {
    pub complaint: String,
    pub notification: String,
    pub audit: String,
    pub event_store: String,
}

impl Targets {
    pub fn all(&self) -> [(&'static str, &str); 4] {
        [
            ("complaint", self.complaint.as_str()),
            ("notification", self.notification.as_str()),
            ("audit", self.audit.as_str()),
            ("event store", self.event_store.as_str()),
        ]
    }
}

/// Checks that `url` is `http://` on a loopback address: the bench never loads another machine.
pub fn loopback(name: &str, url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("http://") else {
        bail!("{name}: expected an http:// URL on this machine, got {url:?}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let is_loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !is_loopback {
        bail!(
            "{name}: the bench only drives loopback addresses (localhost, 127.0.0.1, ::1), got {url:?}"
        );
    }
    if rest.len() > authority.len() {
        bail!("{name}: give the service's base URL without a path, got {url:?}");
    }
    Ok(trimmed.to_owned())
}

/// An all-in-one started by the bench; killed when dropped.
pub struct Embedded {
    child: tokio::process::Child,
    pub pid: u32,
    pub data_dir: PathBuf,
    remove_dir: bool,
}

/// Ports nobody listens on now, below the kernel's ephemeral range.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    let mut candidate = 20_000 + (std::process::id() % 5_000) as u16 * 2;
    while ports.len() < n {
        if candidate > 32_000 {
            bail!("no free port found below 32000");
        }
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            ports.push(candidate);
        }
        candidate += 1;
    }
    Ok(ports)
}

impl Embedded {
    /// Starts `sagaflow all-in-one` (this executable) on `data_dir`, or a new directory under
    /// the system's temporary directory (removed afterwards). Its environment is ours: a
    /// `DATABASE_URL`, `RABBITMQ_URL`… there chooses its backends as it would for a user.
    pub async fn start(data_dir: Option<&Path>) -> anyhow::Result<(Self, Targets)> {
        Self::start_with(data_dir, &[], &[]).await
    }

    /// [`Self::start`] with more arguments for `all-in-one`, and environment variables set
    /// over ours.
    pub async fn start_with(
        data_dir: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Self, Targets)> {
        let (dir, remove_dir) = match data_dir {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("sagaflow-bench-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ports = free_ports(4)?;
        let log_path = dir.join("bench-system.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("all-in-one")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--complaint-port", &ports[0].to_string()])
            .args(["--notification-port", &ports[1].to_string()])
            .args(["--audit-port", &ports[2].to_string()])
            .args(["--event-store-port", &ports[3].to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the log file")?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().context("starting the all-in-one")?;
        let pid = child.id().context("the all-in-one exited at once")?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let targets = Targets {
            complaint: url(ports[0]),
            notification: url(ports[1]),
            audit: url(ports[2]),
            event_store: url(ports[3]),
        };
        let mut embedded = Self {
            child,
            pid,
            data_dir: dir,
            remove_dir,
        };
        if let Err(e) =
            wait_ready(&targets, Some(&mut embedded.child), Duration::from_secs(60)).await
        {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("{e:#}; the all-in-one said:\n{}", said.trim());
        }
        Ok((embedded, targets))
    }

    /// The peak and current resident memory, in MiB, from `/proc`.
    pub fn memory(&self) -> Option<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Waits until every service answers `/health/ready` with 200, `timeout` at most.
pub async fn wait_ready(
    targets: &Targets,
    mut child: Option<&mut tokio::process::Child>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("building the HTTP client")?;
    let deadline = Instant::now() + timeout;
    for (name, base) in targets.all() {
        loop {
            if let Some(c) = child.as_deref_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("the all-in-one exited ({status}) before it was ready");
            }
            match http.get(format!("{base}/health/ready")).send().await {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() > deadline => {
                    bail!(
                        "the {name} service at {base} was not ready within {} s",
                        timeout.as_secs()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::loopback;

    #[test]
    fn only_loopback_base_urls() {
        assert_eq!(
            loopback("u", "http://127.0.0.1:3005/").expect("loopback"),
            "http://127.0.0.1:3005"
        );
        assert!(loopback("u", "http://localhost:3005").is_ok());
        assert!(loopback("u", "http://[::1]:3005").is_ok());
        for bad in [
            "http://10.0.0.1:3005",
            "https://127.0.0.1:3005",
            "http://example.com",
            "127.0.0.1:3005",
            "http://127.0.0.1:3005/api",
        ] {
            assert!(loopback("u", bad).is_err(), "{bad} accepted");
        }
    }
}
