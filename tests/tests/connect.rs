//! Authenticated connections: a node joins NATS servers that require a
//! user and password, a token, an nkey, a `.creds` file or TLS with client
//! certificates, and Redis servers that require a password, an ACL user or
//! TLS; a dispatch through each mesh completes. Wrong or missing
//! credentials fail the start with the reason, and no error, log line or
//! help text shows a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anocast::{Host, HostConfig, MeshConfig, NatsAuth, RedisAuth, Secret, Status, TlsFiles, Topic};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{PluginDir, guests, options};
use base64::Engine;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

/// A node with the echo plugin in the mesh `mesh` describes; its data
/// folder lives in `data`.
async fn start_node(dir: &PluginDir, data: &Path, mut mesh: MeshConfig) -> anyhow::Result<Host> {
    mesh.trust_mesh = true;
    mesh.data_dir = Some(data.to_path_buf());
    mesh.connect_timeout = Duration::from_secs(3);
    Host::start(HostConfig {
        plugins: Some(dir.path().to_path_buf()),
        node_id: "auth-node".into(),
        mesh: Some(mesh),
        ..Default::default()
    })
    .await
}

/// Starts a node on `mesh` and dispatches `echo` through NATS and Redis.
async fn dispatch_through(mesh: MeshConfig) -> anyhow::Result<()> {
    let (dir, data) = (PluginDir::with(&[guests::ECHO])?, tempfile::tempdir()?);
    let host = start_node(&dir, data.path(), mesh).await?;
    let outcome = host.dispatcher().dispatch(Topic::parse("echo")?, b"hi".to_vec(), &options(3000, 10_000)).await?;
    anyhow::ensure!(outcome.status == Status::Complete, "{}", outcome.to_json());
    Ok(())
}

/// Starting a node on `mesh` fails; returns the whole error chain.
async fn start_fails(mesh: MeshConfig) -> String {
    let (dir, data) = (PluginDir::with(&[]).expect("plugins folder"), tempfile::tempdir().expect("data folder"));
    match start_node(&dir, data.path(), mesh).await {
        Ok(_) => panic!("the node started without the right credentials"),
        Err(err) => format!("{err:#}"),
    }
}

fn nats_url(nats: &Nats, userinfo: &str) -> String {
    format!("nats://{userinfo}127.0.0.1:{}", nats.port())
}

#[tokio::test]
async fn nats_user_and_password_from_the_url_or_the_settings() -> anyhow::Result<()> {
    let nats = Nats::start_with_config("authorization { user: alice, password: \"s3cr3t-pw\" }")?;
    let redis = Redis::start()?;
    dispatch_through(MeshConfig::new(&nats_url(&nats, "alice:s3cr3t-pw@"), &redis.url())).await?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth =
        NatsAuth { user: Some("alice".into()), password: Some(Secret::new("s3cr3t-pw")), ..Default::default() };
    dispatch_through(mesh).await?;

    let err = start_fails(MeshConfig::new(&nats_url(&nats, "alice:wr0ng-pw@"), &redis.url())).await;
    assert!(err.contains("refused this node's credentials"), "{err}");
    assert!(!err.contains("wr0ng-pw"), "the password is in the error: {err}");
    let err = start_fails(MeshConfig::new(&nats_url(&nats, ""), &redis.url())).await;
    assert!(err.contains("refused"), "{err}");
    Ok(())
}

#[tokio::test]
async fn nats_token() -> anyhow::Result<()> {
    let nats = Nats::start_with_config("authorization { token: \"t0k3n-v4lue\" }")?;
    let redis = Redis::start()?;
    dispatch_through(MeshConfig::new(&nats_url(&nats, "t0k3n-v4lue@"), &redis.url())).await?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.token = Some(Secret::new("t0k3n-v4lue"));
    dispatch_through(mesh).await?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.token = Some(Secret::new("n0t-the-t0ken"));
    let err = start_fails(mesh).await;
    assert!(err.contains("refused") && !err.contains("n0t-the-t0ken"), "{err}");
    Ok(())
}

#[tokio::test]
async fn nats_nkey_seed_file() -> anyhow::Result<()> {
    let user = nkeys::KeyPair::new_user();
    let nats = Nats::start_with_config(&format!("authorization {{ users = [ {{ nkey: {} }} ] }}", user.public_key()))?;
    let redis = Redis::start()?;
    let dir = tempfile::tempdir()?;
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed()?))?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.nkey = Some(seed);
    dispatch_through(mesh).await?;

    // Another user's seed is refused; a file without a seed is named.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed()?)?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.nkey = Some(stranger);
    assert!(start_fails(mesh).await.contains("refused"));
    let empty = dir.path().join("empty.nk");
    std::fs::write(&empty, "nothing here\n")?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.nkey = Some(empty);
    let err = start_fails(mesh).await;
    assert!(err.contains("empty.nk holds no user nkey seed"), "{err}");
    Ok(())
}

/// A JWT as NATS's decentralized authentication writes them: claims signed
/// with an ed25519 nkey.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> anyhow::Result<String> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("test-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": subject,
        "sub": subject,
        "nats": nats,
    });
    let body = b64(claims.to_string().as_bytes());
    let signature = issuer.sign(format!("{header}.{body}").as_bytes())?;
    Ok(format!("{header}.{body}.{}", b64(&signature)))
}

#[tokio::test]
async fn nats_credentials_file() -> anyhow::Result<()> {
    let (operator, account, user) =
        (nkeys::KeyPair::new_operator(), nkeys::KeyPair::new_account(), nkeys::KeyPair::new_user());
    let no_limit = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1});
    let operator_jwt = jwt(&operator, &operator.public_key(), serde_json::json!({"type": "operator", "version": 2}))?;
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"type": "account", "version": 2, "limits": no_limit}),
    )?;
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    )?;
    let nats = Nats::start_with_config(&format!(
        "operator: \"{operator_jwt}\"\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}\n",
        account.public_key()
    ))?;
    let redis = Redis::start()?;
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("node.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed()?
        ),
    )?;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.creds = Some(creds);
    dispatch_through(mesh).await?;
    // Without them, the server refuses.
    assert!(start_fails(MeshConfig::new(&nats_url(&nats, ""), &redis.url())).await.contains("refused"));
    Ok(())
}

/// A certificate authority with a server certificate for 127.0.0.1 and a
/// client certificate, as PEM files in a folder.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
        // Every certificate gets a name of its own: OpenSSL takes a leaf
        // with its issuer's name for a self-signed one.
        let named = |sans: Vec<String>, name: &str| -> anyhow::Result<CertificateParams> {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            Ok(params)
        };
        let mut ca_params = named(Vec::new(), "anocast test CA")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        write("ca.pem", ca.pem())?;
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
            ("client", vec!["anocast-node".to_owned()]),
        ] {
            let key = KeyPair::generate()?;
            let cert = named(sans, &format!("anocast test {name}"))?.signed_by(&key, &issuer)?;
            write(&format!("{name}.pem"), cert.pem())?;
            write(&format!("{name}.key"), key.serialize_pem())?;
        }
        // A second authority that signed nothing the servers use.
        let other_key = KeyPair::generate()?;
        let mut other = named(Vec::new(), "another CA")?;
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("other-ca.pem", other.self_signed(&other_key)?.pem())?;
        Ok(Pki { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, ca: &str) -> TlsFiles {
        TlsFiles { ca: Some(self.path(ca)), cert: Some(self.path("client.pem")), key: Some(self.path("client.key")) }
    }
}

#[tokio::test]
async fn nats_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let nats = Nats::start_with_config(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pki.path("ca.pem").display()
    ))?;
    let redis = Redis::start()?;
    let mut mesh = MeshConfig::new(&format!("tls://127.0.0.1:{}", nats.port()), &redis.url());
    mesh.nats_auth.tls = pki.client("ca.pem");
    dispatch_through(mesh).await?;

    // A server certificate from another authority, and no client
    // certificate, both fail.
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.tls = pki.client("other-ca.pem");
    start_fails(mesh).await;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.tls = TlsFiles { ca: Some(pki.path("ca.pem")), ..Default::default() };
    start_fails(mesh).await;
    let mut mesh = MeshConfig::new(&nats_url(&nats, ""), &redis.url());
    mesh.nats_auth.tls = TlsFiles { cert: Some(pki.path("client.pem")), ..Default::default() };
    let err = start_fails(mesh).await;
    assert!(err.contains("needs both --nats-tls-cert and --nats-tls-key"), "{err}");
    Ok(())
}

#[tokio::test]
async fn redis_password_and_acl_user() -> anyhow::Result<()> {
    let nats = Nats::start()?;
    // The default user has a password; `anocast` may touch only the keys
    // anocast writes, with the ACL docs/security.md recommends.
    let redis = Redis::start_with(|_, _| {
        ["--requirepass", "r3dis-pw", "--user", "anocast", "on", ">acl-pw", "~anocast:*", "+@all", "-@dangerous"]
            .map(str::to_owned)
            .to_vec()
    })?;
    let port = redis.port();
    dispatch_through(MeshConfig::new(&nats.url(), &format!("redis://:r3dis-pw@127.0.0.1:{port}"))).await?;
    dispatch_through(MeshConfig::new(&nats.url(), &format!("redis://anocast:acl-pw@127.0.0.1:{port}"))).await?;
    let mut mesh = MeshConfig::new(&nats.url(), &format!("redis://127.0.0.1:{port}"));
    mesh.redis_auth =
        RedisAuth { user: Some("anocast".into()), password: Some(Secret::new("acl-pw")), ..Default::default() };
    dispatch_through(mesh).await?;

    let err = start_fails(MeshConfig::new(&nats.url(), &format!("redis://anocast:b4d-pw@127.0.0.1:{port}"))).await;
    assert!(err.contains("cannot connect to Redis at redis://anocast:***@127.0.0.1"), "{err}");
    assert!(!err.contains("b4d-pw"), "the password is in the error: {err}");
    Ok(())
}

#[tokio::test]
async fn redis_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let nats = Nats::start()?;
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
    let redis = Redis::start_with(|port, _| {
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    })?;
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let mut mesh = MeshConfig::new(&nats.url(), &url);
    mesh.redis_auth.tls = pki.client("ca.pem");
    dispatch_through(mesh).await?;

    let mut mesh = MeshConfig::new(&nats.url(), &url);
    mesh.redis_auth.tls = pki.client("other-ca.pem");
    start_fails(mesh).await;
    let mut mesh = MeshConfig::new(&nats.url(), &format!("redis://127.0.0.1:{}", redis.port()));
    mesh.redis_auth.tls = pki.client("ca.pem");
    let err = start_fails(mesh).await;
    assert!(err.contains("need a rediss:// URL"), "{err}");
    Ok(())
}

/// Runs the CLI; returns its exit code and everything it printed.
fn cli(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let out = std::process::Command::new(EXE)
        .args(args)
        .envs(envs.iter().copied())
        .env("XDG_DATA_HOME", std::env::temp_dir().join("anocast-tests-data"))
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code(), text))
}

#[tokio::test]
async fn secrets_stay_out_of_errors_and_help() -> anyhow::Result<()> {
    let nats = Nats::start_with_config("authorization { user: alice, password: \"s3cr3t-pw\" }")?;
    let redis = Redis::start_with(|_, _| vec!["--requirepass".into(), "r3dis-pw".into()])?;
    let dir = PluginDir::with(&[])?;
    let data = tempfile::tempdir()?;
    let (plugins, data) = (dir.path().to_str().unwrap_or_default(), data.path().to_str().unwrap_or_default());
    let good_redis = format!("redis://:r3dis-pw@127.0.0.1:{}", redis.port());
    let serve = |nats: &str, redis: &str| -> Vec<String> {
        ["serve", "--plugins", plugins, "--data-dir", data, "--trust-mesh", "--http", "127.0.0.1:0", "--nats", nats]
            .into_iter()
            .map(str::to_owned)
            .chain(["--redis".to_owned(), redis.to_owned()])
            .collect()
    };
    // A wrong NATS password, in the URL and as a variable.
    let args = serve(&nats_url(&nats, "alice:WR0NG-nats-pw@"), &good_redis);
    let (code, text) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused this node's credentials"), "{text}");
    assert!(!text.contains("WR0NG-nats-pw") && !text.contains("r3dis-pw"), "a secret was printed: {text}");
    let args = serve(&nats_url(&nats, ""), &good_redis);
    let (code, text) = cli(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("ANOCAST_NATS_USER", "alice"), ("ANOCAST_NATS_PASSWORD", "WR0NG-env-pw")],
    )?;
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("WR0NG-env-pw") && !text.contains("r3dis-pw"), "a secret was printed: {text}");
    // A wrong Redis password.
    let args =
        serve(&nats_url(&nats, "alice:s3cr3t-pw@"), &format!("redis://:WR0NG-redis-pw@127.0.0.1:{}", redis.port()));
    let (code, text) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Redis at redis://:***@127.0.0.1"), "{text}");
    assert!(!text.contains("WR0NG-redis-pw") && !text.contains("s3cr3t-pw"), "a secret was printed: {text}");

    // --help names the variables but never shows their values.
    let envs = [
        ("ANOCAST_NATS", "nats://alice:HELP-nats-pw@127.0.0.1:1"),
        ("ANOCAST_REDIS", "redis://:HELP-redis-pw@127.0.0.1:1"),
        ("ANOCAST_NATS_PASSWORD", "HELP-password"),
        ("ANOCAST_NATS_TOKEN", "HELP-token"),
        ("ANOCAST_REDIS_PASSWORD", "HELP-redis-password"),
    ];
    for command in ["serve", "dispatch"] {
        let (code, text) = cli(&[command, "--help"], &envs)?;
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("ANOCAST_NATS_PASSWORD") && text.contains("--nats-creds"), "{text}");
        assert!(!text.contains("HELP-"), "`{command} --help` shows a secret: {text}");
    }
    Ok(())
}

#[test]
fn a_config_file_with_a_secret_must_be_owner_only() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "plugins = \"p\"\nnats = \"nats://127.0.0.1:1\"\nredis = \"redis://127.0.0.1:1\"\nnats_password = \"c0nfig-pw\"\n",
    )?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
    let path = config.to_str().unwrap_or_default();
    let (code, text) = cli(&["serve", "--config", path], &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("holds a password or token and others may read it (mode 644)"), "{text}");
    assert!(!text.contains("c0nfig-pw"), "{text}");
    // Owner-only, it gets past that check (to the next: the folder).
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let (code, text) = cli(&["serve", "--config", path], &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("others may read it") && !text.contains("c0nfig-pw"), "{text}");
    Ok(())
}

#[test]
fn keygen_writes_a_key_openssl_reads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("node.key");
    let key_arg = key.to_str().unwrap_or_default();
    let (code, text) = cli(&["keygen", "--out", key_arg, "--node-id", "node-a"], &[])?;
    assert_eq!(code, Some(0), "{text}");
    let public = text.lines().find(|l| l.starts_with("ed25519:")).unwrap_or_default().to_owned();
    assert!(public.ends_with(" node-a reply,dispatch"), "the line names the node and the roles: {text}");
    // OpenSSL reads the private key (PKCS#8 v1) and derives the same
    // public key.
    let out =
        std::process::Command::new("openssl").args(["pkey", "-in", key_arg, "-pubout", "-outform", "DER"]).output()?;
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let raw = &out.stdout[out.stdout.len() - 32..];
    assert_eq!(format!("ed25519:{} node-a reply,dispatch", hex::encode(raw)), public);
    Ok(())
}
