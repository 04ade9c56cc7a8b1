//! Why a user command failed, what to do about it, and its exit code.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | failed for another reason (the MLS engine refused, a check failed) |
//! | 2 | bad command line |
//! | 3 | configuration: none given, unreadable or invalid |
//! | 4 | token: PKCS#11 module, token, PIN or a token operation |
//! | 5 | enrolment: not enrolled yet, or enrolled already |
//! | 6 | group: unknown group, not a member, removed, cannot be recovered |
//! | 7 | the Authentication Service cannot be reached |
//! | 8 | the Delivery Service cannot be reached |
//! | 9 | the AS or the DS refused (a used enrolment token, no KeyPackage left for an identity, …) |
//! | 10 | busy: another hsmls process is using this client |

use std::path::PathBuf;

use hsmls_client::ClientError;
use hsmls_custody::CustodyError;

/// The environment variable naming the client configuration file.
pub const CLIENT_CONFIG_ENV: &str = "HSMLS_CLIENT_CONFIG";

/// A user command's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// No `--config` and no `HSMLS_CLIENT_CONFIG`.
    #[error("no client configuration: pass --config FILE or set {CLIENT_CONFIG_ENV}")]
    NoConfig,
    /// Another process holds the client's lock.
    #[error("another hsmls process is using this client (lock {0} is held)")]
    Busy(PathBuf),
    /// A local file (lock, inbox, stdin) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was read or written.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// An argument is not what the command takes.
    #[error("{0}")]
    Usage(String),
    /// The client runtime failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The category of a failure: its exit code, a name for scripts, and a
/// hint that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// The exit code.
    pub code: u8,
    /// A stable name (`config`, `token`, `not_enrolled`, …).
    pub kind: &'static str,
    /// What to do.
    pub hint: Option<String>,
}

fn cat(code: u8, kind: &'static str, hint: Option<String>) -> Category {
    Category { code, kind, hint }
}

const CONFIG_HINT: &str =
    "hsm-config/client.example.toml is a template; paths in it are relative to the file";

impl UserError {
    /// The category, exit code and hint of this failure. `config` is the
    /// configuration file in use (named in hints), `urls` the AS and DS
    /// URLs it names.
    pub fn category(&self, urls: Option<(&str, &str)>) -> Category {
        match self {
            UserError::NoConfig => cat(3, "config", Some(CONFIG_HINT.into())),
            UserError::Busy(_) => cat(
                10,
                "busy",
                Some("stop the other process first (e.g. a `hsmls receive --follow`)".into()),
            ),
            UserError::Io { .. } => cat(1, "io", None),
            UserError::Usage(_) => cat(2, "usage", None),
            UserError::Client(e) => client_category(e, urls),
        }
    }
}

fn client_category(e: &ClientError, urls: Option<(&str, &str)>) -> Category {
    let (as_url, ds_url) = urls.unwrap_or(("the configured URL", "the configured URL"));
    match e {
        ClientError::Config(_) => cat(3, "config", Some(CONFIG_HINT.into())),
        ClientError::Custody(c) => token_category(c),
        ClientError::NotEnrolled => cat(
            5,
            "not_enrolled",
            Some(
                "run `hsmls enrol --token TOKEN` with a one-time token from the AS operator \
                 (`hsmls as token issue IDENTITY`)"
                    .into(),
            ),
        ),
        ClientError::AlreadyEnrolled(_) => cat(
            5,
            "already_enrolled",
            Some("this client has its certificate; `hsmls status` shows it".into()),
        ),
        ClientError::UnknownGroup(_) => cat(
            6,
            "unknown_group",
            Some("`hsmls group list` shows this client's groups".into()),
        ),
        ClientError::GroupExists(_) => cat(6, "group_exists", None),
        ClientError::NotAMember { .. } => cat(
            6,
            "not_a_member",
            Some("`hsmls group members GROUP` shows who is in the group".into()),
        ),
        ClientError::Removed(_) => cat(6, "removed", None),
        ClientError::Unrecoverable(..) => cat(6, "unrecoverable", None),
        ClientError::As(a) => {
            use hsmls_credentials::client::ClientError as A;
            match a {
                A::Connect(_) | A::Http(_) => cat(
                    7,
                    "as_unreachable",
                    Some(format!(
                        "is the Authentication Service running at {as_url}? \
                         (authentication_service.url in the client configuration)"
                    )),
                ),
                A::Problem(_) => cat(
                    9,
                    "as_refused",
                    Some("an enrolment token is good for one enrolment of the identity it was issued for: ask the AS operator for a new one".into()),
                ),
                A::BadUrl(_) => cat(3, "config", Some(CONFIG_HINT.into())),
                _ => cat(1, "as_answer", None),
            }
        }
        ClientError::DsTransport(_) => cat(
            8,
            "ds_unreachable",
            Some(format!(
                "is the Delivery Service running at {ds_url}? \
                 (delivery_service.url in the client configuration)"
            )),
        ),
        ClientError::DsRefused(p) => cat(
            9,
            "ds_refused",
            match p.kind() {
                "no-key-package" => Some(
                    "an identity can be added once it has enrolled and published KeyPackages"
                        .into(),
                ),
                _ => None,
            },
        ),
        _ => cat(1, "failed", None),
    }
}

fn token_category(c: &CustodyError) -> Category {
    let hint = match c {
        CustodyError::TokenNotFound(_) | CustodyError::ModuleLoad { .. } => Some(
            "is the token set up? `bash scripts/setup-hsm.sh --dir DIR --token LABEL` makes a \
             SoftHSM token; SoftHSM finds it through SOFTHSM2_CONF=DIR/softhsm2.conf, and \
             custody.config in the client configuration names DIR/pkcs11.toml"
                .into(),
        ),
        CustodyError::PinIncorrect => {
            Some("check the PIN file or variable that the PKCS#11 configuration names".into())
        }
        CustodyError::Config(_) => Some(
            "custody.config in the client configuration must name a PKCS#11 configuration \
             (hsm-config/pkcs11.example.toml)"
                .into(),
        ),
        CustodyError::KeyNotFound(_) => Some(
            "this client's key is not in the token: is it the token the client enrolled with?"
                .into(),
        ),
        _ => None,
    };
    cat(4, "token", hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(UserError::NoConfig.category(None).code, 3);
        assert_eq!(UserError::Busy("x".into()).category(None).code, 10);
        let c = UserError::Client(ClientError::NotEnrolled).category(None);
        assert_eq!((c.code, c.kind), (5, "not_enrolled"));
        let c = UserError::Client(ClientError::DsTransport("refused".into()))
            .category(Some(("https://a", "https://d")));
        assert_eq!((c.code, c.kind), (8, "ds_unreachable"));
        assert!(c.hint.unwrap().contains("https://d"));
        let c = UserError::Client(ClientError::As(
            hsmls_credentials::client::ClientError::Connect("refused".into()),
        ))
        .category(Some(("https://a", "https://d")));
        assert_eq!((c.code, c.kind), (7, "as_unreachable"));
        let c = UserError::Client(ClientError::Custody(CustodyError::TokenNotFound(
            "x".into(),
        )))
        .category(None);
        assert_eq!((c.code, c.kind), (4, "token"));
        let c = UserError::Client(ClientError::UnknownGroup("ab".into())).category(None);
        assert_eq!((c.code, c.kind), (6, "unknown_group"));
    }
}
