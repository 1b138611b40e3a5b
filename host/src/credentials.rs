//! What a host presents to NATS and Redis ([`NatsAuth`], [`RedisAuth`],
//! [`TlsFiles`]), and keeping it out of what is printed: a [`Secret`] never
//! shows its value, and [`redact_url`] masks the password (or token) of a
//! URL before it reaches a log line or an error.

use std::fmt;
use std::path::PathBuf;

/// A password or token. Its `Debug` and `Display` show `***`; the value is
/// read only with [`Secret::expose`], where it is handed to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `text` with the credentials of every URL in it masked:
/// `nats://user:pass@host` becomes `nats://user:***@host`, and
/// `nats://token@host` (a user part with no password, which NATS reads
/// as a token) becomes `nats://***@host`. Works on comma-separated lists
/// and on URLs inside longer text; text without `://` comes back as is.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#', ',' or blank.
        let end = after.find(['/', '?', '#', ',', ' ', '"', '\'']).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(sign) => {
                let userinfo = &authority[..sign];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                out.push_str(&authority[sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Files of a TLS connection, all PEM. Giving any of them requires TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Certificates of the authorities the server's certificate must
    /// chain to (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// This client's certificate, for servers that verify clients
    /// (with `key`).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// How a host authenticates to NATS. At most one of user and password,
/// token, nkey seed and credentials file; the URL's user and password (or
/// token) count as given here.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<Secret>,
    /// Token (the server's `authorization { token }`).
    pub token: Option<Secret>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    /// A `.creds` file: a user JWT and its nkey seed (decentralized auth).
    pub creds: Option<PathBuf>,
    /// TLS: a CA, and a client certificate and key.
    pub tls: TlsFiles,
}

/// How a host authenticates to Redis, beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct RedisAuth {
    /// ACL user (overrides the URL's).
    pub user: Option<String>,
    /// Password (overrides the URL's).
    pub password: Option<Secret>,
    /// TLS files (need a `rediss://` URL).
    pub tls: TlsFiles,
}

/// The credentials a URL carries in its user part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `scheme://user:password@host`.
    User(String, Secret),
    /// `scheme://token@host` (NATS reads a lone user part as a token).
    Token(Secret),
}

/// Splits the credentials off a comma-separated list of URLs: the list
/// without them (safe to print), and the first credentials found,
/// percent-decoded. Fails, without echoing the input, when a URL does
/// not parse or two URLs carry different credentials.
pub fn strip_credentials(urls: &str) -> Result<(String, Option<UrlCredentials>), String> {
    let mut clean = Vec::new();
    let mut found: Option<UrlCredentials> = None;
    for (n, text) in urls.split(',').map(str::trim).enumerate() {
        if text.is_empty() {
            return Err(format!("URL number {} of the list is empty", n + 1));
        }
        // A bare `host:port` is a URL for NATS; give it a scheme to parse.
        let with_scheme = if text.contains("://") { text.to_owned() } else { format!("nats://{text}") };
        let mut url =
            url::Url::parse(&with_scheme).map_err(|e| format!("invalid URL {}: {e}", redact_url(&with_scheme)))?;
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let here = match (url.username(), url.password()) {
            ("", None) => None,
            (user, Some(password)) => Some(UrlCredentials::User(decode(user), Secret::new(decode(password)))),
            (token, None) => Some(UrlCredentials::Token(Secret::new(decode(token)))),
        };
        if let Some(here) = here {
            match &found {
                Some(first) if *first != here => {
                    return Err("the URLs of the list carry different credentials; give them once".into());
                }
                _ => found = Some(here),
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        clean.push(if text.contains("://") {
            url.to_string().trim_end_matches('/').to_owned()
        } else {
            url[url::Position::BeforeHost..].trim_end_matches('/').to_owned()
        });
    }
    Ok((clean.join(","), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_and_tokens() {
        assert_eq!(redact_url("nats://alice:s3cret@127.0.0.1:4222"), "nats://alice:***@127.0.0.1:4222");
        assert_eq!(redact_url("nats://t0ken@h:1"), "nats://***@h:1");
        assert_eq!(redact_url("rediss://:pw@h:6380/0"), "rediss://:***@h:6380/0");
        assert_eq!(redact_url("redis://u:p%40ss@h"), "redis://u:***@h");
        assert_eq!(redact_url("nats://a:b@x,nats://c:d@y"), "nats://a:***@x,nats://c:***@y");
        assert_eq!(
            redact_url("cannot connect to NATS at nats://a:b@x:1: refused"),
            "cannot connect to NATS at nats://a:***@x:1: refused"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("no url here"), "no url here");
    }

    #[test]
    fn credentials_come_off_the_url() {
        let (clean, creds) = strip_credentials("nats://al%40ce:p%3Ass@127.0.0.1:4222").expect("valid");
        assert_eq!(clean, "nats://127.0.0.1:4222");
        assert_eq!(creds, Some(UrlCredentials::User("al@ce".into(), Secret::new("p:ss"))));
        let (clean, creds) = strip_credentials("tls://tok@a:1, nats://tok@b:2").expect("valid");
        assert_eq!(clean, "tls://a:1,nats://b:2");
        assert_eq!(creds, Some(UrlCredentials::Token(Secret::new("tok"))));
        assert_eq!(strip_credentials("127.0.0.1:4222").expect("valid"), ("127.0.0.1:4222".into(), None));
        let err = strip_credentials("nats://a:b@x:1,nats://a:c@y:1").expect_err("fails");
        assert!(err.contains("different credentials") && !err.contains(":b@") && !err.contains(":c@"), "{err}");
        let err = strip_credentials("nats://u:hunter2@[bad").expect_err("fails");
        assert!(err.starts_with("invalid URL") && !err.contains("hunter2"), "{err}");
        assert!(strip_credentials("nats://a:1,").is_err());
    }

    #[test]
    fn never_prints_a_secret() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
