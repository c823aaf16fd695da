//! A real S3-compatible server for the backup tests: moto's server mode (PyPI `moto`,
//! installed into the Python venv by scripts/setup.sh), one process per test on a free
//! loopback port, killed on drop.
//!
//! Credentials are really checked. moto authenticates requests only when
//! `INITIAL_NO_AUTH_ACTION_COUNT` is finite, and then only against IAM users it knows. So
//! the server starts with authentication off (the default), the setup creates an IAM user
//! with an inline `s3:*` policy and an access key for it, and the bucket, then switches
//! authentication on with `POST /moto-api/reset-auth` `0` (what moto's
//! `set_initial_no_auth_action_count` does in server mode): from then on every S3 request
//! must carry a valid SigV4 signature of that user's key (a wrong secret key gets
//! `403 SignatureDoesNotMatch`, an unknown key id `403 InvalidAccessKeyId`). The start
//! verifies that a badly signed request is refused before it hands out the server.
//!
//! The venv is `$VENV` (relative to the crate root; default `.venv`). When its
//! `moto_server` is missing the tests skip with a message, unless `COUNTERSTACK_REQUIRE_S3`
//! is set, in which case they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use counterstack::backup::store::S3Target;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::HttpRequestBody;

use super::redis_server::free_port;

/// The region moto and the tests use.
pub const REGION: &str = "us-east-1";

/// One moto server with authentication on, a bucket, and an IAM user allowed `s3:*`.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`, or `https://...` for [`S3Server::start_tls`].
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The CA that signed the server's certificate (TLS only).
    pub ca_pem: Option<Vec<u8>>,
    http: reqwest::Client,
    child: Child,
    dir: tempfile::TempDir,
}

/// `$VENV/bin/moto_server`.
pub fn moto_server_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".venv"));
    root.join(venv).join("bin").join("moto_server")
}

/// `None` (after saying why on stderr) when the tests should skip: no moto_server in the
/// venv and `COUNTERSTACK_REQUIRE_S3` unset.
fn moto_server_or_skip() -> Option<PathBuf> {
    let bin = moto_server_path();
    if bin.exists() {
        return Some(bin);
    }
    let msg = format!(
        "{} is missing: run scripts/setup.sh (it installs moto, the S3 server of the backup tests)",
        bin.display()
    );
    if std::env::var_os("COUNTERSTACK_REQUIRE_S3").is_some() {
        panic!("COUNTERSTACK_REQUIRE_S3 is set and {msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

impl S3Server {
    /// A plain-HTTP server (`None`: skipped, see the module docs).
    pub async fn start() -> Option<S3Server> {
        let bin = moto_server_or_skip()?;
        Some(Self::spawn(bin, false).await)
    }

    /// An HTTPS server whose certificate (for `IP:127.0.0.1`, `DNS:localhost`) a fresh
    /// private CA signed; [`S3Server::ca_pem`] holds that CA.
    pub async fn start_tls() -> Option<S3Server> {
        let bin = moto_server_or_skip()?;
        Some(Self::spawn(bin, true).await)
    }

    async fn spawn(bin: PathBuf, tls: bool) -> S3Server {
        let mut dir = tempfile::tempdir().expect("temp dir for moto");
        let ca_pem = tls.then(|| {
            super::pki::make_ca(dir.path(), "ca");
            super::pki::make_server(dir.path(), "tls", "ca", "IP:127.0.0.1,DNS:localhost");
            std::fs::read(dir.path().join("ca.crt")).expect("read the CA")
        });
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(pem) = &ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"));
        }
        let http = http.build().expect("reqwest client");
        // The port may be taken between free_port() and moto's bind: try a few.
        for attempt in 1..=3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log file");
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            if tls {
                cmd.arg("--ssl-cert").arg(dir.path().join("tls.crt"));
                cmd.arg("--ssl-key").arg(dir.path().join("tls.key"));
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let scheme = if tls { "https" } else { "http" };
            let mut server = S3Server {
                endpoint: format!("{scheme}://127.0.0.1:{port}"),
                bucket: "backups".to_string(),
                access_key_id: String::new(),
                secret_access_key: String::new(),
                ca_pem: ca_pem.clone(),
                http: http.clone(),
                child,
                dir,
            };
            if server.wait_ready(Duration::from_secs(20)).await {
                server.setup().await;
                return server;
            }
            assert!(attempt < 3, "moto_server never answered on port {port}:\n{}", server.log());
            // Keep the directory (CA, certificate) for the next attempt.
            let _ = server.child.kill();
            let _ = server.child.wait();
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
        }
        unreachable!()
    }

    /// Poll `/moto-api/` until it answers; false when the process died or time ran out.
    async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let url = format!("{}/moto-api/", self.endpoint);
            if let Ok(r) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// An `Authorization` header that only routes a request to a moto service while
    /// authentication is still off (moto picks the service from the credential scope).
    fn routing_auth(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=setup/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
        )
    }

    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
        form.extend_from_slice(params);
        let r = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Authorization", Self::routing_auth("iam"))
            .form(&form)
            .send()
            .await
            .expect("IAM request to moto");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "IAM {params:?}: {status}: {body}\n{}", self.log());
        body
    }

    /// The IAM user, its policy and access key, the bucket; then authentication on.
    async fn setup(&mut self) {
        self.iam(&[("Action", "CreateUser"), ("UserName", "backup")]).await;
        let policy =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", "backup"),
            ("PolicyName", "s3-all"),
            ("PolicyDocument", policy),
        ])
        .await;
        let key = self.iam(&[("Action", "CreateAccessKey"), ("UserName", "backup")]).await;
        self.access_key_id = xml_field(&key, "AccessKeyId").expect("AccessKeyId in CreateAccessKey");
        self.secret_access_key =
            xml_field(&key, "SecretAccessKey").expect("SecretAccessKey in CreateAccessKey");

        let r = self
            .http
            .put(format!("{}/{}", self.endpoint, self.bucket))
            .header("Authorization", Self::routing_auth("s3"))
            .send()
            .await
            .expect("CreateBucket");
        assert!(
            r.status().is_success(),
            "CreateBucket: {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );

        let r = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("Content-Type", "text/plain")
            .body("0")
            .send()
            .await
            .expect("reset-auth");
        let body = r.text().await.unwrap_or_default();
        assert!(body.contains("\"ok\""), "moto did not switch authentication on: {body}");

        // Proof that it is on: the right key id with a wrong signature is refused.
        let r = self
            .http
            .get(format!("{}/{}", self.endpoint, self.bucket))
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/20260101/{REGION}/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
                    self.access_key_id
                ),
            )
            .header("X-Amz-Date", "20260101T000000Z")
            .send()
            .await
            .expect("probe request");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(
            status == 403 && body.contains("SignatureDoesNotMatch"),
            "moto accepted a bad signature: authentication is off ({status}: {body})"
        );
    }

    /// The [`S3Target`] for this server's bucket with valid credentials.
    pub fn target(&self) -> S3Target {
        S3Target {
            endpoint: Some(self.endpoint.clone()),
            bucket: self.bucket.clone(),
            region: REGION.to_string(),
            force_path_style: true,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            ca_pem: self.ca_pem.clone(),
            allow_http: self.endpoint.starts_with("http://"),
        }
    }

    /// A request to this server's bucket signed with the valid key (`path_and_query`
    /// after `/BUCKET`, e.g. `?uploads`).
    async fn signed(&self, method: http::Method, path_and_query: &str) -> reqwest::Response {
        let url = format!("{}/{}{}", self.endpoint, self.bucket, path_and_query);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(HttpRequestBody::empty())
            .expect("request");
        let cred = AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&cred, "s3", REGION).authorize(&mut req, None);
        let mut r = self.http.request(method, &url);
        for (name, value) in req.headers() {
            r = r.header(name, value);
        }
        r.send().await.expect("signed request to moto")
    }

    /// The keys of multipart uploads started and neither completed nor aborted
    /// (ListMultipartUploads).
    pub async fn open_multipart_uploads(&self) -> Vec<String> {
        let r = self.signed(http::Method::GET, "?uploads").await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "ListMultipartUploads: {status}: {body}");
        body.split("<Upload>").skip(1).filter_map(|u| xml_field(u, "Key")).collect()
    }

    /// The object's ETag (HeadObject); a multipart object's ends with `-PARTS"`.
    pub async fn etag(&self, key: &str) -> String {
        let r = self.signed(http::Method::HEAD, &format!("/{key}")).await;
        assert!(r.status().is_success(), "HeadObject {key}: {}", r.status());
        r.headers().get("etag").expect("ETag header").to_str().expect("ETag text").to_string()
    }

    /// The server's output (requests and tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first `<TAG>...</TAG>`.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_string())
}
