//! The embedded mailer: each mail is a readable `.eml` file (headers, blank line, body) in a
//! mailbox directory, named by its id. Writing is atomic (a temporary file renamed), and a mail
//! whose file exists is not written again, so a resend after a crash delivers nothing twice.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Mail, MailError, Mailer};

/// A stored mail: its headers in order, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StoredMail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Mailbox {
    dir: PathBuf,
}

impl Mailbox {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every mail in the box, parsed into headers and body.
    pub fn read_all(&self) -> std::io::Result<Vec<StoredMail>> {
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p)?;
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let headers = head
                .lines()
                .filter_map(|l| {
                    l.split_once(": ")
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect();
            out.push(StoredMail {
                headers,
                body: body.trim_end().to_owned(),
            });
        }
        Ok(out)
    }
}

/// Keeps header values on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

pub fn render(mail: &Mail) -> String {
    format!(
        "Message-ID: <{id}@sagaflow>\r\nDate: {date}\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Sagaflow-Template: {template}\r\nX-Correlation-ID: {corr}\r\nX-Complaint-ID: {complaint}\r\n\r\n{body}\r\n",
        id = one_line(&mail.id),
        date = chrono::Utc::now().to_rfc2822(),
        from = one_line(&mail.from),
        to = one_line(&mail.to),
        subject = one_line(&mail.subject),
        template = one_line(&mail.template),
        corr = one_line(&mail.correlation_id),
        complaint = one_line(&mail.complaint_id),
        body = mail.body,
    )
}

impl Mailbox {
    /// The file of a mail, named by its id.
    fn path_of(&self, mail: &Mail) -> (PathBuf, PathBuf) {
        let name: String = mail
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (
            self.dir.join(format!("{name}.eml")),
            self.dir.join(format!(".{name}.tmp")),
        )
    }

    /// Writes every mail not in the box yet: each to a temporary file made durable, renamed to
    /// its name, then the directory made durable once for all of them (the renames with it).
    /// One outcome per mail, in order; a mail already there is sent (a resend writes nothing).
    fn write_all(dir: &Path, mails: Vec<(PathBuf, PathBuf, String)>) -> Vec<Result<(), MailError>> {
        use std::io::Write as _;
        let write = |target: &Path, tmp: &Path, text: &str| -> std::io::Result<bool> {
            if target.exists() {
                return Ok(false);
            }
            let mut f = std::fs::File::create(tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            std::fs::rename(tmp, target)?;
            Ok(true)
        };
        let mut outcomes: Vec<Result<(), MailError>> = Vec::with_capacity(mails.len());
        let mut renamed = false;
        for (target, tmp, text) in &mails {
            outcomes.push(match write(target, tmp, text) {
                Ok(new) => {
                    renamed |= new;
                    Ok(())
                }
                Err(e) => Err(MailError::Transient(format!(
                    "writing {}: {e}",
                    target.display()
                ))),
            });
        }
        // Until the directory is durable, a crash may lose the renames: a mail is sent only
        // once its name is durable too.
        if renamed && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            let error = format!("syncing {}: {e}", dir.display());
            for outcome in &mut outcomes {
                if outcome.is_ok() {
                    *outcome = Err(MailError::Transient(error.clone()));
                }
            }
        }
        outcomes
    }
}

#[async_trait]
impl Mailer for Mailbox {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.send_all(std::slice::from_ref(mail))
            .await
            .pop()
            .unwrap_or_else(|| Err(MailError::Transient("no outcome".into())))
    }

    /// One trip to the blocking pool and one directory sync for the whole batch.
    async fn send_all(&self, mails: &[Mail]) -> Vec<Result<(), MailError>> {
        let files: Vec<(PathBuf, PathBuf, String)> = mails
            .iter()
            .map(|m| {
                let (target, tmp) = self.path_of(m);
                (target, tmp, render(m))
            })
            .collect();
        let dir = self.dir.clone();
        let n = files.len();
        tokio::task::spawn_blocking(move || Self::write_all(&dir, files))
            .await
            .unwrap_or_else(|e| {
                (0..n)
                    .map(|_| Err(MailError::Transient(format!("writing mails: {e}"))))
                    .collect()
            })
    }

    fn deduplicates(&self) -> bool {
        true
    }
}
