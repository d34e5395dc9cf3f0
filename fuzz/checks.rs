// What every fuzz input must satisfy. Shared by the fuzz targets (`fuzz/fuzz_targets/`, run by
// `scripts/fuzz`) and by `services/domain/tests/fuzz_corpus.rs`, which replays the kept corpus
// and every past crash on stable Rust in the ordinary test suite. Any panic is a finding.

use sagaflow_domain::Envelope;
use sagaflow_domain::values::{
    Category, Description, Priority, Reason, Resolution, SagaStatus, Status, Title, UserId,
};

/// The envelope parser (what every consumer runs on a message from the outside): it never
/// panics; what it accepts serialises, parses again, and serialises the same.
pub fn envelope(data: &[u8]) {
    let Ok(e) = Envelope::from_slice(data) else {
        return;
    };
    let _ = e.known_type();
    let _ = e.aggregate();
    let _ = e.routing_key();
    let _ = e.payload();
    let json = e.to_json();
    let again = Envelope::from_slice(json.as_bytes()).unwrap_or_else(|err| {
        panic!("an accepted envelope does not parse once serialised: {err}: {json}")
    });
    assert_eq!(again.to_json(), json, "serialising is stable");
}

/// The command bodies' field parsers: they never panic, what they accept keeps its bounds
/// (counted in characters), and parses again to the same value.
pub fn fields(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    macro_rules! bounded {
        ($($ty:ident $max:literal),+) => {$(
            if let Ok(v) = $ty::parse("f", text.clone()) {
                let n = v.as_str().chars().count();
                assert!((1..=$max).contains(&n), "{} accepted {n} characters", stringify!($ty));
                let again = $ty::parse("f", v.as_str().to_owned()).expect("accepted once, accepted again");
                assert_eq!(again.as_str(), v.as_str());
            }
        )+};
    }
    bounded!(Title 200, Description 5000, Category 100, UserId 200, Resolution 5000, Reason 2000);
    macro_rules! named {
        ($($ty:ident),+) => {$(
            if let Ok(v) = $ty::parse("f", &text) {
                assert_eq!($ty::parse("f", v.as_str()).ok(), Some(v));
            }
        )+};
    }
    named!(Priority, Status, SagaStatus);
}
