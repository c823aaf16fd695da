//! Test certificates from the `openssl` CLI (ECDSA P-256, valid two days): CAs, and the
//! server certificates they sign. Shared by the integration tests and (through `#[path]`)
//! the e2e suite.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run the openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Arguments of `openssl req` for a new P-256 key in `key`, without a passphrase.
fn new_key(key: &str) -> [&str; 8] {
    ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-batch"]
}

/// A self-signed CA `NAME.crt` / `NAME.key` in `dir` (created if missing). Its subject is
/// unique, so two CAs never pass for each other by name.
pub fn make_ca(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).expect("create the CA's directory");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let subj = format!("/CN=counterstack test {name} {nanos}");
    let mut args = vec!["req", "-x509"];
    args.extend(new_key(&key));
    args.extend(["-out", &crt, "-days", "2", "-subj", &subj]);
    openssl(dir, &args);
}

/// `NAME.crt` / `NAME.key` in `dir`, signed by the CA `CA.crt` there, naming `sans`
/// (`DNS:demo-redis-primary,IP:127.0.0.1`, ...), for server and client use (a replica
/// presents it to its primary).
pub fn make_server(dir: &Path, name: &str, ca: &str, sans: &str) {
    let (key, csr, crt, ext) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"),
    )
    .expect("write the certificate's extensions");
    let mut args = vec!["req"];
    args.extend(new_key(&key));
    args.extend(["-out", &csr, "-subj", "/CN=demo-redis"]);
    openssl(dir, &args);
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &ext,
        ],
    );
}
