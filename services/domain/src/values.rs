//! Validated values: every field of SPEC section 7 that a user sends, parsed once at the boundary.
//!
//! A value of these types is valid by construction, so the aggregate never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a field was refused; `field` is the name the user sent it under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Declares a text newtype whose length, in characters, lies in `min..=max` and which is not
/// only whitespace.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MIN_CHARS: usize = $min;
            pub const MAX_CHARS: usize = $max;

            /// Checks the length in characters (not bytes) and refuses blank text.
            pub fn parse(field: &str, value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                let chars = value.chars().count();
                if chars < $min || value.trim().is_empty() {
                    return Err(FieldError::new(field, format!("must not be empty (at least {} characters)", $min)));
                }
                if chars > $max {
                    return Err(FieldError::new(field, format!("must be at most {} characters, got {chars}", $max)));
                }
                if value.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
                    return Err(FieldError::new(field, "must not contain control characters"));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// A complaint's title: 1 to 200 characters.
    Title, 1, 200
);
bounded_text!(
    /// A complaint's description: 1 to 5000 characters.
    Description, 1, 5000
);
bounded_text!(
    /// A complaint's category: 1 to 100 characters.
    Category, 1, 100
);
bounded_text!(
    /// A user or agent id (the complaint's owner, an assignee): 1 to 200 characters.
    UserId, 1, 200
);
bounded_text!(
    /// The text of a resolution: 1 to 5000 characters.
    Resolution, 1, 5000
);
bounded_text!(
    /// Why a complaint is closed or a step compensated: 1 to 2000 characters.
    Reason, 1, 2000
);

/// Declares a closed set of upper-case names that (de)serialise as themselves.
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the exact upper-case name; anything else names the allowed values.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
                match value {
                    $($text => Ok($name::$variant),)+
                    other => Err(FieldError::new(
                        field,
                        format!(
                            "must be one of {}, got {:?}",
                            [$($text),+].join(", "),
                            other
                        ),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

name_enum!(
    /// How urgent a complaint is; decides its assignment deadline.
    Priority {
        Low => "LOW",
        Medium => "MEDIUM",
        High => "HIGH",
        Critical => "CRITICAL",
    }
);

name_enum!(
    /// Where a complaint is in its life (SPEC section 4).
    Status {
        Open => "OPEN",
        Assigned => "ASSIGNED",
        InProgress => "IN_PROGRESS",
        Resolved => "RESOLVED",
        Closed => "CLOSED",
    }
);

name_enum!(
    /// Where a complaint's saga is (SPEC section 5).
    SagaStatus {
        Running => "RUNNING",
        Compensating => "COMPENSATING",
        Completed => "COMPLETED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_accepts_one_to_two_hundred_characters() {
        assert!(Title::parse("title", "a").is_ok());
        assert!(Title::parse("title", "é".repeat(200)).is_ok());
    }

    #[test]
    fn title_refuses_empty_blank_and_too_long() {
        assert_eq!(Title::parse("title", "").unwrap_err().field, "title");
        assert!(Title::parse("title", "   ").is_err());
        let err = Title::parse("title", "x".repeat(201)).unwrap_err();
        assert!(err.problem.contains("at most 200"), "{err}");
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        // 200 characters of 4 bytes each is a valid title.
        assert!(Title::parse("title", "🦀".repeat(200)).is_ok());
        assert!(Title::parse("title", "🦀".repeat(201)).is_err());
    }

    #[test]
    fn description_and_category_bounds() {
        assert!(Description::parse("description", "d".repeat(5000)).is_ok());
        assert!(Description::parse("description", "d".repeat(5001)).is_err());
        assert!(Category::parse("category", "c".repeat(100)).is_ok());
        assert!(Category::parse("category", "c".repeat(101)).is_err());
        assert!(Category::parse("category", "").is_err());
    }

    #[test]
    fn control_characters_are_refused_but_newlines_kept() {
        assert!(Description::parse("description", "line one\nline two\ttab").is_ok());
        assert!(Title::parse("title", "bell\u{7}").is_err());
    }

    #[test]
    fn priority_and_status_parse_exact_names_only() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse("priority", p.as_str()), Ok(*p));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse("status", s.as_str()), Ok(*s));
        }
        let err = Priority::parse("priority", "urgent").unwrap_err();
        assert_eq!(err.field, "priority");
        assert!(err.problem.contains("LOW, MEDIUM, HIGH, CRITICAL"));
        assert!(Status::parse("status", "open").is_err());
    }

    #[test]
    fn enums_serialise_as_their_names() {
        assert_eq!(
            serde_json::to_string(&Status::InProgress).unwrap(),
            "\"IN_PROGRESS\""
        );
        assert_eq!(
            serde_json::from_str::<Priority>("\"CRITICAL\"").unwrap(),
            Priority::Critical
        );
    }
}
