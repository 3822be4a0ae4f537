//! TLS to the shared PostgreSQL with a private CA: a throwaway cluster started with `ssl=on` and a
//! server certificate signed by a CA made with the `openssl` CLI at test time. With
//! `sslrootcert=` naming that CA the store connects over TLS; with `sslmode=require` alone (the
//! public web roots) it is refused, and the error names neither the URL nor the password.

use crate::support::pg::{TestPostgres, PASSWORD};
use baton::secret::Secret;
use baton::store::postgres::PostgresBackend;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (it is part of the test dependencies)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`), written to `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=baton test CA"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
    request.extend(ec);
    request.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &request);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

#[test]
fn the_store_connects_over_tls_with_a_private_ca_and_is_refused_without_it() {
    let certs = tempfile::tempdir().unwrap();
    let Some(pg) = TestPostgres::start_with_or_skip(
        "the_store_connects_over_tls_with_a_private_ca_and_is_refused_without_it",
        |pg| {
            make_certificates(certs.path());
            let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
            let cert = pg.install_file("server.pem", &read("server.pem")).unwrap();
            let key = pg.install_file("server.key", &read("server.key")).unwrap();
            pg.set("ssl", "on");
            pg.set("ssl_cert_file", &cert.display().to_string());
            pg.set("ssl_key_file", &key.display().to_string());
            pg.stop().unwrap();
            pg.start_server().unwrap();
        },
    ) else {
        return;
    };
    let ca = certs.path().join("ca.pem");

    // With the CA: the store opens, over TLS (the server says so for its connection).
    let with_ca = format!("{}?sslmode=require&sslrootcert={}", pg.url(), ca.display());
    let store = PostgresBackend::open(&Secret::new(&with_ca), None)
        .unwrap_or_else(|e| panic!("the store did not open with the CA: {e}"));
    let over_tls = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name LIKE 'baton-store-%' AND s.ssl",
    );
    assert_ne!(over_tls, "0", "no store connection uses TLS");
    drop(store);

    // Without it (the public web roots only): refused, and the error keeps the secret.
    let without_ca = format!("{}?sslmode=require", pg.url());
    let Err(refused) = PostgresBackend::open(&Secret::new(&without_ca), None) else {
        panic!("the store opened without the CA");
    };
    let message = refused.to_string();
    assert!(
        message.to_lowercase().contains("certificate") || message.contains("TLS"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(!message.contains("postgres://"), "{message}");

    // A CA file that is not there is named in the error, the URL is not.
    let missing = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url(),
        certs.path().join("absent.pem").display()
    );
    let Err(absent) = PostgresBackend::open(&Secret::new(&missing), None) else {
        panic!("the store opened with an absent CA file");
    };
    let message = absent.to_string();
    assert!(message.contains("absent.pem"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}
