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

#[async_trait]
impl Mailer for Mailbox {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let name: String = mail
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path = self.dir.join(format!("{name}.eml"));
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let text = render(mail);
        // One trip to the blocking pool for the whole write (each `tokio::fs` call is one).
        let target = path.clone();
        let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            if target.exists() {
                return Ok(());
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        });
        write
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|e| MailError::Transient(format!("writing {}: {e}", path.display())))
    }
}
