//! Where the catalog view lives on disk, and how long a list waits for one being built.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogConfig {
    /// The directory of this host's catalog views, one file per running gateway.
    pub dir: PathBuf,
    /// How long a list waits for a view being built from the bucket before answering
    /// `503 catalog_loading`.
    pub loading_wait: Duration,
}

impl Default for CatalogConfig {
    fn default() -> CatalogConfig {
        CatalogConfig {
            dir: std::env::temp_dir().join("starcite-catalog"),
            loading_wait: Duration::from_secs(5),
        }
    }
}
