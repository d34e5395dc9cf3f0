//! The embedded mailer: every mail appended to one mailbox file, `mail.mbox` in the mailbox
//! directory, in the mbox format mail readers open (`mutt -f`, `mail -f`): a `From ` line,
//! the headers, a blank line, the body with `From ` lines quoted (`>From `), a blank line.
//! Each message also carries its body's length (`Content-Length`), so a message cut short
//! by a crash is recognised and cut off before anything is appended again.
//!
//! A batch of mails is one append and one `fdatasync`: a mail is sent once it is durable.
//! The box remembers the ids of the last [`REMEMBERED`] mails it holds, so a mail sent
//! again under its id after a crash (the sender resends what it had claimed and not yet
//! recorded, a few hundred at most) is not written twice. Mail files of earlier versions
//! (`*.eml`, one per mail) are read and recognised too.

use std::collections::{HashSet, VecDeque};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Mail, MailError, Mailer};

/// How many of the newest mails' ids the box remembers to recognise a resend.
pub const REMEMBERED: usize = 65_536;

/// The mailbox file's name in the mailbox directory.
pub const FILE: &str = "mail.mbox";

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
    /// The appending side, opened by the first send (a box opened only to be read never
    /// touches the file); `None` again after a failed write, so the next send re-reads it.
    writer: Arc<Mutex<Option<Writer>>>,
}

/// The open mailbox file and the ids it holds.
#[derive(Debug)]
struct Writer {
    file: std::fs::File,
    /// The file's length: the end of its last whole message.
    len: u64,
    recent: HashSet<String>,
    order: VecDeque<String>,
    /// Ids of the one-file-per-mail box of earlier versions.
    legacy: HashSet<String>,
}

impl Mailbox {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            writer: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The mailbox file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Every mail in the box, parsed into headers and body, oldest first: the mail files of
    /// earlier versions, then the mailbox file's messages (a message still being written is
    /// left out).
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
            out.push(StoredMail {
                headers: parse_headers(head),
                body: body.trim_end().to_owned(),
            });
        }
        let bytes = match std::fs::read(self.file()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (messages, _) = parse_mbox(&bytes);
        out.extend(messages.into_iter().map(|m| m.mail));
        Ok(out)
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    head.lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Keeps header values on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// A mail's headers, in order.
fn headers(mail: &Mail) -> Vec<(&'static str, String)> {
    vec![
        ("Message-ID", format!("<{}@sagaflow>", one_line(&mail.id))),
        ("Date", chrono::Utc::now().to_rfc2822()),
        ("From", one_line(&mail.from)),
        ("To", one_line(&mail.to)),
        ("Subject", one_line(&mail.subject)),
        ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ("X-Sagaflow-Template", one_line(&mail.template)),
        ("X-Correlation-ID", one_line(&mail.correlation_id)),
        ("X-Complaint-ID", one_line(&mail.complaint_id)),
    ]
}

/// A mail as one mbox message: `From ` line, headers with the quoted body's length, blank
/// line, body (lines matching `>*From ` get one more `>`), blank line.
pub fn render(mail: &Mail) -> String {
    let mut body = String::with_capacity(mail.body.len() + 16);
    for line in mail
        .body
        .replace("\r\n", "\n")
        .trim_end_matches('\n')
        .split('\n')
    {
        if line.trim_start_matches('>').starts_with("From ") {
            body.push('>');
        }
        body.push_str(line);
        body.push('\n');
    }
    let mut out = format!(
        "From sagaflow {}\n",
        chrono::Utc::now().format("%a %b %e %H:%M:%S %Y")
    );
    for (name, value) in headers(mail) {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
    }
    out.push_str(&format!("Content-Length: {}\n\n", body.len()));
    out.push_str(&body);
    out.push('\n');
    out
}

/// A message read back from the mailbox file.
struct Parsed {
    mail: StoredMail,
    /// Its id, from `Message-ID`.
    id: Option<String>,
}

/// The whole messages at the start of `bytes`, and where the last of them ends: whatever
/// follows (a message cut short by a crash, or one being written) is not a message.
fn parse_mbox(bytes: &[u8]) -> (Vec<Parsed>, usize) {
    let mut messages = Vec::new();
    let mut at = 0;
    while let Some((parsed, next)) = parse_one(bytes, at) {
        messages.push(parsed);
        at = next;
    }
    (messages, at)
}

/// The message starting at `at`, and where the next one starts.
fn parse_one(bytes: &[u8], at: usize) -> Option<(Parsed, usize)> {
    let rest = bytes.get(at..)?;
    if !rest.starts_with(b"From ") {
        return None;
    }
    let from_end = rest.iter().position(|b| *b == b'\n')? + 1;
    let head_len = rest
        .get(from_end..)?
        .windows(2)
        .position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(rest.get(from_end..from_end + head_len)?).ok()?;
    let headers = parse_headers(head);
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))?
        .1
        .trim()
        .parse()
        .ok()?;
    let body_start = from_end + head_len + 2;
    let body = std::str::from_utf8(rest.get(body_start..body_start + length)?).ok()?;
    // A whole message ends with the blank line after its body.
    if rest.get(body_start + length) != Some(&b'\n') {
        return None;
    }
    let unquoted: Vec<&str> = body
        .trim_end_matches('\n')
        .split('\n')
        .map(|line| {
            if line.starts_with('>') && line.trim_start_matches('>').starts_with("From ") {
                &line[1..]
            } else {
                line
            }
        })
        .collect();
    let id = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Message-ID"))
        .map(|(_, v)| id_of(v));
    let mail = StoredMail {
        headers: headers
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("Content-Length"))
            .collect(),
        body: unquoted.join("\n").trim_end().to_owned(),
    };
    Some((Parsed { mail, id }, at + body_start + length + 1))
}

/// The mail id in a `Message-ID` value (`<id@sagaflow>`).
fn id_of(message_id: &str) -> String {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    inner.strip_suffix("@sagaflow").unwrap_or(inner).to_owned()
}

/// The file name a mail had in the one-file-per-mail box of earlier versions.
fn legacy_name(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

impl Writer {
    /// Opens the mailbox file for appending: reads the ids it holds, and cuts off a message
    /// a crash left unfinished.
    fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (messages, end) = parse_mbox(&bytes);
        if end < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                cut = bytes.len() - end,
                "the mailbox ends with an unfinished message (a crash while writing): cutting it off"
            );
            file.set_len(end as u64)?;
            file.sync_data()?;
        }
        file.seek(std::io::SeekFrom::Start(end as u64))?;
        let mut writer = Self {
            file,
            len: end as u64,
            recent: HashSet::new(),
            order: VecDeque::new(),
            legacy: HashSet::new(),
        };
        let skip = messages.len().saturating_sub(REMEMBERED);
        for id in messages.into_iter().skip(skip).filter_map(|m| m.id) {
            writer.remember(id);
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "eml")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                writer.legacy.insert(stem.to_owned());
            }
        }
        Ok(writer)
    }

    fn remember(&mut self, id: String) {
        if self.recent.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn holds(&self, id: &str) -> bool {
        self.recent.contains(id)
            || (!self.legacy.is_empty() && self.legacy.contains(&legacy_name(id)))
    }

    /// Appends the mails it does not hold yet in one write, made durable by one
    /// `fdatasync`. On a failure the file is cut back to where it was.
    fn append(&mut self, mails: &[(String, String)]) -> std::io::Result<()> {
        let mut text = String::new();
        let mut new = Vec::new();
        for (id, rendered) in mails {
            if self.holds(id) || new.contains(id) {
                continue;
            }
            text.push_str(rendered);
            new.push(id.clone());
        }
        if new.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.file.set_len(self.len)?;
            self.file.seek(std::io::SeekFrom::Start(self.len))?;
            return Err(e);
        }
        self.len += text.len() as u64;
        for id in new {
            self.remember(id);
        }
        Ok(())
    }
}

impl Mailbox {
    /// Appends the batch (see [`Writer::append`]); the outcome is the batch's.
    fn write_all(
        dir: &Path,
        writer: &Mutex<Option<Writer>>,
        mails: &[(String, String)],
    ) -> Result<(), MailError> {
        let fail = |e: std::io::Error| {
            MailError::Transient(format!("writing {}: {e}", dir.join(FILE).display()))
        };
        let mut slot = writer
            .lock()
            .map_err(|_| MailError::Transient("the mailbox's writer panicked".into()))?;
        if slot.is_none() {
            *slot = Some(Writer::open(dir).map_err(fail)?);
        }
        let Some(open) = slot.as_mut() else {
            return Err(MailError::Transient("the mailbox is not open".into()));
        };
        open.append(mails).map_err(|e| {
            // Read the file again before the next append: a failed cut may have left a part.
            *slot = None;
            fail(e)
        })
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

    /// One trip to the blocking pool, one append and one `fdatasync` for the whole batch.
    async fn send_all(&self, mails: &[Mail]) -> Vec<Result<(), MailError>> {
        let rendered: Vec<(String, String)> =
            mails.iter().map(|m| (m.id.clone(), render(m))).collect();
        let (dir, writer) = (self.dir.clone(), self.writer.clone());
        let n = rendered.len();
        let outcome =
            tokio::task::spawn_blocking(move || Self::write_all(&dir, &writer, &rendered))
                .await
                .unwrap_or_else(|e| Err(MailError::Transient(format!("writing mails: {e}"))));
        vec![outcome; n]
    }

    fn deduplicates(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(id: &str, body: &str) -> Mail {
        Mail {
            id: id.into(),
            from: "complaints@example.com".into(),
            to: "someone@example.com".into(),
            subject: "Your complaint".into(),
            body: body.into(),
            template: "complaint-created".into(),
            correlation_id: "corr".into(),
            complaint_id: "c-1".into(),
        }
    }

    #[tokio::test]
    async fn mails_read_back_as_sent_with_from_lines_in_bodies_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let box_ = Mailbox::open(dir.path()).expect("open");
        let body = "Hello\nFrom the start\n>From quoted already\n\nbye";
        let sent = box_.send_all(&[mail("a", body), mail("b", "two")]).await;
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        let read = Mailbox::open(dir.path())
            .expect("open")
            .read_all()
            .expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].body, body);
        assert_eq!(read[0].header("Message-ID"), Some("<a@sagaflow>"));
        assert_eq!(read[0].header("X-Complaint-ID"), Some("c-1"));
        assert_eq!(read[1].body, "two");
        let text = std::fs::read_to_string(box_.file()).expect("file");
        assert!(text.contains("\n>From the start\n"), "{text}");
        assert!(text.contains("\n>>From quoted already\n"), "{text}");
    }

    #[tokio::test]
    async fn a_resend_under_the_same_id_is_written_once_even_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Mailbox::open(dir.path()).expect("open");
        assert!(first.send(&mail("a", "one")).await.is_ok());
        assert!(first.send(&mail("a", "one")).await.is_ok());
        let again = Mailbox::open(dir.path()).expect("open");
        let sent = again
            .send_all(&[mail("a", "one"), mail("b", "two"), mail("b", "two")])
            .await;
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        let ids: Vec<String> = again
            .read_all()
            .expect("read")
            .iter()
            .filter_map(|m| m.header("Message-ID").map(str::to_owned))
            .collect();
        assert_eq!(ids, ["<a@sagaflow>", "<b@sagaflow>"]);
    }

    #[tokio::test]
    async fn a_message_cut_short_by_a_crash_is_not_read_and_is_cut_off_before_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let box_ = Mailbox::open(dir.path()).expect("open");
        assert!(box_.send(&mail("a", "one")).await.is_ok());
        let whole = std::fs::read(box_.file()).expect("file");
        // A crash in the middle of the next message's body.
        let torn = render(&mail("b", "a longer body that was being written"));
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&torn.as_bytes()[..torn.len() - 10]);
        std::fs::write(box_.file(), &bytes).expect("write");
        let reader = Mailbox::open(dir.path()).expect("open");
        assert_eq!(reader.read_all().expect("read").len(), 1);
        // Reading alone leaves the file as it is (a reader never races the writer).
        assert_eq!(std::fs::read(box_.file()).expect("file"), bytes);
        let writer = Mailbox::open(dir.path()).expect("open");
        assert!(writer.send(&mail("b", "sent again")).await.is_ok());
        let read = writer.read_all().expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].body, "sent again");
        assert!(
            std::fs::read(writer.file())
                .expect("file")
                .starts_with(&whole)
        );
    }

    #[tokio::test]
    async fn mails_of_the_one_file_per_mail_box_are_read_and_not_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("old-1.eml"),
            "Message-ID: <old-1@sagaflow>\r\nTo: x@example.com\r\n\r\nold body\r\n",
        )
        .expect("write");
        let box_ = Mailbox::open(dir.path()).expect("open");
        assert!(
            box_.send_all(&[mail("old-1", "x"), mail("new", "y")])
                .await
                .iter()
                .all(Result::is_ok)
        );
        let read = box_.read_all().expect("read");
        let ids: Vec<&str> = read.iter().filter_map(|m| m.header("Message-ID")).collect();
        assert_eq!(ids, ["<old-1@sagaflow>", "<new@sagaflow>"]);
        assert_eq!(read[0].body, "old body");
    }
}
