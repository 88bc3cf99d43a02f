//! The admin console: whether it is served, and what signs its logins.

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Serve the admin console at `/admin`.
    pub enabled: bool,
    /// Signs console logins (with authentication on); every gateway needs the same one. Without
    /// it each gateway makes its own, and a login holds on that gateway only.
    pub secret: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: true,
            secret: None,
        }
    }
}
