//! Where the checkout the tests read is, found when they run.
//!
//! `env!("CARGO_MANIFEST_DIR")` is the directory the test binary was compiled in. Two checkouts
//! sharing one target directory (a CI clone and a working copy) can leave a binary that cargo
//! finds fresh for one checkout but that was compiled in the other: it would then read the
//! other checkout's files, or a directory since removed. Cargo and nextest set
//! `CARGO_MANIFEST_DIR` again for the test process; that one is this checkout's.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository's root: the nearest directory above the package holding `Cargo.lock`.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        package
            .ancestors()
            .find(|dir| dir.join("Cargo.lock").is_file())
            .unwrap_or_else(|| panic!("no Cargo.lock above {}", package.display()))
            .to_path_buf()
    })
}

/// A directory of the repository, named relative to its root, for `static`s.
pub struct RepoDir {
    under: &'static str,
    path: OnceLock<String>,
}

impl RepoDir {
    pub const fn new(under: &'static str) -> Self {
        Self {
            under,
            path: OnceLock::new(),
        }
    }

    pub fn as_str(&self) -> &str {
        self.path.get_or_init(|| {
            let dir = if self.under.is_empty() {
                root().to_path_buf()
            } else {
                root().join(self.under)
            };
            dir.to_str()
                .unwrap_or_else(|| panic!("{} is not UTF-8", dir.display()))
                .to_owned()
        })
    }
}

impl fmt::Display for RepoDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<Path> for RepoDir {
    fn as_ref(&self) -> &Path {
        Path::new(self.as_str())
    }
}
