//! The saga's rules (SPEC section 5), pure: which mails an event causes and to whom, and the
//! names the services agree on.

use crate::events::{ComplaintCompensationRequired, Payload};

/// The stream of a complaint's notification events.
pub fn notification_stream(complaint_id: &str) -> String {
    format!("{complaint_id}:notifications")
}

/// The stream of a complaint's audit events.
pub fn audit_stream(complaint_id: &str) -> String {
    format!("{complaint_id}:audit")
}

/// Mail templates.
pub mod templates {
    pub const CREATED_USER: &str = "complaint-created-user";
    pub const CREATED_ADMIN: &str = "complaint-created-admin";
    pub const ASSIGNED_ASSIGNEE: &str = "complaint-assigned-assignee";
    pub const ASSIGNED_USER: &str = "complaint-assigned-user";
    pub const PROCESSED_USER: &str = "complaint-processed-user";
    pub const CLOSED_USER: &str = "complaint-closed-user";
    pub const ESCALATED_ADMIN: &str = "complaint-escalated-admin";
    pub const CORRECTION: &str = "compensation-correction";
}

/// Who a mail goes to, before addresses are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user id or address (the complaint's owner, an assignee).
    User(String),
    Admin,
}

/// A mail an event calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMail {
    pub template: &'static str,
    pub to: Recipient,
    pub subject: String,
    pub body: String,
}

/// What the notification service knows of a complaint (from its CREATED event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplaintFacts {
    pub user_id: String,
    pub title: String,
}

/// The mails a complaint event calls for: CREATED to the user and the admin; ASSIGNED to the
/// assignee and the user; PROCESSED and CLOSED to the user; ESCALATED to the admin.
pub fn mails_for(event: &Payload, facts: &ComplaintFacts) -> Vec<PlannedMail> {
    let title = &facts.title;
    let user = || Recipient::User(facts.user_id.clone());
    let mail = |template, to, subject: String, body: String| PlannedMail {
        template,
        to,
        subject,
        body,
    };
    use templates::*;
    match event {
        Payload::ComplaintCreated(c) => vec![
            mail(
                CREATED_USER,
                user(),
                format!("We received your complaint: {title}"),
                format!(
                    "Your complaint \"{title}\" ({}) was received with priority {}. We will keep you informed.",
                    c.complaint_id, c.priority
                ),
            ),
            mail(
                CREATED_ADMIN,
                Recipient::Admin,
                format!("New {} complaint: {title}", c.priority),
                format!(
                    "Complaint {} by {} in {}: {}",
                    c.complaint_id, c.user_id, c.category, c.description
                ),
            ),
        ],
        Payload::ComplaintAssigned(a) => vec![
            mail(
                ASSIGNED_ASSIGNEE,
                Recipient::User(a.assigned_to.clone()),
                format!("Complaint assigned to you: {title}"),
                format!("Complaint {} (\"{title}\") is now yours.", a.complaint_id),
            ),
            mail(
                ASSIGNED_USER,
                user(),
                format!("Your complaint is being handled: {title}"),
                format!("Your complaint \"{title}\" was assigned to an agent."),
            ),
        ],
        Payload::ComplaintProcessed(p) => vec![mail(
            PROCESSED_USER,
            user(),
            format!("Update on your complaint: {title}"),
            match &p.resolution {
                Some(r) => format!("Your complaint \"{title}\" was resolved: {r}"),
                None => format!("Work on your complaint \"{title}\" has started."),
            },
        )],
        Payload::ComplaintClosed(c) => vec![mail(
            CLOSED_USER,
            user(),
            format!("Your complaint is closed: {title}"),
            match &c.reason {
                Some(r) => format!("Your complaint \"{title}\" was closed: {r}"),
                None => format!("Your complaint \"{title}\" was closed."),
            },
        )],
        Payload::ComplaintEscalated(e) => vec![mail(
            ESCALATED_ADMIN,
            Recipient::Admin,
            format!("Escalated: {title}"),
            format!(
                "Complaint {} ({}) was not assigned before its deadline {}.",
                e.complaint_id,
                e.priority,
                crate::time::format(&e.deadline)
            ),
        )],
        _ => Vec::new(),
    }
}

/// The correction sent to whoever was told of an undone step.
pub fn correction(
    facts: &ComplaintFacts,
    required: &ComplaintCompensationRequired,
) -> (String, String) {
    (
        format!("Correction about complaint: {}", facts.title),
        format!(
            "Please disregard our earlier message about complaint {} ({}): that step was undone. Reason: {}",
            required.complaint_id, required.failed_step, required.reason
        ),
    )
}

/// The event ids an action of `service` in a compensation covers (the undone steps).
pub fn compensated_event_ids(
    required: &ComplaintCompensationRequired,
    service: &str,
) -> Vec<String> {
    required
        .actions
        .iter()
        .find(|a| a.service == service)
        .and_then(|a| a.parameters.get("eventIds"))
        .and_then(|ids| ids.as_array())
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec![required.failed_event_id.clone()])
}

/// A recipient's address: the id itself when it is one, else `<id>@<domain>`.
pub fn address(user_id: &str, domain: &str) -> String {
    if user_id.contains('@') {
        user_id.to_owned()
    } else {
        format!("{user_id}@{domain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::*;
    use crate::values::{Priority, Status};
    use chrono::DateTime;

    fn facts() -> ComplaintFacts {
        ComplaintFacts {
            user_id: "alice".into(),
            title: "Kettle".into(),
        }
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        DateTime::from_timestamp(0, 0).expect("epoch")
    }

    fn who(mails: &[PlannedMail]) -> Vec<(&'static str, Recipient)> {
        mails.iter().map(|m| (m.template, m.to.clone())).collect()
    }

    #[test]
    fn each_event_mails_who_section_5_says() {
        let created = Payload::ComplaintCreated(ComplaintCreated {
            complaint_id: "c".into(),
            user_id: "alice".into(),
            title: "Kettle".into(),
            description: "d".into(),
            priority: Priority::High,
            category: "x".into(),
            created_at: at(),
        });
        assert_eq!(
            who(&mails_for(&created, &facts())),
            [
                (templates::CREATED_USER, Recipient::User("alice".into())),
                (templates::CREATED_ADMIN, Recipient::Admin)
            ]
        );
        let assigned = Payload::ComplaintAssigned(ComplaintAssigned {
            complaint_id: "c".into(),
            assigned_to: "bob".into(),
            previous_assignee: None,
            assigned_at: at(),
        });
        assert_eq!(
            who(&mails_for(&assigned, &facts())),
            [
                (templates::ASSIGNED_ASSIGNEE, Recipient::User("bob".into())),
                (templates::ASSIGNED_USER, Recipient::User("alice".into()))
            ]
        );
        let processed = Payload::ComplaintProcessed(ComplaintProcessed {
            complaint_id: "c".into(),
            status: Status::Resolved,
            resolution: Some("fixed".into()),
            processed_at: at(),
        });
        assert_eq!(
            who(&mails_for(&processed, &facts())),
            [(templates::PROCESSED_USER, Recipient::User("alice".into()))]
        );
        let closed = Payload::ComplaintClosed(ComplaintClosed {
            complaint_id: "c".into(),
            reason: None,
            closed_at: at(),
        });
        assert_eq!(
            who(&mails_for(&closed, &facts())),
            [(templates::CLOSED_USER, Recipient::User("alice".into()))]
        );
        let escalated = Payload::ComplaintEscalated(ComplaintEscalated {
            complaint_id: "c".into(),
            priority: Priority::Critical,
            deadline: at(),
            escalated_at: at(),
        });
        assert_eq!(
            who(&mails_for(&escalated, &facts())),
            [(templates::ESCALATED_ADMIN, Recipient::Admin)]
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(address("alice", "example.org"), "alice@example.org");
        assert_eq!(
            address("bob@corp.example", "example.org"),
            "bob@corp.example"
        );
    }
}
