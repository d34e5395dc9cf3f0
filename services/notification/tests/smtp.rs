//! The SMTP mailer against the project's SMTP sink: delivered mails carry their headers, a 550
//! is permanent, a 451 and a refused connection transient. Needs the sink:
//! `scripts/backends smtp` starts it (`TEST_SMTP_URL`, `TEST_SMTP_SINK` override the defaults).

use sagaflow_notification::mailer::smtp::Smtp;
use sagaflow_notification::mailer::{Mail, MailError, Mailer};
use serde_json::Value;

fn smtp_url() -> String {
    std::env::var("TEST_SMTP_URL").unwrap_or_else(|_| "smtp://127.0.0.1:2525".into())
}

fn sink() -> String {
    std::env::var("TEST_SMTP_SINK").unwrap_or_else(|_| "http://127.0.0.1:8025".into())
}

fn mail(to: &str) -> Mail {
    Mail {
        id: uuid::Uuid::new_v4().to_string(),
        from: "sagaflow@example.com".into(),
        to: to.into(),
        subject: "Your complaint is closed: Kettle".into(),
        body: "Your complaint \"Kettle\" was closed.".into(),
        template: "complaint-closed-user".into(),
        correlation_id: "saga-smtp".into(),
        complaint_id: "c-smtp".into(),
    }
}

async fn captured(to: &str) -> Vec<Value> {
    let res = reqwest::get(format!("{}/messages?to={to}", sink()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the SMTP sink is not answering at {}: {e}. Start it with scripts/backends smtp",
                sink()
            )
        });
    res.json().await.expect("json")
}

#[tokio::test]
async fn a_mail_arrives_with_its_headers() {
    let to = format!("u{}@example.com", uuid::Uuid::new_v4().simple());
    let m = mail(&to);
    Smtp::new(&smtp_url())
        .expect("url")
        .send(&m)
        .await
        .expect("send");
    let got = captured(&to).await;
    assert_eq!(got.len(), 1);
    let h = &got[0]["headers"];
    assert_eq!(h["Subject"], m.subject);
    assert_eq!(h["X-Sagaflow-Template"], "complaint-closed-user");
    assert_eq!(h["X-Complaint-ID"], "c-smtp");
    assert_eq!(h["X-Correlation-ID"], "saga-smtp");
    assert_eq!(h["Message-ID"], format!("<{}@sagaflow>", m.id));
    assert!(
        got[0]["body"]
            .as_str()
            .expect("body")
            .contains("was closed")
    );
}

#[tokio::test]
async fn a_550_is_permanent_and_a_451_transient() {
    let smtp = Smtp::new(&smtp_url()).expect("url");
    let refused = smtp.send(&mail("refuse-agent@example.com")).await;
    assert!(
        matches!(refused, Err(MailError::Permanent(ref e)) if e.contains("550")),
        "{refused:?}"
    );
    let later = smtp.send(&mail("later-agent@example.com")).await;
    assert!(
        matches!(later, Err(MailError::Transient(ref e)) if e.contains("451")),
        "{later:?}"
    );
}

#[tokio::test]
async fn mails_in_a_row_and_after_a_refusal_all_arrive_once() {
    // The mailer keeps its sessions open: a session a refusal ended must not carry the next
    // mail, and a kept one must deliver each mail once.
    let smtp = Smtp::new(&smtp_url()).expect("url");
    let to = format!("u{}@example.com", uuid::Uuid::new_v4().simple());
    let mut sent = Vec::new();
    for round in 0..3 {
        for _ in 0..4 {
            let m = mail(&to);
            smtp.send(&m).await.expect("send");
            sent.push(format!("<{}@sagaflow>", m.id));
        }
        let refused = smtp.send(&mail("refuse-agent@example.com")).await;
        assert!(
            matches!(refused, Err(MailError::Permanent(_))),
            "round {round}: {refused:?}"
        );
    }
    let mut got: Vec<String> = captured(&to)
        .await
        .iter()
        .map(|m| m["headers"]["Message-ID"].as_str().unwrap_or("").to_owned())
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_relay_that_is_not_there_is_transient() {
    let r = Smtp::new("smtp://127.0.0.1:1")
        .expect("url")
        .send(&mail("a@example.com"))
        .await;
    assert!(matches!(r, Err(MailError::Transient(_))), "{r:?}");
}

#[test]
fn a_bad_smtp_url_names_the_variable_without_its_password() {
    for url in ["http://x", "smtp://", "smtp://host:port"] {
        let e = Smtp::new(url).expect_err("bad url");
        assert!(e.to_string().starts_with("SMTP_URL"), "{e}");
    }
    let e = Smtp::new("smtps://u:hunter2@host").expect_err("bad scheme");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
