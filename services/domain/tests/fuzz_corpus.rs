//! Every input the fuzzers kept (`fuzz/corpus/`) and every crash they ever found
//! (`fuzz/regressions/`) goes through the fuzz targets' own checks, on stable Rust, in the
//! ordinary test suite. The fuzzing itself is `scripts/fuzz`.

#[path = "../../sagaflow/tests/support/repo.rs"]
mod repo;

mod checks {
    include!("../../../fuzz/checks.rs");
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = repo::root().join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() && path.file_name().is_some_and(|f| f != ".gitkeep") {
                let bytes = std::fs::read(&path).expect("readable");
                let outcome = std::panic::catch_unwind(|| check(&bytes));
                assert!(
                    outcome.is_ok(),
                    "{} fails the {target} checks",
                    path.display()
                );
                n += 1;
            }
        }
    }
    n
}

#[test]
fn every_kept_envelope_input_passes_the_checks() {
    let n = replay("envelope", checks::envelope);
    assert!(n >= 10, "the envelope corpus is there ({n} inputs)");
}

#[test]
fn every_kept_field_input_passes_the_checks() {
    let n = replay("fields", checks::fields);
    assert!(n >= 5, "the fields corpus is there ({n} inputs)");
}
